// Photos for dod-restore; see photo.h. Uses stb_image / stb_image_write, whose implementations are
// compiled in data/image.c (only their declarations are included here).
#include "data/photo.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-parameter"
#pragma GCC diagnostic ignored "-Wsign-compare"
#include <stb_image.h>
#include <stb_image_write.h>
#pragma GCC diagnostic pop

#include "autograd/base.h"
#include "data/exif.h"
#include "data/image.h"

int photo_load(const char *path, Photo *p, char *err, size_t errlen) {
    memset(p, 0, sizeof *p);
    ImageFile file;   // read whole and checked against the caps and stb_image's known faults (data/image.h)
    if (image_file_read(path, &file, err, errlen)) return -1;
    const int orientation = exif_jpeg_orientation(file.bytes, file.n), is16 = file.is16;
    int w = 0, h = 0, c = 0;
    void *pix = is16 ? (void *)stbi_load_16_from_memory(file.bytes, (int)file.n, &w, &h, &c, 0)
                     : (void *)stbi_load_from_memory(file.bytes, (int)file.n, &w, &h, &c, 0);
    const int iw = file.w, ih = file.h;
    image_file_free(&file);
    if (!pix) {
        snprintf(err, errlen, "%s: cannot decode image: %s", path, stbi_failure_reason());
        return -1;
    }
    if (w != iw || h != ih || w <= 0 || h <= 0 || c < 1 || c > 4) {   // not expected from stb
        snprintf(err, errlen, "%s: header says %dx%d but decodes to %dx%d (WxH) with %d channels", path, iw, ih, w, h, c);
        stbi_image_free(pix);
        return -1;
    }
    const int elem = is16 ? 2 : 1;
    void *upright = pix;
    int W = w, H = h;
    if (orientation != 1) {
        upright = dod_malloc((size_t)w * h * c * elem, "oriented image");
        exif_apply_orientation(orientation, pix, w, h, c, elem, upright, &W, &H);
    }
    p->w = W;
    p->h = H;
    p->channels = c;
    p->bits = 8 * elem;
    p->orientation = orientation;
    const size_t plane = (size_t)W * H;
    p->rgb = dod_malloc(sizeof(float) * 3 * plane, "image");
    p->alpha = (c == 2 || c == 4) ? dod_malloc(sizeof(float) * plane, "image alpha") : NULL;
    const float half = is16 ? 32767.5f : 127.5f;
    const int colour = c >= 3;
    for (size_t i = 0; i < plane; i++) {
        float v[4];
        for (int k = 0; k < c; k++)
            v[k] = (float)(is16 ? ((const uint16_t *)upright)[i * c + k] : ((const uint8_t *)upright)[i * c + k]);
        for (int k = 0; k < 3; k++) p->rgb[k * plane + i] = (colour ? v[k] : v[0]) / half - 1.0f;
        if (p->alpha) p->alpha[i] = v[c - 1] / (2.0f * half);
    }
    if (upright != pix) free(upright);
    stbi_image_free(pix);
    return 0;
}

void photo_free(Photo *p) {
    free(p->rgb);
    free(p->alpha);
    memset(p, 0, sizeof *p);
}

// [0, 1] -> 8 bits, round half to even in float32 (eval/restore.h restore_unit_to_image's quantisation).
static uint8_t to_u8(float v) {
    v = v < 0.0f ? 0.0f : (v > 1.0f ? 1.0f : v);
    return (uint8_t)nearbyintf(v * 255.0f);
}

int photo_save(const char *path, const float *rgb, const float *alpha, int w, int h, bool grey, PhotoFormat format,
               int quality, char *err, size_t errlen) {
    const size_t plane = (size_t)w * h;
    const bool keep_alpha = alpha && format == PHOTO_PNG;
    const int c = (grey ? 1 : 3) + (keep_alpha ? 1 : 0);
    uint8_t *pix = dod_malloc(plane * (size_t)c, "output image");
    for (size_t i = 0; i < plane; i++) {
        float r = (rgb[i] + 1.0f) * 0.5f, g = (rgb[plane + i] + 1.0f) * 0.5f, b = (rgb[2 * plane + i] + 1.0f) * 0.5f;
        if (alpha && !keep_alpha) {   // JPEG: over white
            const float a = alpha[i] < 0.0f ? 0.0f : (alpha[i] > 1.0f ? 1.0f : alpha[i]);
            r = r * a + (1.0f - a), g = g * a + (1.0f - a), b = b * a + (1.0f - a);
        }
        uint8_t *o = pix + i * (size_t)c;
        if (grey) {
            o[0] = to_u8(0.299f * r + 0.587f * g + 0.114f * b);
        } else {
            o[0] = to_u8(r), o[1] = to_u8(g), o[2] = to_u8(b);
        }
        if (keep_alpha) o[c - 1] = to_u8(alpha[i]);
    }
    char tmp[4096];
    if (fs_temp_path(path, tmp, sizeof tmp)) {
        snprintf(err, errlen, "%.3000s: cannot write: path too long", path);
        free(pix);
        return -1;
    }
    errno = 0;
    int ok = format == PHOTO_JPEG ? stbi_write_jpg(tmp, w, h, c, pix, quality) : stbi_write_png(tmp, w, h, c, pix, w * c);
    free(pix);
    if (!ok) {
        snprintf(err, errlen, "%s: cannot write %s (via %s): %s", path, format == PHOTO_JPEG ? "JPEG" : "PNG", tmp,
                 errno ? strerror(errno) : "stb_image_write failed");
        unlink(tmp);
        return -1;
    }
    return fs_commit_temp(tmp, path, err, errlen);
}

int photo_format_parse(const char *s) {
    if (!strcasecmp(s, "png")) return PHOTO_PNG;
    if (!strcasecmp(s, "jpg") || !strcasecmp(s, "jpeg")) return PHOTO_JPEG;
    return -1;
}

const char *photo_format_ext(PhotoFormat f) { return f == PHOTO_JPEG ? "jpg" : "png"; }
