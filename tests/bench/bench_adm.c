// dod-bench adm: the cost of the paper's degradation extractor (layers/adm_encoder.h), the encoder half
// of guided-diffusion's 256x256 unconditional UNet at full size (C0 256, mult 1 1 2 2 4 4, attention on
// levels 3-5 with 64-channel heads, 211M parameters) with random weights (the speed does not depend on
// them), at t = 0 on [B, 3, S, S] images: the pooled [B, 1024] features, no gradient. Reports the time
// to build the encoder, the median forward time, the step-arena peak and the process's peak RSS.
// The same run times guided-diffusion's own UNetModel in PyTorch (f32, no_grad, stopped after the middle
// block) through scripts/bench_adm_torch.py when --guided-diffusion DIR names a checkout of
// openai/guided-diffusion (or $GUIDED_DIFFUSION does), with torch.set_num_threads at our OpenMP thread
// count; without it our numbers only.
// Options: --size S (256), --batch B (1), --iters N (2), --frozen f32|bf16 (bf16), --device cpu|cuda,
// --guided-diffusion DIR, --no-torch.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "autograd/cuda/cuda_backend.h"
#include "autograd/ops.h"
#include "layers/adm_encoder.h"
#include "tests/bench/bench.h"

static int usage(void) {
    fprintf(stderr, "usage: dod-bench adm [--size S] [--batch B] [--iters N] [--frozen f32|bf16] [--device cpu|cuda]\n"
                    "                     [--guided-diffusion DIR] [--no-torch]\n");
    return 2;
}

static int bench_adm(int argc, char **argv) {
    int size = 256, batch = 1, iters = 2;
    DType frozen = DT_BF16;
    Device device = DEV_CPU;
    bool torch = true;
    const char *gd = getenv("GUIDED_DIFFUSION");
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--size") && v) size = atoi(v), i++;
        else if (!strcmp(a, "--batch") && v) batch = atoi(v), i++;
        else if (!strcmp(a, "--iters") && v) iters = atoi(v), i++;
        else if (!strcmp(a, "--frozen") && v) frozen = strcmp(v, "f32") ? DT_BF16 : DT_F32, i++;
        else if (!strcmp(a, "--device") && v) device = strcmp(v, "cuda") ? DEV_CPU : DEV_CUDA, i++;
        else if (!strcmp(a, "--guided-diffusion") && v) gd = v, i++;
        else if (!strcmp(a, "--no-torch")) torch = false;
        else return usage();
    }
    if (size < 32 || batch < 1 || iters < 1) dod_fatal("dod-bench adm", "need size >= 32, batch >= 1, iters >= 1");
    if (device == DEV_CUDA && !dod_cuda_available())
        dod_fatal("dod-bench adm", "--device cuda: %s", dod_cuda_unavailable_reason());
    static const int mult[6] = {1, 1, 2, 2, 4, 4};
    static const bool attention[6] = {false, false, false, true, true, true};
    AdmEncoderConfig cfg = adm_encoder_default_config();
    double t0 = dod_now_seconds();
    char err[1024];
    AdmEncoder *e = adm_encoder_from_tensors(adm_encoder_random_tensors(&cfg, 256, mult, 6, attention, 1), &cfg, frozen,
                                             "random 256x256_diffusion_uncond encoder", err, sizeof err);
    if (!e) dod_fatal("dod-bench adm", "%s", err);
    if (device == DEV_CUDA) adm_encoder_to_device(e, device);
    double t_build = dod_now_seconds() - t0;
    int64_t shape[4] = {batch, 3, size, size};
    Tensor *x = tensor_new_persistent("x", 4, shape, DT_F32);
    tensor_rand_uniform(x, 2, -1, 1);
    if (device == DEV_CUDA) tensor_move_to(x, device);
    double *ms = malloc(sizeof(double) * (size_t)iters);
    size_t peak = 0;
    float first = 0;
    for (int it = 0; it <= iters; it++) {   // one warm-up
        ag_step_reset();
        arena_peak_reset();
        double t1 = dod_now_seconds();
        Tensor *d = adm_encoder_features(e, x);
        float v;   // the first feature, for the log; reading it back synchronises a CUDA run
        device_copy(&v, DEV_CPU, d->data, d->device, sizeof v);
        if (it) ms[it - 1] = (dod_now_seconds() - t1) * 1000;
        first = v;
        if (arena_peak() > peak) peak = arena_peak();
    }
    ag_step_reset();
    int threads = 1;
#ifdef _OPENMP
    threads = omp_get_max_threads();
#endif
    double ours = bench_median(ms, iters);
    printf("adm encoder (guided-diffusion 256x256 uncond, random weights), batch %d, %dx%d, frozen %s, %s, %d threads: "
           "d[0] %.4f, width %d\n", batch, size, size, dtype_name(frozen), device == DEV_CUDA ? "cuda" : "cpu",
           threads, first, e->out_channels);
    printf("ours:    %.1f ms (median of %d), build %.1f s, step arena peak %.1f MiB, peak RSS %.0f MiB\n", ours, iters,
           t_build, peak / 1048576.0, dod_peak_rss_mib());
    if (torch && device == DEV_CPU) {
        if (!gd || !gd[0]) {
            printf("torch:   not run (no --guided-diffusion DIR / $GUIDED_DIFFUSION: a checkout of "
                   "openai/guided-diffusion)\n");
        } else {
            char args[1400];
            double peak_gib = -1;
            snprintf(args, sizeof args, "--guided-diffusion '%s' --batch %d --size %d --iters %d --threads %d", gd, batch,
                     size, iters, threads);
            double t = bench_torch_ms("bench_adm_torch.py", args, &peak_gib);
            if (t > 0) printf("torch:   %.1f ms (f32), peak RSS growth %.2f GiB; ours / torch = %.2f\n", t, peak_gib,
                              ours / t);
        }
    }
    free(ms);
    tensor_free(x);
    adm_encoder_free(e);
    return 0;
}

BENCH_REGISTER(adm, "the guided-diffusion degradation extractor at full size (random weights) vs PyTorch", bench_adm)
