// dod-bench train: one DOD training step of ours (f32 CPU) against the PyTorch twin of the model on the
// same machine, in the same invocation, as a ratio.
//
// The model is the parity fixture's (tests/test_dod_model.c, scripts/make_dod_fixture.py) on the tiny
// SD 2.x base tests/fixtures/sd/sd2_tiny/model: rank 4, alpha 6, cnn 4-6-8-8, de 12, block 6, RRDB
// growth 2. A step is what dod-train does: train-mode forward (posterior sampled), the stage's loss
// (stage 1: 2 * MSE; stage 2: MSE + 0.1 * (1 - SSIM)), backward, clip_grad_norm(1.0), AdamW (the public
// defaults) over the stage's trainables, gradients zeroed. One warm-up step, then the median of --iters.
//
// Options: --stage 1|2 (1), --batch B (2), --crop S (32, a multiple of 8), --iters N (5),
// --recompute (ours only: activation recomputation; the ratio then compares different work). The
// PyTorch side runs scripts/bench_train_torch.py with $PYTHON (default /work/venv/bin/python when it
// exists, else python3) and our OpenMP thread count; when Python, torch or diffusers is missing it says
// so and only our time is printed.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "autograd/optim.h"
#include "layers/dod_model.h"
#include "tests/bench/bench.h"

#define BASE_MODEL DOD_SOURCE_DIR "/tests/fixtures/sd/sd2_tiny/model"
#define PROMPT_FILE DOD_SOURCE_DIR "/tests/fixtures/dod/prompt.safetensors"

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

// The parity fixture's sizes (scripts/make_dod_fixture.py: R, ALPHA, CNN, DE, BLK, GROWTH).
static DodModelConfig fixture_sized_config(int stage) {
    DodModelConfig c = dod_model_default_config(stage);
    c.base_model_dir = BASE_MODEL;
    c.prompt_path = PROMPT_FILE;
    c.lora_rank = 4;
    c.lora_alpha = 6.0f;
    c.modulation = dod_modulation_default_config(4);
    c.modulation.cnn_channels[0] = 4;
    c.modulation.cnn_channels[1] = 6;
    c.modulation.cnn_channels[2] = 8;
    c.modulation.cnn_channels[3] = 8;
    c.modulation.feature_dim = 8;
    c.modulation.de_dim = 12;
    c.modulation.block_dim = 6;
    c.detail_growth = 2;
    return c;
}

// The PyTorch reference's median ms (scripts/bench_train_torch.py), negative when unavailable.
static double torch_ms(int stage, int batch, int crop, int iters, int threads) {
    char args[256];
    snprintf(args, sizeof args, "--stage %d --batch %d --crop %d --iters %d --threads %d", stage, batch, crop, iters,
             threads);
    return bench_torch_ms("bench_train_torch.py", args, NULL);
}

// One training step as train/loop.c runs it (= loss value; writes the parameters and optimizer state).
static float train_step(DodModel *m, AdamW *opt, Tensor **trainable, int n, Tensor *lq, Tensor *hq, uint64_t seed) {
    DodLoss l = dod_model_forward_loss(m, lq, hq, seed);
    float loss = tensor_f32(l.total)[0];
    ag_backward(l.total);
    ag_step_reset();
    clip_grad_norm(trainable, n, 1.0);
    adamw_step(opt, opt->cfg.lr);
    for (int i = 0; i < n; i++) tensor_zero_grad(trainable[i]);
    return loss;
}

static int bench_train_main(int argc, char **argv) {
    int stage = 1, batch = 2, crop = 32, iters = 5;
    bool recompute = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--stage") && i + 1 < argc) stage = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--batch") && i + 1 < argc) batch = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--crop") && i + 1 < argc) crop = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--iters") && i + 1 < argc) iters = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--recompute")) recompute = true;
        else {
            printf("usage: dod-bench train [--stage 1|2] [--batch B] [--crop S] [--iters N] [--recompute]\n");
            return strcmp(argv[i], "--help") ? 2 : 0;
        }
    }
    const char *who = "dod-bench train";
    DOD_CHECK(stage == 1 || stage == 2, who, "--stage %d: must be 1 or 2", stage);
    DOD_CHECK(batch >= 1 && iters >= 1, who, "--batch %d and --iters %d must be at least 1", batch, iters);
    DOD_CHECK(crop >= 8 && crop % 8 == 0, who, "--crop %d: must be a positive multiple of 8", crop);
    int threads = 1;
#ifdef _OPENMP
    threads = omp_get_max_threads();
#endif

    DodModelConfig cfg = fixture_sized_config(stage);
    cfg.recompute = recompute;
    DodModel *m = dod_model_create(&cfg);
    int n = dod_model_trainable(m, NULL, 0);
    Tensor **trainable = dod_malloc(sizeof(Tensor *) * (size_t)n, "trainable list");
    dod_model_trainable(m, trainable, n);
    int64_t numel = 0;
    for (int i = 0; i < n; i++) numel += trainable[i]->numel;
    AdamW *opt = adamw_new(trainable, n, adamw_defaults());

    // Inputs as the PyTorch side builds them (values do not matter for timing): hq uniform in [-1, 1],
    // lq = clamp(hq + 0.15 noise).
    int64_t shape[4] = {batch, 3, crop, crop};
    Tensor *hq = tensor_new_persistent("hq", 4, shape, DT_F32), *lq = tensor_new_persistent("lq", 4, shape, DT_F32);
    tensor_rand_uniform(hq, 1, -1.0f, 1.0f);
    tensor_randn(lq, 2, 0.15f);
    for (int64_t i = 0; i < lq->numel; i++) {
        float v = tensor_f32(lq)[i] + tensor_f32(hq)[i];
        tensor_data_f32(lq)[i] = v < -1 ? -1 : v > 1 ? 1 : v;
    }

    double *t = dod_malloc(sizeof(double) * (size_t)iters, "times");
    float loss = 0;
    for (int i = -1; i < iters; i++) {  // i == -1: warm-up
        double t0 = bench_now();
        loss = train_step(m, opt, trainable, n, lq, hq, (uint64_t)(i + 2));
        if (i >= 0) t[i] = (bench_now() - t0) * 1e3;
    }
    DOD_CHECK(isfinite(loss), who, "the loss is %g", loss);
    qsort(t, (size_t)iters, sizeof(double), cmp_double);
    double ours = t[iters / 2];
    printf("dod train step, stage %d%s: batch %d, crop %d, %d trainable tensors (%ld values), %d threads, "
           "median of %d\n",
           stage, recompute ? " (recompute)" : "", batch, crop, n, (long)numel, threads, iters);
    printf("ours:    %.3f ms   (arena peak %.1f MiB)\n", ours, arena_peak() / 1048576.0);
    double ref = recompute ? -1 : torch_ms(stage, batch, crop, iters, threads);
    if (ref > 0) {
        printf("torch:   %.3f ms\n", ref);
        printf("ratio ours/torch: %.2f\n", ours / ref);
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
