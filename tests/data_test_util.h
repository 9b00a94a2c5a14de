// Helpers shared by the data tests (tests/test_data_*.c, tests/test_h5_*.c): scratch directories,
// the real-photo fixtures (tests/fixtures/data, made by scripts/make_data_fixtures.py), and
// generated images. Header-only; include after tests/check.h.
#pragma once
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "data/image.h"
#include "data/keyed_rng.h"

__attribute__((unused)) static const char *data_fixture_names[] = {"astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg", "hubble.bmp"};
#define DATA_N_FIXTURES 5

static inline void data_fixture_path(const char *name, char *buf, size_t len) {
    snprintf(buf, len, "%s/tests/fixtures/data/%s", DOD_SOURCE_DIR, name);
}

// A fresh scratch directory under /tmp (mkdtemp); path into buf.
static inline void data_scratch_dir(const char *tag, char *buf, size_t len) {
    snprintf(buf, len, "/tmp/dod_%s_XXXXXX", tag);
    if (!mkdtemp(buf)) {
        perror("mkdtemp");
        exit(1);
    }
}

static inline void data_mkdir(const char *dir, const char *sub, char *buf, size_t len) {
    snprintf(buf, len, "%s/%s", dir, sub);
    mkdir(buf, 0755);
}

// Recursively removes a scratch directory made above (only paths under /tmp/dod_).
static inline void data_rm_rf(const char *dir) {
    if (strncmp(dir, "/tmp/dod_", 9) != 0 || strchr(dir, '\'')) return;
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "warning: could not remove %s\n", dir);
}

// A generated w x h test picture (smooth gradients, a few discs, keyed noise texture).
static inline Image data_generated_image(int w, int h, uint64_t key) {
    Image img = image_alloc(w, h, 3);
    KeyedRng rng = keyed_rng(key);
    double cx = rng_range(&rng, 0, w), cy = rng_range(&rng, 0, h), r = rng_range(&rng, 0.1, 0.4) * (w < h ? w : h);
    int base[3] = {(int)rng_below(&rng, 120), (int)rng_below(&rng, 120), (int)rng_below(&rng, 120)};
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            int inside = (x - cx) * (x - cx) + (y - cy) * (y - cy) < r * r;
            for (int c = 0; c < 3; c++) {
                int v = base[c] + (x * (60 + 30 * c)) / w + (y * 50) / h + (inside ? 60 : 0) + (int)rng_below(&rng, 9);
                img.pix[((size_t)y * w + x) * 3 + c] = (uint8_t)(v > 255 ? 255 : v);
            }
        }
    return img;
}

static inline int data_file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

// Copies a file byte for byte (test setup). Returns 0 or -1.
static inline int data_copy_file(const char *src, const char *dst) {
    FILE *in = fopen(src, "rb"), *out = in ? fopen(dst, "wb") : NULL;
    if (!in || !out) {
        if (in) fclose(in);
        return -1;
    }
    char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0) fwrite(buf, 1, n, out);
    fclose(in);
    fclose(out);
    return 0;
}

// Number of entries of dir whose name contains `part` (to find left-over temp files).
static inline int data_count_entries(const char *dir, const char *part) {
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "ls -a '%s' | grep -c -- '%s'", dir, part);
    FILE *p = popen(cmd, "r");
    int n = 0;
    if (p) {
        if (fscanf(p, "%d", &n) != 1) n = -1;
        pclose(p);
    }
    return n;
}
