// dod-bench train: one DOD training step of ours against the PyTorch twin of the model on the same
// machine, in the same invocation, as a ratio.
//
// Default model: the parity fixture's (tests/test_dod_model.c, scripts/make_dod_fixture.py) on the tiny
// SD 2.x base tests/fixtures/sd/sd2_tiny/model: rank 4, alpha 6, cnn 4-6-8-8, de 12, block 6, RRDB
// growth 2. With --base DIR: the spec-sized model (dod_model_default_config: rank 8, cnn 32-64-128-256,
// growth 32) on the diffusers directory DIR, zero prompt embedding; --random-weights builds the frozen
// UNet/VAE from DIR's configs with random weights (layers/sd_random.h: no weight files needed, e.g. the
// SD 2.1-base shapes that scripts/gpu-check.sh writes).
// A step is what dod-train does: train-mode forward (posterior sampled), the stage's loss (stage 1:
// 2 * MSE; stage 2: MSE + 0.1 * (1 - SSIM)), backward, clip_grad_norm(1.0), AdamW (the public
// defaults) over the stage's trainables, gradients zeroed. One warm-up step, then the median of --iters.
//
// --device cuda: every tensor of the model and the batch on the GPU (dod_model_to_device), f32
// precision mode (TF32 off), AdamW and clipping on the device (autograd/optim.c dispatches by the
// parameters' device). Prints the peak device memory. Without a usable GPU it fails with
// "no CUDA device: <reason>" before loading anything. --precision mixed (cuda, stage 1): frozen UNet/VAE
// weights in bf16 and DOD_PREC_MIXED (cuBLAS/cuDNN read them as bf16, TF32 for f32 products); the
// PyTorch side then runs its usual bf16 autocast recipe (scripts/bench_train_torch.py).
// --activations f32|bf16: the storage dtype of our activations (ag_set_activation_dtype; any device);
// the default is bf16 with --precision mixed, f32 otherwise.
//
// Options: --stage 1|2 (1), --batch B (2), --crop S (32, a multiple of 8), --iters N (5),
// --recompute (ours only: activation recomputation; the ratio then compares different work),
// --device cpu|cuda (cpu), --precision f32|mixed (f32), --activations f32|bf16, --base DIR, --random-weights,
// --no-torch
// (ours only). The PyTorch side runs
// scripts/bench_train_torch.py with bench_python() ($PYTHON, else python3)
// and our OpenMP thread count, on the same device and base; when Python, torch, diffusers or (cuda) a
// GPU is missing it says so and only our numbers are printed.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "autograd/cuda/cuda_backend.h"
#include "autograd/optim.h"
#include "autograd/profile.h"
#include "layers/dod_model.h"
#include "layers/dod_model_util.h"
#include "tests/dod_fixture_config.h"
#include "tests/bench/bench.h"

// The PyTorch reference's median ms (scripts/bench_train_torch.py), negative when unavailable; its peak
// device memory into *peak_gib (cuda).
static double torch_ms(int stage, int batch, int crop, int iters, int threads, const char *device, bool mixed,
                       const char *base, double *peak_gib) {
    char args[1400];
    snprintf(args, sizeof args, "--stage %d --batch %d --crop %d --iters %d --threads %d --device %s --precision %s%s%s%s",
             stage, batch, crop, iters, threads, device, mixed ? "mixed" : "f32", base ? " --base '" : "",
             base ? base : "", base ? "'" : "");
    return bench_torch_ms("bench_train_torch.py", args, peak_gib);
}

// One training step as train/loop.c runs it (= loss value; writes the parameters and optimizer state).
static float train_step(DodModel *m, AdamW *opt, Tensor **trainable, int n, Tensor *lq, Tensor *hq, uint64_t seed,
                        bool cuda) {
    DodLoss l = dod_model_forward_loss(m, lq, hq, seed);
    float loss = dod_scalar_value(l.total);
    ag_backward(l.total);
    ag_step_reset();
    clip_grad_norm(trainable, n, 1.0);
    adamw_step(opt, opt->cfg.lr);
    for (int i = 0; i < n; i++) tensor_zero_grad(trainable[i]);
    if (cuda) dod_cuda_synchronize("dod-bench train step");  // the step's time includes its kernels
    return loss;
}

static int usage(const char *arg) {
    printf("usage: dod-bench train [--stage 1|2] [--batch B] [--crop S] [--iters N] [--recompute]\n"
           "                       [--device cpu|cuda] [--precision f32|mixed] [--activations f32|bf16]\n"
           "                       [--base DIR [--random-weights]] [--no-torch]\n");
    return strcmp(arg, "--help") ? 2 : 0;
}

static int bench_train_main(int argc, char **argv) {
    int stage = 1, batch = 2, crop = 32, iters = 5;
    bool recompute = false, random_weights = false, no_torch = false;
    const char *base = NULL, *device_name = "cpu", *precision = "f32", *activations = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--stage") && i + 1 < argc) stage = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--batch") && i + 1 < argc) batch = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--crop") && i + 1 < argc) crop = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--iters") && i + 1 < argc) iters = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--device") && i + 1 < argc) device_name = argv[++i];
        else if (!strcmp(argv[i], "--base") && i + 1 < argc) base = argv[++i];
        else if (!strcmp(argv[i], "--precision") && i + 1 < argc) precision = argv[++i];
        else if (!strcmp(argv[i], "--activations") && i + 1 < argc) activations = argv[++i];
        else if (!strcmp(argv[i], "--recompute")) recompute = true;
        else if (!strcmp(argv[i], "--random-weights")) random_weights = true;
        else if (!strcmp(argv[i], "--no-torch")) no_torch = true;
        else return usage(argv[i]);
    }
    const char *who = "dod-bench train";
    DOD_CHECK(stage == 1 || stage == 2, who, "--stage %d: must be 1 or 2", stage);
    DOD_CHECK(batch >= 1 && iters >= 1, who, "--batch %d and --iters %d must be at least 1", batch, iters);
    DOD_CHECK(crop >= 8 && crop % 8 == 0, who, "--crop %d: must be a positive multiple of 8", crop);
    DOD_CHECK(!strcmp(device_name, "cpu") || !strcmp(device_name, "cuda"), who, "--device %s: expected cpu or cuda",
              device_name);
    DOD_CHECK(!random_weights || base, who, "--random-weights needs --base DIR (the configs to build from)");
    DOD_CHECK(!strcmp(precision, "f32") || !strcmp(precision, "mixed"), who, "--precision %s: expected f32 or mixed",
              precision);
    bool cuda = !strcmp(device_name, "cuda"), mixed = !strcmp(precision, "mixed");
    DOD_CHECK(!mixed || (cuda && stage == 1), who, "--precision mixed: a CUDA mode, stage 1 (--device cuda --stage 1)");
    if (!activations) activations = mixed ? "bf16" : "f32";
    DOD_CHECK(!strcmp(activations, "f32") || !strcmp(activations, "bf16"), who, "--activations %s: expected f32 or bf16",
              activations);
    ag_set_activation_dtype(strcmp(activations, "bf16") ? DT_F32 : DT_BF16);
    if (cuda) {
        if (!dod_cuda_available()) dod_fatal(who, "no CUDA device: %s", dod_cuda_unavailable_reason());
        dod_cuda_set_precision(mixed ? DOD_PREC_MIXED : DOD_PREC_F32);
    }
    int threads = 1;
#ifdef _OPENMP
    threads = omp_get_max_threads();
#endif

    DodModelConfig cfg = dod_fixture_config(stage);
    if (base) {
        cfg = dod_model_default_config(stage);
        cfg.base_model_dir = base;
        cfg.random_base_weights = random_weights;
    }
    cfg.recompute = recompute;
    if (mixed) cfg.frozen_dtype = DT_BF16;
    double t_load = dod_now_seconds();
    DodModel *m = dod_model_create(&cfg);
    if (cuda) dod_model_to_device(m, DEV_CUDA);
    t_load = dod_now_seconds() - t_load;
    int n = dod_model_trainable(m, NULL, 0);
    Tensor **trainable = dod_malloc(sizeof(Tensor *) * (size_t)n, "trainable list");
    dod_model_trainable(m, trainable, n);
    int64_t numel = 0;
    for (int i = 0; i < n; i++) numel += trainable[i]->numel;
    AdamW *opt = adamw_new(trainable, n, adamw_defaults());

    // Inputs as the PyTorch side builds them (values do not matter for timing), on the host, then moved.
    Tensor *lq, *hq;
    dod_synthetic_pair(batch, crop, &lq, &hq);
    if (cuda) {
        tensor_move_to(hq, DEV_CUDA);
        tensor_move_to(lq, DEV_CUDA);
    }

    double *t = dod_malloc(sizeof(double) * (size_t)iters, "times");
    float loss = 0;
    for (int i = -1; i < iters; i++) {  // i == -1: warm-up
        double t0 = dod_now_seconds();
        loss = train_step(m, opt, trainable, n, lq, hq, (uint64_t)(i + 2), cuda);
        if (i >= 0) t[i] = (dod_now_seconds() - t0) * 1e3;
        if (i == -1) op_profile_reset();  // DOD_PROFILE: the timed steps only
    }
    DOD_CHECK(isfinite(loss), who, "the loss is %g", loss);
    double ours = bench_median(t, iters);
    printf("dod train step, stage %d%s%s, %s activations on %s: batch %d, crop %d, %d trainable tensors (%ld values), "
           "base %s%s, %d threads, median of %d (model set up in %.1f s)\n",
           stage, recompute ? " (recompute)" : "", mixed ? " (mixed precision, bf16 frozen weights)" : "", activations,
           cuda ? dod_cuda_device_name() : "cpu", batch, crop, n, (long)numel,
           base ? base : "sd2_tiny fixture", random_weights ? " (random weights)" : "", threads, iters, t_load);
    printf("frozen base: UNet %.1fM parameters, VAE %.1fM\n", params_numel(m->unet->net.ps, false) / 1e6,
           params_numel(m->vae->net.ps, false) / 1e6);
    printf("ours:    %.3f ms   (loss %.4f)\n", ours, loss);
    if (cuda) {
        DodCudaMemStats ms = dod_cuda_mem_stats();
        printf("ours peak memory: %.3f GiB reserved on the device (arena peak %.3f GiB, cache peak %.3f GiB)\n",
               ms.peak_reserved_bytes / 1073741824.0, ms.arena_peak_bytes / 1073741824.0,
               ms.cached_peak_bytes / 1073741824.0);
    } else {
        printf("ours peak memory: arena peak %.1f MiB\n", arena_peak() / 1048576.0);
    }
    double peak = -1;
    double ref = recompute || no_torch ? -1 : torch_ms(stage, batch, crop, iters, threads, device_name, mixed, base, &peak);
    if (ref > 0) {
        printf("torch:   %.3f ms\n", ref);
        if (peak > 0) printf("torch peak memory: %.3f GiB (max allocated)\n", peak);
        printf("ratio ours/torch: %.2f\n", ours / ref);
    } else {
        printf("torch:   NOT RUN\n");
    }
    free(t);
    adamw_free(opt);
    free(trainable);
    tensor_free(lq);
    tensor_free(hq);
    dod_model_free(m);
    return 0;
}

BENCH_REGISTER(train, "DOD training step (fixture-sized model) vs PyTorch", bench_train_main)
