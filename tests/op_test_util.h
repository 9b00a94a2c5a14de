// Helpers for the op tests (tests/test_op_*.c): input shaping and a
// reader for the text fixtures in tests/fixtures/opspoint (written by
// scripts/make_opspoint_fixtures.py). Include after tests/check.h.
#pragma once
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/check.h"

// Moves values within `gap` of a kink k away from it (to k +- gap), so finite differences with a
// smaller step never straddle the kink.
static inline void push_away(Tensor *t, float k, float gap) {
    float *d = tensor_data_f32(t);
    for (int64_t i = 0; i < t->numel; i++)
        if (fabsf(d[i] - k) < gap) d[i] = d[i] < k ? k - gap : k + gap;
}

// Fixture block `name` from tests/fixtures/opspoint/<file>: fills out (capacity cap) and returns the
// count; fatal (test error) when missing.
static inline int fixture_read(const char *file, const char *name, double *out, int cap) {
    char path[1024];
    snprintf(path, sizeof path, "%s/tests/fixtures/opspoint/%s", DOD_SOURCE_DIR, file);
    FILE *f = fopen(path, "r");
    if (!f) { fprintf(stderr, "fixture %s: cannot open (run scripts/make_opspoint_fixtures.py)\n", path); exit(2); }
    char key[128];
    int n;
    while (fscanf(f, "%127s %d", key, &n) == 2) {
        bool hit = strcmp(key, name) == 0;
        if (hit && n > cap) { fprintf(stderr, "fixture %s: block %s has %d values, room for %d\n", path, name, n, cap); exit(2); }
        for (int i = 0; i < n; i++) {
            double v;
            if (fscanf(f, "%lf", &v) != 1) { fprintf(stderr, "fixture %s: block %s truncated at %d\n", path, key, i); exit(2); }
            if (hit) out[i] = v;
        }
        if (hit) { fclose(f); return n; }
    }
    fclose(f);
    fprintf(stderr, "fixture %s: no block %s\n", path, name);
    exit(2);
}

// A fake GPU tensor header (no device memory behind it) to check the CUDA dispatch error.
static inline Tensor fake_cuda_tensor(int64_t n) {
    Tensor t;
    memset(&t, 0, sizeof t);
    t.ndim = 1;
    t.shape[0] = n;
    t.numel = n;
    t.dtype = DT_F32;
    t.device = DEV_CUDA;
    return t;
}
