// Minimal test harness: CHECK macros, a finite-difference gradient checker, and the closing line
// "N passed, N failed" that CI reads. Header-only; include once per test executable.
#pragma once
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sys/wait.h>
#include <unistd.h>

#include "autograd/ops.h"

static int check_passed_ = 0, check_failed_ = 0;

#define CHECK(cond, ...)                                                                \
    do {                                                                                \
        if (cond) {                                                                     \
            check_passed_++;                                                            \
        } else {                                                                        \
            check_failed_++;                                                            \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);             \
            fprintf(stderr, __VA_ARGS__);                                               \
            fprintf(stderr, "\n");                                                      \
        }                                                                               \
    } while (0)

#define CHECK_NEAR(a, b, tol, what)                                                     \
    do {                                                                                \
        double a_ = (a), b_ = (b), t_ = (tol);                                          \
        CHECK(fabs(a_ - b_) <= t_, "%s: %.9g vs %.9g (tol %.3g)", (what), a_, b_, t_);  \
    } while (0)

// Prints the closing line and returns the process exit code.
static inline int check_summary(void) {
    printf("%d passed, %d failed\n", check_passed_, check_failed_);
    return check_failed_ ? 1 : 0;
}

// Max |a - b| over n floats, and max |b| (the reference's scale).
static inline double max_abs_diff(const float *a, const float *b, long n, double *ref_scale) {
    double m = 0, s = 0;
    for (long i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (d > m || d != d) m = d != d ? INFINITY : d;
        if (fabs((double)b[i]) > s) s = fabs((double)b[i]);
    }
    if (ref_scale) *ref_scale = s;
    return m;
}

// ---- finite-difference gradient check ---------------------------------------------------------
// fn builds an output from the inputs (persistent f32 tensors). The checked scalar is
// L = sum_i out[i] * w[i] with fixed pseudo-random weights w (accumulated in double), so every
// output element contributes. For each input with requires_grad, every element (or a strided
// subset of at most max_elems) is perturbed by +-eps and the central difference (L+ - L-) / 2eps,
// computed in double from f32 forwards, is compared with the analytic gradient from ag_backward:
//     |analytic - numeric| <= atol + rtol * max(|numeric|, max_j |numeric_j| * 1e-1)
// Returns the number of mismatches (each printed).
typedef Tensor *(*GradcheckFn)(void *ctx, Tensor *const *inputs);

static inline double gradcheck_eval_(GradcheckFn fn, void *ctx, Tensor *const *in, const double *w,
                                     Tensor **out_shape) {
    bool prev = ag_set_grad_enabled(false);
    Tensor *out = fn(ctx, in);
    double L = 0;
    const float *o = tensor_f32(out);
    for (int64_t i = 0; i < out->numel; i++) L += (double)o[i] * w[i];
    if (out_shape) *out_shape = out;
    ag_set_grad_enabled(prev);
    return L;
}

static inline int gradcheck(const char *name, GradcheckFn fn, void *ctx, int n, Tensor *const *inputs,
                            double eps, double rtol, double atol, long max_elems) {
    // Output shape and weights.
    ag_step_reset();
    bool prev = ag_set_grad_enabled(false);
    Tensor *probe = fn(ctx, inputs);
    ag_set_grad_enabled(prev);
    int64_t nout = probe->numel;
    double *w = malloc(sizeof(double) * nout);
    uint64_t s = 0x9E3779B97F4A7C15ull;
    for (int64_t i = 0; i < nout; i++) {
        s ^= s << 13; s ^= s >> 7; s ^= s << 17;
        w[i] = ((double)(s >> 11) / 9007199254740992.0) * 2.0 - 1.0;
    }
    // Analytic gradients.
    for (int i = 0; i < n; i++) tensor_zero_grad(inputs[i]);
    ag_step_reset();
    Tensor *out = fn(ctx, inputs);
    float *seed = malloc(sizeof(float) * nout);
    for (int64_t i = 0; i < nout; i++) seed[i] = (float)w[i];
    ag_backward_from(out, seed);
    free(seed);
    int bad = 0;
    for (int i = 0; i < n; i++) {
        Tensor *t = inputs[i];
        if (!t->requires_grad) continue;
        float *x = (float *)t->data;
        int64_t stride = (max_elems > 0 && t->numel > max_elems) ? (t->numel + max_elems - 1) / max_elems : 1;
        // numeric gradients first (to get their scale)
        int64_t cnt = (t->numel + stride - 1) / stride;
        double *num = malloc(sizeof(double) * cnt);
        double scale = 0;
        for (int64_t j = 0, k = 0; j < t->numel; j += stride, k++) {
            float orig = x[j];
            x[j] = orig + (float)eps;
            double Lp = gradcheck_eval_(fn, ctx, inputs, w, NULL);
            x[j] = orig - (float)eps;
            double Lm = gradcheck_eval_(fn, ctx, inputs, w, NULL);
            x[j] = orig;
            double h = ((double)(orig + (float)eps) - (double)(orig - (float)eps));
            num[k] = (Lp - Lm) / h;
            if (fabs(num[k]) > scale) scale = fabs(num[k]);
            ag_step_reset();
        }
        const float *g = t->grad;
        for (int64_t j = 0, k = 0; j < t->numel; j += stride, k++) {
            double a = g ? g[j] : 0.0;
            double tol = atol + rtol * fmax(fabs(num[k]), scale * 1e-1);
            if (!(fabs(a - num[k]) <= tol)) {
                if (bad < 8)
                    fprintf(stderr, "FAIL gradcheck %s: input %d (%s) elem %ld: analytic %.8g numeric %.8g (tol %.3g)\n",
                            name, i, t->name ? t->name : "?", (long)j, a, num[k], tol);
                bad++;
            }
        }
        free(num);
    }
    free(w);
    ag_step_reset();
    if (bad) check_failed_++; else check_passed_++;
    if (!bad) printf("ok gradcheck %s\n", name);
    return bad;
}

// Persistent f32 test input filled with N(0, std^2) from seed; requires_grad as given.
static inline Tensor *test_input(const char *name, int ndim, const int64_t *shape, uint64_t seed,
                                 float std, bool requires_grad) {
    Tensor *t = tensor_new_persistent(name, ndim, shape, DT_F32);
    tensor_randn(t, seed, std);
    t->requires_grad = requires_grad;
    return t;
}

// Run fn(ctx) in a forked child with stderr captured into msg (NUL-terminated, truncated to cap).
// Returns the child's exit status (or 128 + signal). For testing that errors exit non-zero and name
// what is at fault.
static inline int run_expect_fail(void (*fn)(void *), void *ctx, char *msg, size_t cap) {
    int fds[2];
    if (pipe(fds) != 0) return -1;
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        close(fds[0]);
        dup2(fds[1], 2);
        fn(ctx);
        fflush(stderr);
        _exit(0);
    }
    close(fds[1]);
    size_t got = 0;
    ssize_t r;
    while ((r = read(fds[0], msg + got, cap - 1 - got)) > 0 && got + (size_t)r < cap - 1) got += (size_t)r;
    if (r > 0) got += (size_t)r;
    msg[got] = 0;
    char sink[256];
    while (read(fds[0], sink, sizeof sink) > 0) {}
    close(fds[0]);
    int st = 0;
    waitpid(pid, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

// Runs fn(ctx) in a forked child and CHECKs that it exits with status 1 and that its stderr contains
// every string of the NULL-terminated list `needles` (e.g. the op name and the offending shapes).
static inline void expect_fatal(const char *what, void (*fn)(void *), void *ctx, const char *const *needles) {
    char msg[4096];
    int code = run_expect_fail(fn, ctx, msg, sizeof msg);
    CHECK(code == 1, "%s: child exit status %d, want 1 (stderr: %s)", what, code, msg);
    for (int i = 0; needles[i]; i++)
        CHECK(strstr(msg, needles[i]) != NULL, "%s: message lacks \"%s\": %s", what, needles[i], msg);
}
