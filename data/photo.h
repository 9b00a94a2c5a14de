// Photos in and out of dod-restore: any stb_image format at 8 or 16 bits per channel, grey, grey +
// alpha, RGB or RGBA, JPEG EXIF orientation applied; PNG or JPEG out. (data/image.h is the 8-bit RGB
// image type of datasets and metrics; this is the user-facing side.)
//
// Decisions (docs/restore.md, "Inputs and outputs"):
//   - pixels become floats in [-1, 1], the model's scale, at the file's precision: v / 127.5 - 1 for 8
//     bits (the formula of eval/restore.h, so a PNG restores exactly as the same pixels from a dataset
//     do), v / 32767.5 - 1 for 16 bits (which keep their precision into the model);
//   - grey images are restored as RGB with three equal channels and written back as grey (BT.601 luma
//     of the restored RGB); colour images are written as RGB;
//   - alpha never enters the model: it is carried through unchanged to a PNG (RGBA / grey + alpha),
//     and a JPEG (which has none) gets the restored colours composited over white with it;
//   - output is 8 bits per channel (stb_image_write writes no 16-bit PNG);
//   - a JPEG's EXIF orientation is applied on reading (data/exif.h), so the output is upright and
//     carries no orientation tag.
#pragma once
#include <stdbool.h>
#include <stddef.h>

typedef struct {
    int w, h;          // after the EXIF orientation
    int channels;      // in the file: 1 grey, 2 grey + alpha, 3 RGB, 4 RGBA
    int bits;          // 8 or 16 per channel in the file
    int orientation;   // the EXIF orientation applied (1: none)
    float *rgb;        // 3 x h x w planar, [-1, 1] (heap)
    float *alpha;      // h x w, [0, 1], or NULL
} Photo;

typedef enum { PHOTO_PNG = 0, PHOTO_JPEG = 1 } PhotoFormat;

// Reads path (=). 0, or -1 with a message naming the file: cannot open, empty, not an image stb_image
// decodes (its reason), zero-sized.
int photo_load(const char *path, Photo *p, char *err, size_t errlen);
void photo_free(Photo *p);
// Writes rgb (3 x h x w planar, [-1, 1]) with alpha (h x w in [0, 1], or NULL) as `format` to path,
// atomically (temp file + rename): grey (grey = true) or RGB, alpha as above, JPEG at quality 1..100.
// Values become 8 bits as dod-eval's PNGs do: u = (x + 1) / 2 clamped to [0, 1], round half to even of
// u * 255 in float32. 0, or -1 naming the file.
int photo_save(const char *path, const float *rgb, const float *alpha, int w, int h, bool grey, PhotoFormat format,
               int quality, char *err, size_t errlen);
// "png" / "jpg" or "jpeg" (case-insensitive) -> the format; -1 otherwise.
int photo_format_parse(const char *s);
const char *photo_format_ext(PhotoFormat f);
