// dod-bench lpips: what the LPIPS term adds to a training step, ours against the lpips package on the
// same machine in the same invocation: LPIPS(x, y) forward + backward to x (x the model output, y the
// target), mean over the batch, with random VGG16 weights (lpips_random_vgg; the speed does not depend on
// the values) and the package's heads (tests/fixtures/lpips/vgg_lin_v0.1.pth). Reports the median time,
// our step-arena peak (the activation memory the term needs) and the PyTorch side's peak RSS growth.
// Options: --batch B (7), --crop S (256), --iters N (3), --frozen f32|bf16 (f32), --activations f32|bf16
// (f32), --no-torch.
//
// dod-bench lpips-random-vgg OUT [--seed S]: writes lpips_random_vgg(S) (default 18) as a torchvision-named
// safetensors file (features.N.weight / .bias, f32, 58 MB): a stand-in for vgg16-397923af.pth in tests
// (tests/cli_train.sh) and benchmarks where the real file is not available.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "autograd/ops.h"
#include "layers/lpips.h"
#include "layers/safetensors.h"
#include "tests/bench/bench.h"

#define LIN_FIXTURE DOD_SOURCE_DIR "/tests/fixtures/lpips/vgg_lin_v0.1.pth"

static int bench_lpips(int argc, char **argv) {
    int batch = 7, crop = 256, iters = 3;
    DType frozen = DT_F32, act = DT_F32;
    bool torch = true;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--batch") && v) batch = atoi(v), i++;
        else if (!strcmp(a, "--crop") && v) crop = atoi(v), i++;
        else if (!strcmp(a, "--iters") && v) iters = atoi(v), i++;
        else if (!strcmp(a, "--frozen") && v) frozen = strcmp(v, "bf16") ? DT_F32 : DT_BF16, i++;
        else if (!strcmp(a, "--activations") && v) act = strcmp(v, "bf16") ? DT_F32 : DT_BF16, i++;
        else if (!strcmp(a, "--no-torch")) torch = false;
        else {
            fprintf(stderr, "usage: dod-bench lpips [--batch B] [--crop S] [--iters N] [--frozen f32|bf16] "
                            "[--activations f32|bf16] [--no-torch]\n");
            return 2;
        }
    }
    if (batch < 1 || crop < 16 || iters < 1) dod_fatal("dod-bench lpips", "need batch >= 1, crop >= 16, iters >= 1");
    char err[1024];
    Lpips *m = lpips_from_vgg(lpips_random_vgg(18), LIN_FIXTURE, frozen, err, sizeof err);
    if (!m) dod_fatal("dod-bench lpips", "%s", err);
    int64_t shape[4] = {batch, 3, crop, crop};
    Tensor *x = tensor_new_persistent("x", 4, shape, DT_F32), *y = tensor_new_persistent("y", 4, shape, DT_F32);
    tensor_rand_uniform(x, 1, -1, 1);
    tensor_rand_uniform(y, 2, -1, 1);
    x->requires_grad = true;
    ag_set_activation_dtype(act);
    double *ms = malloc(sizeof(double) * (size_t)iters);
    size_t peak = 0;
    float value = 0;
    for (int it = 0; it <= iters; it++) {   // one warm-up
        ag_step_reset();
        arena_peak_reset();
        double t0 = dod_now_seconds();
        Tensor *loss = op_mean(lpips_distance(m, x, y));
        ag_backward(loss);
        value = tensor_data_f32(loss)[0];
        if (it) ms[it - 1] = (dod_now_seconds() - t0) * 1000;
        size_t p = arena_peak();
        if (p > peak) peak = p;
        tensor_zero_grad(x);
    }
    ag_step_reset();
    ag_set_activation_dtype(DT_F32);
    int threads = 1;
#ifdef _OPENMP
    threads = omp_get_max_threads();
#endif
    double ours = bench_median(ms, iters);
    printf("lpips term, batch %d, %dx%d, frozen %s, activations %s, %d threads: value %.6f\n", batch, crop, crop,
           dtype_name(frozen), dtype_name(act), threads, value);
    printf("ours:    %.1f ms (median of %d), step arena peak %.1f MiB\n", ours, iters, peak / 1048576.0);
    if (torch) {
        char args[256];
        double peak_gib = -1;
        snprintf(args, sizeof args, "--batch %d --crop %d --iters %d --threads %d", batch, crop, iters, threads);
        double t = bench_torch_ms("bench_lpips_torch.py", args, &peak_gib);
        if (t > 0) printf("torch:   %.1f ms, peak RSS growth %.2f GiB; ours / torch = %.2f\n", t, peak_gib, ours / t);
    }
    free(ms);
    tensor_free(x);
    tensor_free(y);
    lpips_free(m);
    return 0;
}

static int bench_lpips_random_vgg(int argc, char **argv) {
    if (argc != 2 && !(argc == 4 && !strcmp(argv[2], "--seed"))) {
        fprintf(stderr, "usage: dod-bench lpips-random-vgg OUT.safetensors [--seed S]\n");
        return 2;
    }
    ParamStore *ps = lpips_random_vgg(argc == 4 ? strtoull(argv[3], NULL, 10) : 18);
    Tensor *list[2 * LPIPS_N_CONV];
    int n = params_count(ps);
    for (int i = 0; i < n; i++) list[i] = params_at(ps, i);
    char err[ST_ERR_LEN];
    if (safetensors_save(argv[1], list, n, NULL, 0, err) != ST_OK) dod_fatal("dod-bench lpips-random-vgg", "%s", err);
    params_free(ps);
    return 0;
}

BENCH_REGISTER(lpips, "LPIPS term forward + backward vs the lpips package (CPU)", bench_lpips)
BENCH_REGISTER(lpips_random_vgg, "write random VGG16 weights (torchvision names) for tests", bench_lpips_random_vgg)
