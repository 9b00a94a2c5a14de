// Helpers for the op tests (tests/test_op_*.c): death tests for shape errors, input shaping, and a
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

// Runs fn(ctx) in a forked child with stderr captured through a pipe. Passes when the child exits
// with status 1 and its message contains every needle (the op name and the offending shapes).
static inline void expect_fatal(const char *what, void (*fn)(void *), void *ctx, int n_needles,
                                const char *const *needles) {
    int fds[2];
    if (pipe(fds) != 0) { perror("pipe"); exit(2); }
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) { perror("fork"); exit(2); }
    if (pid == 0) {
        close(fds[0]);
        dup2(fds[1], 2);
        fn(ctx);
        _exit(0);  // returning means the error was not detected
    }
    close(fds[1]);
    char msg[2048];
    size_t len = 0;
    ssize_t r;
    while (len < sizeof msg - 1 && (r = read(fds[0], msg + len, sizeof msg - 1 - len)) > 0) len += (size_t)r;
    msg[len] = 0;
    close(fds[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    int code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    CHECK(code == 1, "%s: child exit status %d, want 1 (stderr: %s)", what, code, msg);
    for (int i = 0; i < n_needles; i++)
        CHECK(strstr(msg, needles[i]) != NULL, "%s: message lacks \"%s\": %s", what, needles[i], msg);
    if (code == 1) printf("ok death %s: %s", what, msg);
}

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
