// Fuzz target: image files (stb_image through image_load: PNG, JPEG, BMP, GIF, TGA, PSD, HDR, PNM).
// A decoded image is within the caps of autograd/base.h; anything else is an error, never a crash.
#include <stdlib.h>

#include "autograd/base.h"
#include "data/image.h"
#include "tests/fuzz/fuzz_util.h"

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-parameter"
#include <stb_image_write.h>   // implementation compiled in data/image.c
#pragma GCC diagnostic pop

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    // A smaller pixel cap than the default keeps each run short (decoding 64 Mpixel images from a
    // few hundred bytes is allowed, only slow); the cap logic is the same.
    setenv("DOD_MAX_IMAGE_PIXELS", "4194304", 0);
    char path[256], err[1024];
    fuzz_scratch(path, sizeof path, "image");
    if (fuzz_write_file(path, data, size)) return 0;
    Image img;
    if (image_load(path, &img, err, sizeof err) == 0) {
        if (img.c != 3 || (int64_t)img.w * img.h > dod_limit(DOD_LIMIT_IMAGE_PIXELS)) abort();
        image_free(&img);
    }
    unlink(path);
    return 0;
}

static void append(void *ctx, void *data, int size) {
    FILE *f = ctx;
    fwrite(data, 1, (size_t)size, f);
}

int fuzz_write_seeds(const char *dir) {
    enum { W = 5, H = 4 };
    uint8_t pix[W * H * 3];
    for (int i = 0; i < W * H * 3; i++) pix[i] = (uint8_t)(i * 37);
    const char *names[] = {"seed.png", "seed.bmp", "seed.jpg", "seed.tga"};
    for (int k = 0; k < 4; k++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, names[k]);
        FILE *f = fopen(path, "wb");
        if (!f) return 1;
        int ok = k == 0   ? stbi_write_png_to_func(append, f, W, H, 3, pix, W * 3)
                 : k == 1 ? stbi_write_bmp_to_func(append, f, W, H, 3, pix)
                 : k == 2 ? stbi_write_jpg_to_func(append, f, W, H, 3, pix, 90)
                          : stbi_write_tga_to_func(append, f, W, H, 3, pix);
        fclose(f);
        if (!ok) return 1;
    }
    // A PNG whose header declares 14417936 x 16 pixels: refused by the caps before decoding.
    static const uint8_t huge_png[] = {0x89, 'P', 'N', 'G', 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 13, 'I', 'H', 'D', 'R',
                                       0x00, 0xdc, 0x00, 0x10, 0, 0, 0, 16, 8, 2, 0, 0, 0, 0, 0, 0, 0};
    static const uint8_t ppm[] = "P6\n3 2\n255\nabcdefghijklmnopqr";
    return fuzz_seed(dir, "huge.png", huge_png, sizeof huge_png) || fuzz_seed(dir, "seed.ppm", ppm, sizeof ppm - 1);
}
