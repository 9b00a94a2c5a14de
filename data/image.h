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
// An image file read whole and checked before any decoding (image_load's first half; data/photo.c's
// too): not empty, within DOD_MAX_ALLOC_MIB, the header's w x h within the image caps
// (autograd/base.h), not truncated (uncompressed formats), and free of the malformed JPEG Huffman
// tables and PNM numbers that overflow Debian's stb_image 2.27.
typedef struct {
    uint8_t *bytes;   // the file (heap; image_file_free releases it)
    size_t n;
    int w, h, c;      // from the header: width, height, channels in the file
    int is16;         // 16 bits per channel
    int pnm;          // a binary PNM (P5 / P6)
} ImageFile;
// Reads and checks path (=). 0, or -1 with a message naming the file and what is wrong.
int image_file_read(const char *path, ImageFile *f, char *err, size_t errlen);
void image_file_free(ImageFile *f);
// Allocate a w x h x c image (zeroed). Exits with an out-of-memory message on failure.
Image image_alloc(int w, int h, int c);
void image_free(Image *img);
// Write PNG atomically (path.tmp.<pid>, then rename). Returns 0, or -1 with a message in err.
int image_save_png(const char *path, const Image *img, char *err, size_t errlen);
// Bilinear resize (stb_image_resize, sRGB-agnostic linear filter) into a new image.
Image image_resize(const Image *src, int w, int h);
