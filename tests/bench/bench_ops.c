// dod-bench ops: GFLOP/s of the dense CPU ops (op_matmul, op_linear, op_conv2d forward / dX / dW,
// op_attention forward / backward) on Stable-Diffusion-like shapes, each next to raw sgemm on the
// equivalent GEMM(s) (same M, N, K and transposes, contiguous operands) measured in the same run.
// The target is >= 70% of sgemm's rate. Times are the best of several repetitions (the machine
// may be shared; best-of is the least noisy estimate of what the code can do).
//
// The reference and the ops use different thread pools (OpenBLAS's pthreads vs OpenMP; see
// autograd/gemm.c), and fork-join code of either kind degrades badly when other processes compete
// for the cores: the header prints the load average; on a shared machine run it as
// `OMP_WAIT_POLICY=PASSIVE nice -n -15 dod-bench ops` (nice needs root) to measure the code
// rather than the neighbours.
//
// usage: dod-bench ops [--quick] [--threads N] [--min-time SECONDS] [--attn-block-rows N]
//                      [--conv-tile-floats N] [--conv-schedule auto|images|shared] [--filter TEXT]
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#ifdef DOD_HAVE_OPENBLAS
#include <cblas.h>
#endif
#ifdef _OPENMP
#include <omp.h>
#endif

#include "autograd/dense_tuning.h"
#include "autograd/gemm.h"
#include "autograd/ops.h"
#include "tests/bench/bench.h"

#define TARGET_RATIO 0.70

static double min_time = 0.5;  // seconds per measurement
static int ref_threads = 1;    // threads OpenBLAS uses for the raw reference
static const char *row_filter; // --filter: only rows whose "op shape" contains this
static int rows_total, rows_pass;

// ---- the reference: raw sgemm on contiguous operands ----------------------------------------------
typedef struct { bool ta, tb; int64_t M, N, K; } GemmShape;

static void raw_sgemm(const GemmShape *s, const float *A, const float *B, float *C) {
#ifdef DOD_HAVE_OPENBLAS
    cblas_sgemm(CblasRowMajor, s->ta ? CblasTrans : CblasNoTrans, s->tb ? CblasTrans : CblasNoTrans, (int)s->M,
                (int)s->N, (int)s->K, 1.0f, A, (int)(s->ta ? s->M : s->K), B, (int)(s->tb ? s->K : s->N), 0.0f, C,
                (int)s->N);
#else
    gemm_f32_portable(s->ta, s->tb, s->M, s->N, s->K, 1.0f, A, s->ta ? s->M : s->K, B, s->tb ? s->K : s->N, 0.0f, C,
                      s->N);
#endif
}

typedef void (*RunFn)(void *ctx);

// Best wall times of two functions, measured in alternating blocks (4 rounds of: fa for a quarter
// of min_time, then fb likewise), so both see the same background load. The reference (OpenBLAS's
// pthreads) and the ops (OpenMP) use different thread pools, and a pool's threads keep spinning for
// milliseconds after their last task: each block starts after a pause that lets the other pool's
// threads go to sleep, so neither measurement pays for the other's spin-down.
static void pause_for_spin_down(void) {
    struct timespec ts = {0, 100 * 1000 * 1000};
    nanosleep(&ts, NULL);
}

static void time_pair(RunFn fa, void *ca, RunFn fb, void *cb, double *best_a, double *best_b) {
    *best_a = *best_b = 1e30;
    for (int round = 0; round < 4; round++)
        for (int which = 0; which < 2; which++) {
            RunFn f = which ? fb : fa;
            void *c = which ? cb : ca;
            double *best = which ? best_b : best_a, spent = 0;
            pause_for_spin_down();
            f(c);  // warm-up (page faults, thread start)
            for (int reps = 0; reps < 2 || spent < min_time / 4; reps++) {
                double t0 = dod_now_seconds();
                f(c);
                double dt = dod_now_seconds() - t0;
                spent += dt;
                if (dt < *best) *best = dt;
            }
        }
}

typedef struct {
    int n;                // GEMMs in the group
    GemmShape s[5];
    int64_t times;        // the group runs this many times (e.g. once per attention head)
    float *A, *B, *C;     // scratch operands big enough for every GEMM of the group
} GemmGroup;

static void run_group(void *ctx) {
    GemmGroup *g = ctx;
#ifdef DOD_HAVE_OPENBLAS
    openblas_set_num_threads(ref_threads);  // OpenBLAS's own threading (gemm_f32 sets it back to 1)
#endif
    for (int64_t t = 0; t < g->times; t++)
        for (int i = 0; i < g->n; i++) raw_sgemm(&g->s[i], g->A, g->B, g->C);
}

static double group_flops(const GemmGroup *g) {
    double f = 0;
    for (int i = 0; i < g->n; i++) f += 2.0 * g->s[i].M * g->s[i].N * g->s[i].K;
    return f * g->times;
}

// Times the op (fn on ctx) against raw sgemm on the group and prints one table row.
static void report(const char *op, const char *shape, GemmGroup *ref, RunFn fn, void *ctx) {
    char label[160];
    snprintf(label, sizeof label, "%s %s", op, shape);
    if (row_filter && !strstr(label, row_filter)) return;
    int64_t a = 0, b = 0, c = 0;
    for (int i = 0; i < ref->n; i++) {
        const GemmShape *s = &ref->s[i];
        if (s->M * s->K > a) a = s->M * s->K;
        if (s->K * s->N > b) b = s->K * s->N;
        if (s->M * s->N > c) c = s->M * s->N;
    }
    ref->A = malloc(sizeof(float) * a);
    ref->B = malloc(sizeof(float) * b);
    ref->C = malloc(sizeof(float) * c);
    for (int64_t i = 0; i < a; i++) ref->A[i] = (float)((i * 7 % 13) - 6) * 0.05f;
    for (int64_t i = 0; i < b; i++) ref->B[i] = (float)((i * 5 % 11) - 5) * 0.05f;
    double ref_seconds, op_seconds;
    time_pair(run_group, ref, fn, ctx, &ref_seconds, &op_seconds);
    free(ref->A);
    free(ref->B);
    free(ref->C);
    double flops = group_flops(ref);
    double ref_gf = flops / ref_seconds * 1e-9, op_gf = flops / op_seconds * 1e-9, ratio = op_gf / ref_gf;
    char gemm[64];
    snprintf(gemm, sizeof gemm, "%ldx%ldx%ld%s", (long)ref->s[0].M, (long)ref->s[0].N, (long)ref->s[0].K,
             ref->n > 1 || ref->times > 1 ? "+" : "");
    bool pass = ratio >= TARGET_RATIO;
    rows_total++;
    rows_pass += pass;
    printf("%-14s %-34s %-20s %8.1f %8.1f %6.0f%%  %s\n", op, shape, gemm, ref_gf, op_gf, 100 * ratio,
           pass ? "PASS" : "BELOW-TARGET");
    fflush(stdout);
}

static Tensor *bench_input(int ndim, const int64_t *shape, uint64_t seed, float std, bool requires_grad) {
    Tensor *t = tensor_new_persistent("bench input", ndim, shape, DT_F32);
    tensor_randn(t, seed, std);
    t->requires_grad = requires_grad;
    return t;
}

// ---- linear / matmul -------------------------------------------------------------------------------
typedef struct { Tensor *x, *w, *b, *y; const float *seed; bool matmul; } LinearRun;

static void run_linear_forward(void *ctx) {
    LinearRun *r = ctx;
    ag_step_reset();
    bool prev = ag_set_grad_enabled(false);
    if (r->matmul) op_matmul(r->x, r->w, false);
    else op_linear(r->x, r->w, r->b);
    ag_set_grad_enabled(prev);
}

static void run_backward(void *ctx) {  // re-runs the one-node tape ending at y (grads accumulate)
    LinearRun *r = ctx;
    ag_backward_from(r->y, r->seed);
}

static void bench_linear(int64_t rows, int64_t in, int64_t out) {
    char shape[96];
    snprintf(shape, sizeof shape, "x[%ld,%ld] W[%ld,%ld]", (long)rows, (long)in, (long)out, (long)in);
    LinearRun r = {.x = bench_input(2, (int64_t[]){rows, in}, 1, 1.0f, true),
                   .w = bench_input(2, (int64_t[]){out, in}, 2, 0.05f, true),
                   .b = bench_input(1, (int64_t[]){out}, 3, 1.0f, false)};
    GemmGroup fwd = {.n = 1, .times = 1, .s = {{false, true, rows, out, in}}};
    report("linear fwd", shape, &fwd, run_linear_forward, &r);
    ag_step_reset();
    r.y = op_linear(r.x, r.w, r.b);
    float *seed = malloc(sizeof(float) * r.y->numel);
    for (int64_t i = 0; i < r.y->numel; i++) seed[i] = 1e-3f;
    r.seed = seed;
    GemmGroup bwd = {.n = 2, .times = 1, .s = {{false, false, rows, in, out}, {true, false, out, in, rows}}};
    report("linear bwd", shape, &bwd, run_backward, &r);
    free(seed);
    ag_step_reset();
    tensor_free(r.x); tensor_free(r.w); tensor_free(r.b);
}

static void bench_matmul(int64_t batch, int64_t M, int64_t K, int64_t N) {
    char shape[96];
    snprintf(shape, sizeof shape, "a[%ld,%ld,%ld] b[%ld,%ld]", (long)batch, (long)M, (long)K, (long)K, (long)N);
    LinearRun r = {.x = bench_input(3, (int64_t[]){batch, M, K}, 4, 1.0f, false),
                   .w = bench_input(2, (int64_t[]){K, N}, 5, 0.05f, false), .matmul = true};
    GemmGroup fwd = {.n = 1, .times = 1, .s = {{false, false, batch * M, N, K}}};
    report("matmul fwd", shape, &fwd, run_linear_forward, &r);
    tensor_free(r.x); tensor_free(r.w);
}

// ---- conv2d ------------------------------------------------------------------------------------------
typedef struct { Tensor *x, *w, *b, *y; const float *seed; int stride, pad; } ConvRun;

static void run_conv_forward(void *ctx) {
    ConvRun *r = ctx;
    ag_step_reset();
    bool prev = ag_set_grad_enabled(false);
    op_conv2d(r->x, r->w, r->b, r->stride, r->pad);
    ag_set_grad_enabled(prev);
}

static void run_conv_backward(void *ctx) {
    ConvRun *r = ctx;
    ag_backward_from(r->y, r->seed);
}

// Reports backward with only x (dX) or only w (dW) trainable.
static void report_conv_backward(const char *op, const char *shape, GemmGroup *ref, ConvRun *r, bool dx) {
    r->x->requires_grad = dx;
    r->w->requires_grad = !dx;
    ag_step_reset();
    r->y = op_conv2d(r->x, r->w, r->b, r->stride, r->pad);
    float *seed = malloc(sizeof(float) * r->y->numel);
    for (int64_t i = 0; i < r->y->numel; i++) seed[i] = 1e-3f;
    r->seed = seed;
    report(op, shape, ref, run_conv_backward, r);
    free(seed);
    ag_step_reset();
}

static void bench_conv(const char *label, int64_t N, int64_t Cin, int64_t H, int64_t W, int64_t Cout, int64_t k,
                       int stride, int pad) {
    char shape[96];
    snprintf(shape, sizeof shape, "%s %ldx%ld->%ld %ldx%ld k%ld s%d", label, (long)N, (long)Cin, (long)Cout, (long)H,
             (long)W, (long)k, stride);
    ConvRun r = {.x = bench_input(4, (int64_t[]){N, Cin, H, W}, 6, 1.0f, false),
                 .w = bench_input(4, (int64_t[]){Cout, Cin, k, k}, 7, 0.05f, false),
                 .b = bench_input(1, (int64_t[]){Cout}, 8, 1.0f, false), .stride = stride, .pad = pad};
    int64_t Ho = (H + 2 * pad - k) / stride + 1, Wo = (W + 2 * pad - k) / stride + 1;
    int64_t cols = N * Ho * Wo, Kc = Cin * k * k;
    GemmGroup fwd = {.n = 1, .times = 1, .s = {{false, false, Cout, cols, Kc}}};
    report("conv fwd", shape, &fwd, run_conv_forward, &r);
    GemmGroup dx = {.n = 1, .times = 1, .s = {{true, false, Kc, cols, Cout}}};
    report_conv_backward("conv bwd dX", shape, &dx, &r, true);
    GemmGroup dw = {.n = 1, .times = 1, .s = {{false, true, Cout, Kc, cols}}};
    report_conv_backward("conv bwd dW", shape, &dw, &r, false);
    tensor_free(r.x); tensor_free(r.w); tensor_free(r.b);
}

// ---- attention -------------------------------------------------------------------------------------------
typedef struct { Tensor *q, *k, *v, *y; const float *seed; int heads; } AttnRun;

static void run_attention_forward(void *ctx) {
    AttnRun *r = ctx;
    ag_step_reset();
    bool prev = ag_set_grad_enabled(false);
    op_attention(r->q, r->k, r->v, r->heads, 0.0f);
    ag_set_grad_enabled(prev);
}

static void run_attention_backward(void *ctx) {
    AttnRun *r = ctx;
    ag_backward_from(r->y, r->seed);
}

static void bench_attention(const char *label, int64_t B, int64_t Lq, int64_t Lk, int heads, int64_t D) {
    char shape[96];
    snprintf(shape, sizeof shape, "%s B%ld H%d D%ld Lq%ld Lk%ld", label, (long)B, heads, (long)D, (long)Lq, (long)Lk);
    AttnRun r = {.q = bench_input(3, (int64_t[]){B, Lq, heads * D}, 9, 1.0f, true),
                 .k = bench_input(3, (int64_t[]){B, Lk, heads * D}, 10, 1.0f, true),
                 .v = bench_input(3, (int64_t[]){B, Lk, heads * D}, 11, 1.0f, true), .heads = heads};
    // per head: S = Q K^T, O = P V
    GemmGroup fwd = {.n = 2, .times = B * heads, .s = {{false, true, Lq, Lk, D}, {false, false, Lq, D, Lk}}};
    report("attn fwd", shape, &fwd, run_attention_forward, &r);
    ag_step_reset();
    r.y = op_attention(r.q, r.k, r.v, heads, 0.0f);
    float *seed = malloc(sizeof(float) * r.y->numel);
    for (int64_t i = 0; i < r.y->numel; i++) seed[i] = (float)((i % 7) - 3) * 1e-3f;
    r.seed = seed;
    // per head: S recompute, dV = P^T dO, dP = dO V^T, dQ = dS K, dK = dS^T Q
    GemmGroup bwd = {.n = 5, .times = B * heads,
                     .s = {{false, true, Lq, Lk, D}, {true, false, Lk, D, Lq}, {false, true, Lq, Lk, D},
                           {false, false, Lq, D, Lk}, {true, false, Lk, D, Lq}}};
    report("attn bwd", shape, &bwd, run_attention_backward, &r);
    free(seed);
    ag_step_reset();
    tensor_free(r.q); tensor_free(r.k); tensor_free(r.v);
}

static int bench_ops_main(int argc, char **argv) {
    bool quick = false;
    int threads = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--quick")) quick = true;
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--min-time") && i + 1 < argc) min_time = atof(argv[++i]);
        else if (!strcmp(argv[i], "--attn-block-rows") && i + 1 < argc) attention_set_block_rows(atol(argv[++i]));
        else if (!strcmp(argv[i], "--conv-tile-floats") && i + 1 < argc) conv_set_tile_floats(atol(argv[++i]));
        else if (!strcmp(argv[i], "--conv-schedule") && i + 1 < argc) {
            if (!conv_set_schedule(argv[++i])) {
                fprintf(stderr, "dod-bench ops: --conv-schedule %s: expected auto, images or shared\n", argv[i]);
                return 2;
            }
        } else if (!strcmp(argv[i], "--filter") && i + 1 < argc) row_filter = argv[++i];
        else {
            fprintf(stderr, "usage: dod-bench ops [--quick] [--threads N] [--min-time SECONDS] [--attn-block-rows N]"
                            " [--conv-tile-floats N] [--conv-schedule NAME] [--filter TEXT]\n"
                            "  --quick              fewer, smaller shapes and 0.15 s per measurement\n"
                            "  --threads N          threads for the ops (OpenMP) and the reference (OpenBLAS)\n"
                            "  --min-time SECONDS   time spent on each measurement (default 0.5)\n"
                            "  --attn-block-rows N  attention query rows per block (default: automatic)\n"
                            "  --conv-tile-floats N conv im2col tile budget in floats (default: automatic;\n"
                            "                       a huge value gives one tile per image)\n"
                            "  --conv-schedule NAME conv threading: auto, images or shared\n"
                            "  --filter TEXT        only the rows whose op and shape contain TEXT\n");
            return strcmp(argv[i], "--help") ? 2 : 0;
        }
    }
    if (quick && min_time == 0.5) min_time = 0.15;
    if (threads > 0) gemm_set_threads(threads);
#ifdef _OPENMP
    ref_threads = threads > 0 ? threads : omp_get_max_threads();
#endif
    double load[3] = {0, 0, 0};
    FILE *f = fopen("/proc/loadavg", "r");
    if (f) {
        if (fscanf(f, "%lf %lf %lf", &load[0], &load[1], &load[2]) != 3) load[0] = -1;
        fclose(f);
    }
    printf("dod-bench ops: reference = raw %s sgemm (its own threading, %d threads) on the same GEMM shapes; "
           "target >= %.0f%%\n", gemm_backend_name(), ref_threads, 100 * TARGET_RATIO);
    printf("load average %.2f (1 min): other busy processes distort both columns (see the file header)\n", load[0]);
    const char *wait_policy = getenv("OMP_WAIT_POLICY");
    if (load[0] > 0.5 && !(wait_policy && !strcasecmp(wait_policy, "passive")))
        printf("note: the machine is busy and OMP_WAIT_POLICY is not PASSIVE: OpenMP threads spin-wait at barriers, "
               "which stalls badly when they share a core; rerun with OMP_WAIT_POLICY=PASSIVE\n");
    printf("%-14s %-34s %-20s %8s %8s %7s  %s\n", "op", "shape", "GEMM MxNxK", "sgemm", "op", "ratio", "mark");
    printf("%-14s %-34s %-20s %8s %8s\n", "", "", "", "GFLOP/s", "GFLOP/s");
    bench_linear(1024, 320, 320);
    bench_linear(1024, 640, 5120);
    if (!quick) bench_linear(4096, 320, 1280);
    bench_matmul(4, 256, 320, 320);
    bench_conv("SD", 1, 320, 32, 32, 320, 3, 1, 1);
    bench_conv("SD", 1, 640, 16, 16, 640, 3, 1, 1);
    bench_conv("conv_in", 1, 4, 64, 64, 320, 3, 1, 1);
    bench_conv("1x1", 1, 640, 16, 16, 320, 1, 1, 0);
    bench_conv("down", 1, 320, 64, 64, 320, 3, 2, 1);
    if (!quick) {
        bench_conv("1x1", 1, 320, 32, 32, 320, 1, 1, 0);
        bench_conv("SD", 1, 1280, 8, 8, 1280, 3, 1, 1);
        bench_conv("SD", 4, 640, 8, 8, 640, 3, 1, 1);
        bench_conv("SD", 1, 320, 64, 64, 320, 3, 1, 1);
        bench_conv("VAE", 1, 128, 128, 128, 128, 3, 1, 1);
        bench_conv("VAE", 1, 256, 128, 128, 256, 3, 1, 1);
        bench_conv("VAE", 1, 128, 512, 512, 128, 3, 1, 1);  // decoder's last level: im2col tiled over rows
    }
    // Thin convs of the DOD detail module at full resolution (RRDB growth 32 in the real model; the
    // train-bench fixture's 16->8 and 14->2 at batch 4): GEMMs with few rows, memory-bound on im2col.
    bench_conv("thin", 1, 64, 128, 128, 32, 3, 1, 1);
    bench_conv("thin", 1, 32, 256, 256, 32, 3, 1, 1);
    if (!quick) {
        bench_conv("thin", 4, 16, 128, 128, 8, 3, 1, 1);
        bench_conv("thin", 4, 14, 128, 128, 2, 3, 1, 1);
    }
    bench_attention("self", 1, 1024, 1024, 5, 64);
    bench_attention("cross", 1, 1024, 77, 5, 64);
    if (!quick) {
        bench_attention("self", 1, 256, 256, 10, 64);
        bench_attention("self", 1, 4096, 4096, 5, 64);
        bench_attention("cross", 1, 4096, 77, 5, 64);
    }
    printf("%d of %d rows at >= %.0f%% of sgemm\n", rows_pass, rows_total, 100 * TARGET_RATIO);
    return 0;
}

BENCH_REGISTER(ops, "GFLOP/s of CPU matmul, conv2d, attention vs sgemm", bench_ops_main)
