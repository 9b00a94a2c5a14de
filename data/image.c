// Image I/O through stb_image / stb_image_write (Debian libstb-dev). The stb implementations are
// compiled here and only here.
#include "data/image.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-parameter"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wunused-function"
#define STB_IMAGE_IMPLEMENTATION
#include <stb_image.h>
#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb_image_write.h>
#define STB_IMAGE_RESIZE_IMPLEMENTATION
#include <stb_image_resize.h>
#pragma GCC diagnostic pop

#include "autograd/base.h"

// JPEG Huffman tables (DHT segments) whose 16 code counts add up to more than 256 symbols: the
// stb_image of Debian 12 (v2.27) copies that many values into a 256-entry table (heap corruption;
// stb 2.28 refuses them). Walks the marker segments as the decoder does (lengths, entropy-coded
// data up to the next marker, zeros past the end of the file) and checks every table of every DHT.
// 0 when fine (or not a JPEG), -1 with why.
static int check_jpeg_tables(const uint8_t *p, size_t n, char *why, size_t len) {
    size_t i = 0;   // the start of image: 0xFF, any 0xFF fill bytes, 0xD8 (as the decoder reads markers)
    while (i < n && p[i] == 0xFF) i++;
    if (i == 0 || i >= n || p[i] != 0xD8) return 0;
    i++;
    while (i + 4 <= n) {
        if (p[i] != 0xFF || p[i + 1] == 0xFF || p[i + 1] == 0x00 || p[i + 1] == 0x01 || p[i + 1] == 0xD8 ||
            (p[i + 1] >= 0xD0 && p[i + 1] <= 0xD7)) {
            i++;   // entropy-coded bytes, fill, stuffing, restart markers: not a segment
            continue;
        }
        if (p[i + 1] == 0xD9) break;   // end of image
        size_t seg = ((size_t)p[i + 2] << 8) | p[i + 3], end = i + 2 + seg;
        if (p[i + 1] == 0xC4)   // the decoder reads past the file's end as zeros: so does this
            for (size_t t = i + 4; t < end && t < n;) {
                size_t symbols = 0;
                for (size_t k = 1; k <= 16; k++) symbols += t + k < n ? p[t + k] : 0;
                if (symbols > 256) {
                    snprintf(why, len, "corrupt JPEG: a Huffman table declares %zu symbols (at most 256)", symbols);
                    return -1;
                }
                t += 17 + symbols;
            }
        i += 2 + (seg < 2 ? 2 : seg);
    }
    return 0;
}

static uint32_t le32(const uint8_t *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24; }
static uint32_t be32(const uint8_t *p) { return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3]; }

// PNG chunks that declare more data than the file holds: stb_image sizes its compressed-data buffer
// from an IDAT chunk's declared length (up to 2^30, doubled as chunks accumulate) before it reads
// the data, so a few bytes could make it allocate 2 GiB (found by fuzz_photo). Walks the chunks up
// to IEND (4-byte big-endian length, type, data, CRC) and refuses the first chunk whose data would
// run past the file's end (the decoder refuses those files too, but only after allocating); a chunk
// header cut short is left to the decoder. 0 when fine (or not a PNG), -1 with why.
static int check_png_chunks(const uint8_t *p, size_t n, char *why, size_t len) {
    static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', 0x0d, 0x0a, 0x1a, 0x0a};
    if (n < 8 || memcmp(p, sig, 8)) return 0;
    for (size_t i = 8; i + 8 <= n;) {
        const size_t length = be32(p + i);
        if (length > n - (i + 8)) {
            char type[5] = {0};   // printable for the message
            for (int k = 0; k < 4; k++) {
                const uint8_t b = p[i + 4 + k];
                type[k] = b >= 0x20 && b < 0x7f ? (char)b : '?';
            }
            snprintf(why, len,
                     "truncated or corrupt PNG: chunk '%s' at byte %zu declares %zu bytes, the file has %zu after it",
                     type, i, length, n - (i + 8));
            return -1;
        }
        if (!memcmp(p + i + 4, "IEND", 4)) break;
        i += 12 + length;
    }
    return 0;
}

// Binary PNM headers (P5, P6) with a number of more than 9 digits: stb_image 2.27 accumulates them
// in an int, overflowing (undefined behaviour) into an arbitrary size. Reads the three numbers as
// the decoder does (whitespace and # comments between them) and writes (=) *header the bytes
// before the pixels. 0 when fine (or not PNM), -1 with why.
static int check_pnm_header(const uint8_t *p, size_t n, size_t *header, char *why, size_t len) {
    *header = 0;
    if (n < 2 || p[0] != 'P' || (p[1] != '5' && p[1] != '6')) return 0;
    size_t i = 2;
    for (int number = 0; number < 3; number++) {
        for (;;) {   // whitespace and comments up to the number
            while (i < n && (p[i] == ' ' || (p[i] >= '\t' && p[i] <= '\r'))) i++;
            if (i < n && p[i] == '#') {
                while (i < n && p[i] != '\n' && p[i] != '\r') i++;
                continue;
            }
            break;
        }
        size_t digits = 0;
        while (i < n && p[i] >= '0' && p[i] <= '9') i++, digits++;
        if (digits > 9) {
            snprintf(why, len, "corrupt PNM header: a number of %zu digits", digits);
            return -1;
        }
    }
    *header = i + 1;   // one whitespace byte ends the header
    return 0;
}

// Uncompressed formats that stb_image decodes even when the file ends early (the missing pixels
// read as zeros, with no error; with 16-bit PNM its conversion then reads past its buffer): binary
// PNM, BMP without compression and uncompressed TGA. The file size these need for the w x h pixels
// their header declares, after the header (pnm_header: its length); 0 for other formats (their
// decoders fail on truncated data).
static uint64_t uncompressed_bytes_needed(const uint8_t *p, size_t n, int w, int h, int comp, int is16,
                                          size_t pnm_header) {
    uint64_t px = (uint64_t)w * (uint64_t)h;
    if (n >= 2 && p[0] == 'P' && (p[1] == '5' || p[1] == '6'))
        return pnm_header + px * (uint64_t)comp * (is16 ? 2u : 1u);
    if (n >= 34 && p[0] == 'B' && p[1] == 'M') {
        unsigned bpp = (unsigned)p[28] | (unsigned)p[29] << 8;
        if (le32(p + 30) != 0 || bpp == 0) return 0;
        return (uint64_t)le32(p + 10) + ((uint64_t)bpp * (uint64_t)w + 31) / 32 * 4 * (uint64_t)h;
    }
    if (n >= 18 && (p[2] == 1 || p[2] == 2 || p[2] == 3) && p[1] <= 1) {
        uint64_t colormap = p[1] ? ((uint64_t)p[5] | (uint64_t)p[6] << 8) * (uint64_t)((p[7] + 7) / 8) : 0;
        return 18 + (uint64_t)p[0] + colormap + px * (uint64_t)((p[16] + 7) / 8);
    }
    return 0;
}

int image_file_read(const char *path, ImageFile *f, char *err, size_t errlen) {
    memset(f, 0, sizeof *f);
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return -1;
    }
    // The whole file in memory (checked before stb sees it); an image file is a few MiB.
    char why[256];
    long size = fseek(fp, 0, SEEK_END) == 0 ? ftell(fp) : -1;
    if (size < 0 || dod_limit_check_alloc((uint64_t)size, "reading the image file", why, sizeof why)) {
        snprintf(err, errlen, "%s: %s", path, size < 0 ? "cannot read (not a regular file?)" : why);
        fclose(fp);
        return -1;
    }
    if (size == 0) {
        snprintf(err, errlen, "%s: empty file (0 bytes)", path);
        fclose(fp);
        return -1;
    }
    rewind(fp);
    uint8_t *bytes = dod_malloc((size_t)size, path);
    size_t got = fread(bytes, 1, (size_t)size, fp);
    fclose(fp);
    size_t pnm_header = 0;
    if (got != (size_t)size || size > INT32_MAX || check_jpeg_tables(bytes, got, why, sizeof why) ||
        check_png_chunks(bytes, got, why, sizeof why) ||
        check_pnm_header(bytes, got, &pnm_header, why, sizeof why)) {
        snprintf(err, errlen, "%s: %s", path, got != (size_t)size ? "read error" : size > INT32_MAX ? "larger than 2 GiB" : why);
        free(bytes);
        return -1;
    }
    // The header's dimensions are checked against the caps before anything is decoded: a few
    // hundred bytes can declare millions of rows that the decoder would allocate and fill.
    int iw, ih, c;
    if (!stbi_info_from_memory(bytes, (int)got, &iw, &ih, &c)) {
        snprintf(err, errlen, "%s: cannot decode image: %s", path, stbi_failure_reason());
        free(bytes);
        return -1;
    }
    if (dod_limit_check_image(ih, iw, why, sizeof why)) {
        snprintf(err, errlen, "%s: %s", path, why);
        free(bytes);
        return -1;
    }
    int is16 = stbi_is_16_bit_from_memory(bytes, (int)got);
    uint64_t need = uncompressed_bytes_needed(bytes, got, iw, ih, c, is16, pnm_header);
    if (need > got) {
        snprintf(err, errlen, "%s: truncated: %dx%d (WxH) pixels need %llu bytes, the file has %zu", path, iw, ih,
                 (unsigned long long)need, got);
        free(bytes);
        return -1;
    }
    *f = (ImageFile){.bytes = bytes, .n = got, .w = iw, .h = ih, .c = c, .is16 = is16, .pnm = pnm_header != 0};
    return 0;
}

void image_file_free(ImageFile *f) {
    free(f->bytes);
    memset(f, 0, sizeof *f);
}

int image_load(const char *path, Image *img, char *err, size_t errlen) {
    memset(img, 0, sizeof *img);
    ImageFile file;
    if (image_file_read(path, &file, err, errlen)) return -1;
    // A 16-bit PNM with another channel count than asked for goes through stb 2.27's 8-bit channel
    // converter and then its 16-to-8 one, which reads twice the buffer: ask for its own channels.
    int want = file.pnm && file.is16 ? 0 : 3, got_c = 0, w, h, iw = file.w, ih = file.h;
    uint8_t *pix = stbi_load_from_memory(file.bytes, (int)file.n, &w, &h, &got_c, want);
    image_file_free(&file);
    if (!pix) {
        snprintf(err, errlen, "%s: cannot decode image: %s", path, stbi_failure_reason());
        return -1;
    }
    if (w != iw || h != ih || (want == 0 && got_c != 1 && got_c != 3)) {   // not expected from stb
        snprintf(err, errlen, "%s: header says %dx%d but decodes to %dx%d (WxH), %d channels", path, iw, ih, w, h,
                 want ? 3 : got_c);
        stbi_image_free(pix);
        return -1;
    }
    if (want == 0 && got_c == 1) {   // grey to RGB
        uint8_t *rgb = dod_malloc((size_t)w * h * 3, path);
        for (size_t k = 0; k < (size_t)w * h; k++) rgb[3 * k] = rgb[3 * k + 1] = rgb[3 * k + 2] = pix[k];
        stbi_image_free(pix);
        pix = rgb;
    }
    img->w = w;
    img->h = h;
    img->c = 3;
    img->pix = pix;  // stb uses malloc (STBI_MALLOC default), so free() releases it
    return 0;
}

Image image_alloc(int w, int h, int c) {
    Image img = {w, h, c, dod_calloc((size_t)w * h * c, "image")};
    return img;
}

void image_free(Image *img) {
    free(img->pix);
    img->pix = NULL;
    img->w = img->h = img->c = 0;
}

int image_save_png(const char *path, const Image *img, char *err, size_t errlen) {
    char tmp[4096];
    if (fs_temp_path(path, tmp, sizeof tmp)) {
        snprintf(err, errlen, "%.3000s: cannot write PNG: path too long", path);
        return -1;
    }
    if (!stbi_write_png(tmp, img->w, img->h, img->c, img->pix, img->w * img->c)) {
        snprintf(err, errlen, "%s: cannot write PNG (via %s)", path, tmp);
        unlink(tmp);
        return -1;
    }
    return fs_commit_temp(tmp, path, err, errlen);
}

Image image_resize(const Image *src, int w, int h) {
    Image dst = image_alloc(w, h, src->c);
    stbir_resize_uint8(src->pix, src->w, src->h, 0, dst.pix, w, h, 0, src->c);
    return dst;
}
