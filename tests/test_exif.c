// Photos in and out of dod-restore (data/photo.h, data/exif.h): the EXIF orientation parser on
// hand-built blocks of both byte orders and every truncation of one, in exact-size heap buffers so an
// address sanitizer build catches any read past them (fuzzed by tests/fuzz/fuzz_photo.c); orientation applied as PIL's
// ImageOps.exif_transpose does (fixtures by scripts/make_restore_photo_fixtures.py); 16-bit, grey, grey + alpha
// and RGBA inputs read exactly; alpha kept in PNG output and composited over white in JPEG; empty and
// undecodable files named.
#include "tests/check.h"

#include <stdint.h>

#include "data/exif.h"
#include "data/photo.h"

#define FIX DOD_SOURCE_DIR "/tests/fixtures/restore/"

// A JPEG prefix: SOI, an APP0, APP1 "Exif" with IFD0 = {a dummy tag, orientation}, then SOS. Returns its size.
static size_t make_jpeg(uint8_t *b, int orientation, int big_endian) {
    size_t n = 0;
    b[n++] = 0xFF, b[n++] = 0xD8;
    const uint8_t app0[] = {0xFF, 0xE0, 0x00, 0x06, 'J', 'F', 'I', 'F'};
    memcpy(b + n, app0, sizeof app0), n += sizeof app0;
    uint8_t t[64];
    size_t k = 0;
#define U16(v) (big_endian ? (t[k++] = (uint8_t)((v) >> 8), t[k++] = (uint8_t)(v)) : (t[k++] = (uint8_t)(v), t[k++] = (uint8_t)((v) >> 8)))
#define U32(v) (big_endian ? (U16((v) >> 16), U16((v) & 0xFFFF)) : (U16((v) & 0xFFFF), U16((v) >> 16)))
    t[k++] = big_endian ? 'M' : 'I', t[k++] = big_endian ? 'M' : 'I';
    U16(42), U32(8u), U16(2);
    U16(0x010F), U16(2), U32(4u), U32(0x41424300u);   // Make (ASCII), not ours
    U16(0x0112), U16(3), U32(1u), U16((unsigned)orientation), U16(0);
    U32(0u);
#undef U16
#undef U32
    size_t len = 2 + 6 + k;
    b[n++] = 0xFF, b[n++] = 0xE1, b[n++] = (uint8_t)(len >> 8), b[n++] = (uint8_t)len;
    memcpy(b + n, "Exif\0\0", 6), n += 6;
    memcpy(b + n, t, k), n += k;
    b[n++] = 0xFF, b[n++] = 0xDA, b[n++] = 0x00, b[n++] = 0x02;
    return n;
}

// The parser on an exact-size heap copy of b[0..n).
static int orient_of(const uint8_t *b, size_t n) {
    uint8_t *c = malloc(n ? n : 1);
    memcpy(c, b, n);
    int o = exif_jpeg_orientation(c, n);
    free(c);
    return o;
}

static void test_parser(void) {
    uint8_t b[256];
    for (int be = 0; be < 2; be++)
        for (int o = 1; o <= 8; o++) {
            size_t n = make_jpeg(b, o, be);
            CHECK(orient_of(b, n) == o, "orientation %d (%s-endian): got %d", o, be ? "big" : "little", orient_of(b, n));
        }
    size_t n = make_jpeg(b, 9, 0);
    CHECK(orient_of(b, n) == 1, "orientation 9 is not one: 1");
    n = make_jpeg(b, 6, 0);
    CHECK(orient_of(b, 3) == 1 && orient_of(b, 0) == 1, "a truncated SOI: 1");
    b[0] = 0x89;
    CHECK(orient_of(b, n) == 1, "not a JPEG: 1");
    // every truncation of a valid block: 1 or the orientation, never anything else
    n = make_jpeg(b, 6, 1);
    int bad = 0;
    for (size_t k = 0; k <= n; k++) {
        int o = orient_of(b, k);
        bad += o != 1 && o != 6;
    }
    CHECK(bad == 0, "%d truncations gave another orientation", bad);
}

// rot[x, y] of the upright image from the stored one, rotated 90 degrees clockwise (6) or counter-clockwise (8).
static void rotate(const Photo *in, int clockwise, float *out) {
    const int w = in->w, h = in->h;   // stored: w x h; upright: h x w
    for (int c = 0; c < 3; c++)
        for (int y = 0; y < w; y++)
            for (int x = 0; x < h; x++) {
                int sx = clockwise ? y : w - 1 - y, sy = clockwise ? h - 1 - x : x;
                out[((size_t)c * w + y) * h + x] = in->rgb[((size_t)c * h + sy) * w + sx];
            }
}

static void test_orientation(void) {
    char err[512];
    Photo p1, p6, p8, ref;
    CHECK(photo_load(FIX "exif1.jpg", &p1, err, sizeof err) == 0, "%s", err);
    CHECK(photo_load(FIX "exif6.jpg", &p6, err, sizeof err) == 0, "%s", err);
    CHECK(photo_load(FIX "exif8_be.jpg", &p8, err, sizeof err) == 0, "%s", err);
    CHECK(photo_load(FIX "exif6_upright.png", &ref, err, sizeof err) == 0, "%s", err);
    CHECK(p1.w == 64 && p1.h == 48 && p1.orientation == 1, "exif1: %dx%d, orientation %d", p1.w, p1.h, p1.orientation);
    CHECK(p6.w == 48 && p6.h == 64 && p6.orientation == 6, "exif6: %dx%d upright, orientation %d", p6.w, p6.h, p6.orientation);
    CHECK(p8.w == 48 && p8.h == 64 && p8.orientation == 8, "exif8: %dx%d upright, orientation %d", p8.w, p8.h, p8.orientation);
    const size_t n = (size_t)3 * 48 * 64;
    float *r = malloc(sizeof(float) * n);
    rotate(&p1, 1, r);
    CHECK(memcmp(r, p6.rgb, sizeof(float) * n) == 0, "orientation 6 = the stored pixels rotated clockwise");
    rotate(&p1, 0, r);
    CHECK(memcmp(r, p8.rgb, sizeof(float) * n) == 0, "orientation 8 = the stored pixels rotated counter-clockwise");
    // PIL's exif_transpose of the same file: the same pixels up to the two JPEG decoders' rounding
    double sum = 0, mx = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)p6.rgb[i] - ref.rgb[i]);
        sum += d;
        mx = d > mx ? d : mx;
    }
    printf("exif6.jpg vs PIL exif_transpose: mean |diff| %.4f, max %.4f (levels of 1/127.5)\n", sum / n * 127.5, mx * 127.5);
    CHECK(sum / n * 127.5 < 1.0 && mx * 127.5 <= 8, "exif6 vs PIL: mean %.3f, max %.1f levels", sum / n * 127.5, mx * 127.5);
    free(r);
    photo_free(&p1), photo_free(&p6), photo_free(&p8), photo_free(&ref);
}

static void test_formats(void) {
    char err[512];
    Photo p;
    CHECK(photo_load(FIX "grey16.png", &p, err, sizeof err) == 0, "%s", err);
    CHECK(p.w == 40 && p.h == 30 && p.channels == 1 && p.bits == 16 && !p.alpha, "grey16: %dx%d, %d channels, %d bits",
          p.w, p.h, p.channels, p.bits);
    int bad = 0;
    for (int y = 0; y < 30; y++)
        for (int x = 0; x < 40; x++)
            for (int c = 0; c < 3; c++)
                bad += p.rgb[((size_t)c * 30 + y) * 40 + x] != (float)((x * 1601 + y * 2203) % 65536) / 32767.5f - 1.0f;
    CHECK(bad == 0, "grey16: %d values differ from v / 32767.5 - 1 (all 16 bits in)", bad);
    photo_free(&p);
    CHECK(photo_load(FIX "rgba.png", &p, err, sizeof err) == 0, "%s", err);
    CHECK(p.channels == 4 && p.bits == 8 && p.alpha, "rgba: %d channels", p.channels);
    bad = 0;
    for (int y = 0; y < 28; y++)
        for (int x = 0; x < 36; x++) {
            size_t i = (size_t)y * 36 + x, pl = 36 * 28;
            bad += p.rgb[i] != (float)(7 * x) / 127.5f - 1.0f || p.rgb[pl + i] != (float)(5 * y) / 127.5f - 1.0f ||
                   p.rgb[2 * pl + i] != (float)((x + y) * 3) / 127.5f - 1.0f ||
                   p.alpha[i] != (float)((x * 7 + y * 5) % 256) / 255.0f;
        }
    CHECK(bad == 0, "rgba: %d pixels differ", bad);
    // alpha through a PNG, composited over white into a JPEG
    char path[256];
    snprintf(path, sizeof path, "/tmp/dod_test_exif_%d.png", (int)getpid());
    CHECK(photo_save(path, p.rgb, p.alpha, p.w, p.h, false, PHOTO_PNG, 95, err, sizeof err) == 0, "%s", err);
    Photo q;
    CHECK(photo_load(path, &q, err, sizeof err) == 0, "%s", err);
    CHECK(q.channels == 4 && memcmp(q.alpha, p.alpha, sizeof(float) * 36 * 28) == 0 &&
              memcmp(q.rgb, p.rgb, sizeof(float) * 3 * 36 * 28) == 0, "RGBA PNG round trip is exact");
    photo_free(&q);
    unlink(path);
    snprintf(path, sizeof path, "/tmp/dod_test_exif_%d.jpg", (int)getpid());
    for (size_t i = 0; i < 36 * 28; i++) p.alpha[i] = 0.0f;   // fully transparent: white in a JPEG
    CHECK(photo_save(path, p.rgb, p.alpha, p.w, p.h, false, PHOTO_JPEG, 95, err, sizeof err) == 0, "%s", err);
    CHECK(photo_load(path, &q, err, sizeof err) == 0, "%s", err);
    double mn = 1;
    for (size_t i = 0; i < 3 * 36 * 28; i++) mn = q.rgb[i] < mn ? q.rgb[i] : mn;
    CHECK(q.channels == 3 && !q.alpha && mn > 0.95, "JPEG: transparent pixels over white (min %.3f)", mn);
    photo_free(&q);
    unlink(path);
    photo_free(&p);
    CHECK(photo_load(FIX "grey_alpha.png", &p, err, sizeof err) == 0, "%s", err);
    CHECK(p.channels == 2 && p.alpha && p.alpha[19 * 1 + 20 * 15] == (float)(255 - 15 * 15) / 255.0f, "grey + alpha");
    snprintf(path, sizeof path, "/tmp/dod_test_exif_%d.png", (int)getpid());
    CHECK(photo_save(path, p.rgb, p.alpha, p.w, p.h, true, PHOTO_PNG, 95, err, sizeof err) == 0, "%s", err);
    CHECK(photo_load(path, &q, err, sizeof err) == 0 && q.channels == 2 && memcmp(q.rgb, p.rgb, sizeof(float) * 3 * 320) == 0,
          "grey + alpha round trip");
    photo_free(&q);
    unlink(path);
    photo_free(&p);
    // bad files, named
    snprintf(path, sizeof path, "/tmp/dod_test_exif_%d_empty.png", (int)getpid());
    fclose(fopen(path, "wb"));
    CHECK(photo_load(path, &p, err, sizeof err) != 0 && strstr(err, "empty file") && strstr(err, path), "empty: %s", err);
    FILE *f = fopen(path, "wb");
    fputs("not an image at all", f);
    fclose(f);
    CHECK(photo_load(path, &p, err, sizeof err) != 0 && strstr(err, "cannot decode") && strstr(err, path), "junk: %s", err);
    unlink(path);
    CHECK(photo_load("/nonexistent/x.png", &p, err, sizeof err) != 0 && strstr(err, "/nonexistent/x.png"), "missing: %s", err);
}

int main(void) {
    test_parser();
    test_orientation();
    test_formats();
    return check_summary();
}
