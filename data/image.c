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

int image_load(const char *path, Image *img, char *err, size_t errlen) {
    memset(img, 0, sizeof *img);
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return -1;
    }
    int w, h, c;
    uint8_t *pix = stbi_load_from_file(f, &w, &h, &c, 3);
    fclose(f);
    if (!pix) {
        snprintf(err, errlen, "%s: cannot decode image: %s", path, stbi_failure_reason());
        return -1;
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
