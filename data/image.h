// 8-bit RGB images on disk: PNG, JPEG, BMP (and whatever else stb_image reads) in, PNG out.
#pragma once
#include <stddef.h>
#include <stdint.h>

typedef struct {
    int w, h, c;     // c == 3 for everything image_load returns
    uint8_t *pix;    // h * w * c bytes, row-major HWC (heap; image_free releases)
} Image;

// Load any stb_image format as RGB (grey and RGBA are converted). The dimensions in the file's
// header are checked against the image caps (autograd/base.h) before decoding. Returns 0, or -1
// with a message naming the file and the decoder's reason (or the cap) in err.
int image_load(const char *path, Image *img, char *err, size_t errlen);
// Allocate a w x h x c image (zeroed). Exits with an out-of-memory message on failure.
Image image_alloc(int w, int h, int c);
void image_free(Image *img);
// Write PNG atomically (path.tmp.<pid>, then rename). Returns 0, or -1 with a message in err.
int image_save_png(const char *path, const Image *img, char *err, size_t errlen);
// Bilinear resize (stb_image_resize, sRGB-agnostic linear filter) into a new image.
Image image_resize(const Image *src, int w, int h);
