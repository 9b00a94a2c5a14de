// EXIF orientation of JPEG files; see exif.h.
#include "data/exif.h"

#include <string.h>

static unsigned be16(const uint8_t *p) { return (unsigned)p[0] << 8 | p[1]; }

// A TIFF integer of 2 or 4 bytes in the block's byte order.
static uint32_t tiff_u(const uint8_t *p, int bytes, int little) {
    uint32_t v = 0;
    for (int i = 0; i < bytes; i++) v |= (uint32_t)p[i] << (8 * (little ? i : bytes - 1 - i));
    return v;
}

// Tag 0x0112 of IFD0 in the TIFF block t[0..n) (after "Exif\0\0"); 1 when absent or malformed.
static int tiff_orientation(const uint8_t *t, size_t n) {
    if (n < 8) return 1;
    int little;
    if (t[0] == 'I' && t[1] == 'I') little = 1;
    else if (t[0] == 'M' && t[1] == 'M') little = 0;
    else return 1;
    if (tiff_u(t + 2, 2, little) != 42) return 1;
    uint32_t ifd = tiff_u(t + 4, 4, little);
    if (ifd > n || n - ifd < 2) return 1;
    uint32_t count = tiff_u(t + ifd, 2, little);
    for (uint32_t i = 0; i < count; i++) {
        size_t e = (size_t)ifd + 2 + (size_t)i * 12;
        if (e > n || n - e < 12) return 1;
        if (tiff_u(t + e, 2, little) != 0x0112) continue;
        // type SHORT (3), count 1: the value sits in the first two bytes of the value field
        if (tiff_u(t + e + 2, 2, little) != 3 || tiff_u(t + e + 4, 4, little) != 1) return 1;
        uint32_t v = tiff_u(t + e + 8, 2, little);
        return v >= 1 && v <= 8 ? (int)v : 1;
    }
    return 1;
}

int exif_jpeg_orientation(const uint8_t *buf, size_t n) {
    if (n < 4 || buf[0] != 0xFF || buf[1] != 0xD8) return 1;
    size_t p = 2;
    while (p + 4 <= n) {
        if (buf[p] != 0xFF) return 1;           // markers are contiguous before SOS
        uint8_t marker = buf[p + 1];
        if (marker == 0xFF) {                   // fill byte
            p++;
            continue;
        }
        if (marker == 0xDA || marker == 0xD9) return 1;   // start of scan / end of image: no EXIF before
        if (marker == 0x01 || (marker >= 0xD0 && marker <= 0xD7)) {   // standalone markers
            p += 2;
            continue;
        }
        size_t len = be16(buf + p + 2);         // includes its own two bytes
        if (len < 2 || len > n - p - 2) return 1;
        const uint8_t *seg = buf + p + 4;
        size_t seg_n = len - 2;
        if (marker == 0xE1 && seg_n >= 6 && !memcmp(seg, "Exif\0\0", 6)) return tiff_orientation(seg + 6, seg_n - 6);
        p += 2 + len;
    }
    return 1;
}

void exif_apply_orientation(int orientation, const void *in, int w, int h, int c, int elem, void *out, int *ow,
                            int *oh) {
    const int swap = orientation >= 5 && orientation <= 8;
    const int W = swap ? h : w, H = swap ? w : h;
    const size_t px = (size_t)c * elem;
    const uint8_t *src = in;
    uint8_t *dst = out;
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            int sx, sy;   // the stored pixel shown at (x, y)
            switch (orientation) {
            case 2: sx = w - 1 - x, sy = y; break;
            case 3: sx = w - 1 - x, sy = h - 1 - y; break;
            case 4: sx = x, sy = h - 1 - y; break;
            case 5: sx = y, sy = x; break;
            case 6: sx = y, sy = h - 1 - x; break;
            case 7: sx = w - 1 - y, sy = h - 1 - x; break;
            case 8: sx = w - 1 - y, sy = x; break;
            default: sx = x, sy = y; break;
            }
            memcpy(dst + ((size_t)y * W + x) * px, src + ((size_t)sy * w + sx) * px, px);
        }
    *ow = W;
    *oh = H;
}
