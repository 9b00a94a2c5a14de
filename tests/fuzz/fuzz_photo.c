// Fuzz target: photos as dod-restore reads them (data/photo.h: 8/16-bit, grey, alpha, through the
// checked read of data/image.h) and the JPEG EXIF orientation parser (data/exif.h) on the raw bytes
// (libFuzzer's buffer is exactly the input, so a read past it is caught under ASan). A photo that
// loads is within the image caps with values in [-1, 1]; the orientation is always 1..8.
#include <stdlib.h>

#include "autograd/base.h"
#include "data/exif.h"
#include "data/photo.h"
#include "tests/fuzz/fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    setenv("DOD_MAX_IMAGE_PIXELS", "4194304", 0);   // as fuzz_image.c: short runs, the same cap logic
    int o = exif_jpeg_orientation(data, size);
    if (o < 1 || o > 8) abort();
    char path[256], err[1024];
    fuzz_scratch(path, sizeof path, "photo");
    if (fuzz_write_file(path, data, size)) return 0;
    Photo p;
    if (photo_load(path, &p, err, sizeof err) == 0) {
        const size_t plane = (size_t)p.w * (size_t)p.h;
        if (p.w < 1 || p.h < 1 || (int64_t)plane > dod_limit(DOD_LIMIT_IMAGE_PIXELS) || p.channels < 1 ||
            p.channels > 4 || (p.bits != 8 && p.bits != 16) || p.orientation < 1 || p.orientation > 8 ||
            (p.alpha != NULL) != (p.channels == 2 || p.channels == 4))
            abort();
        for (size_t i = 0; i < 3 * plane; i++)
            if (!(p.rgb[i] >= -1.0f && p.rgb[i] <= 1.0f)) abort();
        photo_free(&p);
    }
    unlink(path);
    return 0;
}

// Seeds: the photo fixtures of tests/cli_restore.sh and tests/test_exif.c (EXIF orientations 1, 6 and
// 8 big-endian, 16-bit grey, RGBA, grey + alpha; scripts/make_restore_photo_fixtures.py).
int fuzz_write_seeds(const char *dir) {
    static const char *const names[] = {"exif1.jpg", "exif6.jpg", "exif8_be.jpg", "grey16.png", "rgba.png",
                                        "grey_alpha.png"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char src[256];
        snprintf(src, sizeof src, "tests/fixtures/restore/%s", names[i]);
        if (fuzz_seed_from_repo(dir, src, names[i])) return 1;
    }
    return 0;
}
