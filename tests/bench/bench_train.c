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
// FLOPs (autograd/profile.h's counter, 2 per multiply-add): the step's model FLOPs (forward + backward)
// and recomputed ones, the achieved rate (TFLOP/s on CUDA, GFLOP/s on the CPU) and, against the GPU's
// dense bf16 peak, MFU (and HFU when something is recomputed); the share of each op kind. With
// DOD_PROFILE=1 the per-op table at exit has the rate per op and kind.
//
// --dist: the all-reduce cost of the stage's gradient set (issue: judge the overlap). Joins the
// processes a launcher started (mpirun -np N / srun / torchrun --no-python --nproc-per-node N
// dod-bench train --dist ...; one process otherwise) through train/comm.h (--backend auto|nccl|mpi|
// tcp|none, --bucket-mb X (25), --timeout S (600)) and reports, after the plain step: the gradient
// bytes and buckets; the step with train/grad_sync.h's bucketed all-reduce (started from the tape
// hook during the backward; what dod-train runs), its exposed cost over the plain step; the
// all-reduce alone (every bucket, nothing to overlap) with its share of the plain step and bus
// bandwidth (2 (W-1)/W x bytes / time, as nccl-tests); the hidden share 1 - exposed / alone. Rank 0
// prints; PyTorch is not run.
//
// Options: --stage 1|2 (1), --batch B (2), --crop S (32, a multiple of 8), --iters N (5),
// --recompute (ours only: activation recomputation; the ratio then compares different work),
// --device cpu|cuda (cpu), --precision f32|mixed (f32), --activations f32|bf16, --base DIR, --random-weights,
// --no-torch (ours only), --torch-variants LIST (eager,best,compile). The PyTorch side runs
// scripts/bench_train_torch.py with bench_python() ($PYTHON, else python3) and our OpenMP thread count,
// on the same device and base, once per variant on a fresh model (eager: diffusers' defaults; best:
// channels_last, scaled_dot_product_attention, cudnn.benchmark; compile: best + torch.compile, where the
// installed PyTorch has them), and counts its FLOPs once; we print the ratio against each variant, and
// on CUDA the peak memory ratio (reserved against reserved). When Python, torch, diffusers or (cuda) a
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
#include "autograd/device_scalars.h"
#include "autograd/optim.h"
#include "autograd/profile.h"
#include "layers/dod_model.h"
#include "tests/dod_fixture_config.h"
#include "tests/bench/bench.h"
#include "train/comm.h"
#include "train/grad_sync.h"

// ---- the PyTorch side: one row per variant of scripts/bench_train_torch.py ---------------------------
#define TORCH_MAX_VARIANTS 4
typedef struct {
    char name[32], notes[400];
    double ms, peak_gib, reserved_gib;  // peaks < 0 when not measured (the CPU)
    bool missing;                       // notes then says why
} TorchVariant;

typedef struct {
    TorchVariant v[TORCH_MAX_VARIANTS];
    int n;
    double flops;  // PyTorch's count of one step's forward + backward, < 0 when absent
    char flops_counter[300];
} TorchRun;

static bool take_torch_line(const char *line, void *ctx) {
    TorchRun *r = ctx;
    TorchVariant v = {.peak_gib = -1, .reserved_gib = -1};
    char peak[32], reserved[32];
    if (r->n < TORCH_MAX_VARIANTS && sscanf(line, "torch_variant %31s %lf %31s %31s | %399[^\n]", v.name, &v.ms, peak,
                                            reserved, v.notes) == 5) {
        if (strcmp(peak, "-")) v.peak_gib = atof(peak);
        if (strcmp(reserved, "-")) v.reserved_gib = atof(reserved);
        r->v[r->n++] = v;
        return true;
    }
    if (r->n < TORCH_MAX_VARIANTS && sscanf(line, "torch_variant_missing %31s | %399[^\n]", v.name, v.notes) == 2) {
        v.missing = true;
        r->v[r->n++] = v;
        return true;
    }
    if (sscanf(line, "torch_flops %lf | %299[^\n]", &r->flops, r->flops_counter) == 2) return true;
    return !strncmp(line, "torch_ms ", 9) || !strncmp(line, "torch_peak_gib ", 15) || !strncmp(line, "torch_reserved_gib ", 19);
}

// Runs scripts/bench_train_torch.py; false (with the reason printed) when it could not run.
static bool torch_run(int stage, int batch, int crop, int iters, int threads, const char *device, bool mixed,
                      const char *base, const char *variants, TorchRun *r) {
    char args[1600], last[1024];
    snprintf(args, sizeof args, "--stage %d --batch %d --crop %d --iters %d --threads %d --device %s --precision %s "
             "--variants '%s' --count-flops%s%s%s", stage, batch, crop, iters, threads, device, mixed ? "mixed" : "f32",
             variants, base ? " --base '" : "", base ? base : "", base ? "'" : "");
    memset(r, 0, sizeof *r);
    r->flops = -1;
    int rc = bench_torch_run("bench_train_torch.py", args, take_torch_line, r, last, sizeof last);
    if (rc != 0 || r->n == 0) {
        printf("torch:   not available (%s: %s) - reporting ours only\n", bench_python(), last[0] ? last : "no output");
        return false;
    }
    return true;
}

// Our step's FLOPs and rate, and the share of each op kind.
static void print_flops(OpFlops f, const OpFlops *kind, double ms, Device dev) {
    bool cuda = dev == DEV_CUDA;
    double unit = cuda ? 1e12 : 1e9;
    const char *u = cuda ? "TFLOP" : "GFLOP";
    char line[600];
    op_flops_rate_line(f, ms * 1e-3, dev, line, sizeof line);
    printf("ours FLOPs per step: %.4f %s model (forward %.4f, backward %.4f), %.4f recomputed (2 per multiply-add)\n",
           op_flops_model(f) / unit, u, f.forward / unit, f.backward / unit, f.recomputed / unit);
    printf("ours rate: %s\n", line);
    printf("ours FLOPs by kind:");
    for (int k = 0; k < FLOPS_KINDS; k++)
        printf("%s %s %.1f%%", k ? "," : "", op_flops_kind_name((FlopKind)k),
               op_flops_executed(f) > 0 ? 100 * op_flops_executed(kind[k]) / op_flops_executed(f) : 0.0);
    printf(" of executed FLOPs\n");
}

// One line per PyTorch variant with the ratios against it; ours_gib < 0 when not measured.
static void print_torch(const TorchRun *r, double ours_ms, double ours_gib, OpFlops ours) {
    for (int i = 0; i < r->n; i++) {
        const TorchVariant *v = &r->v[i];
        if (v->missing) {
            printf("torch %-8s NOT RUN (%s)\n", v->name, v->notes);
            continue;
        }
        printf("torch %-8s %.3f ms", v->name, v->ms);
        if (v->reserved_gib >= 0) printf(", peak %.3f GiB allocated, %.3f GiB reserved", v->peak_gib, v->reserved_gib);
        printf(" (%s)\n", v->notes);
        printf("ratio ours/torch %s: time %.2f", v->name, ours_ms / v->ms);
        if (ours_gib >= 0 && v->reserved_gib > 0) printf(", memory %.2f (reserved / reserved)", ours_gib / v->reserved_gib);
        printf("\n");
    }
    if (r->flops >= 0)
        printf("FLOPs per step, forward + backward: ours %.6g model (%.6g with recomputation), PyTorch %.6g (%s)\n",
               op_flops_model(ours), op_flops_executed(ours), r->flops, r->flops_counter);
}

// One training step as train/loop.c runs it (= loss value; writes the parameters and optimizer state):
// the loss and the gradient norm stay in device scalars until the step's one read-back at its end
// (which also makes the step's time include its kernels); with gs, its gradients go through the
// bucketed all-reduce (one micro-batch).
static float train_step(DodModel *m, AdamW *opt, Tensor **trainable, int n, Tensor *lq, Tensor *hq, uint64_t seed,
                        DeviceScalars *scalars, GradSync *gs) {
    device_scalars_zero(scalars);
    DodLossTerms l = dod_model_forward_loss_terms(m, lq, hq, seed);
    device_scalars_add(scalars, 0, l.total);
    if (gs) grad_sync_begin(gs, 0, 1);
    ag_backward(l.total);
    if (gs) grad_sync_end(gs);
    ag_step_reset();
    clip_grad_norm_into(trainable, n, 1.0, scalars, 1);
    adamw_step(opt, opt->cfg.lr);
    for (int i = 0; i < n; i++) tensor_zero_grad(trainable[i]);
    return (float)device_scalars_read(scalars)[0];
}

// --dist: the step with the bucketed all-reduce and the all-reduce alone, against the plain step's
// median plain_ms (see the header).
static void report_allreduce(Comm *comm, DodModel *m, AdamW *opt, Tensor **trainable, int n, Tensor *lq, Tensor *hq,
                             DeviceScalars *scalars, int iters, double bucket_mb, double plain_ms) {
    GradSync *gs = grad_sync_new(trainable, n, comm, bucket_mb);
    double *t = dod_malloc(sizeof(double) * (size_t)iters, "times"), *t_alone = dod_malloc(sizeof(double) * (size_t)iters, "times");
    int early = 0;
    for (int i = -2; i < iters; i++) {   // two warm-ups: the first lays the buckets out, the second overlaps
        double t0 = dod_now_seconds();
        train_step(m, opt, trainable, n, lq, hq, (uint64_t)(i + 100), scalars, gs);
        if (i >= 0) t[i] = (dod_now_seconds() - t0) * 1e3;
        early = grad_sync_stats(gs).early_buckets;
    }
    for (int i = 0; i < iters; i++) {
        comm_barrier(comm, "dod-bench: lining the ranks up");
        double t0 = dod_now_seconds();
        grad_sync_allreduce(gs);
        t_alone[i] = (dod_now_seconds() - t0) * 1e3;
    }
    GradSyncStats st = grad_sync_stats(gs);
    double synced = bench_median(t, iters), alone = bench_median(t_alone, iters), exposed = synced - plain_ms;
    int w = comm_world(comm);
    char line[1024];
    comm_describe(comm, line, sizeof line);
    printf("all-reduce: %s\n", line);
    printf("gradient set: %d trainable tensors, %.2f MiB in %d buckets of <= %g MiB\n", n, st.bytes / 1048576.0, st.buckets,
           bucket_mb);
    printf("step with the all-reduce: %.3f ms (plain %.3f ms): exposed %.3f ms = %.1f%% of the step; %d of %d buckets "
           "started during the backward\n", synced, plain_ms, exposed, 100 * exposed / plain_ms, early, st.buckets);
    printf("all-reduce alone: %.3f ms = %.1f%% of the plain step; bus bandwidth %.2f GB/s over %d process%s\n", alone,
           100 * alone / plain_ms, alone > 0 ? 2.0 * (w - 1) / w * st.bytes / (alone * 1e6) : 0, w, w == 1 ? "" : "es");
    double hidden = 1 - exposed / alone;
    if (alone < 0.02 * plain_ms)
        printf("hidden behind the backward: not measurable (the all-reduce is under 2%% of the step, within its noise)\n");
    else printf("hidden behind the backward: %.0f%% of the all-reduce (1 - exposed / alone)\n",
                100 * (hidden < 0 ? 0 : hidden > 1 ? 1 : hidden));
    free(t);
    free(t_alone);
    grad_sync_free(gs);
}

static int usage(const char *arg) {
    printf("usage: dod-bench train [--stage 1|2] [--batch B] [--crop S] [--iters N] [--recompute]\n"
           "                       [--device cpu|cuda] [--precision f32|mixed] [--activations f32|bf16]\n"
           "                       [--base DIR [--random-weights]] [--no-torch] [--torch-variants LIST]\n"
           "                       [--dist [--backend auto|nccl|mpi|tcp|none] [--bucket-mb X] [--timeout S]]\n");
    return strcmp(arg, "--help") ? 2 : 0;
}

static int bench_train_main(int argc, char **argv) {
    int stage = 1, batch = 2, crop = 32, iters = 5;
    bool recompute = false, random_weights = false, no_torch = false, dist = false;
    const char *base = NULL, *device_name = "cpu", *precision = "f32", *activations = NULL, *backend = "auto";
    const char *torch_variants = "eager,best,compile";
    double bucket_mb = 25, timeout = 600;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--stage") && i + 1 < argc) stage = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--batch") && i + 1 < argc) batch = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--crop") && i + 1 < argc) crop = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--iters") && i + 1 < argc) iters = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--device") && i + 1 < argc) device_name = argv[++i];
        else if (!strcmp(argv[i], "--base") && i + 1 < argc) base = argv[++i];
        else if (!strcmp(argv[i], "--precision") && i + 1 < argc) precision = argv[++i];
        else if (!strcmp(argv[i], "--activations") && i + 1 < argc) activations = argv[++i];
        else if (!strcmp(argv[i], "--torch-variants") && i + 1 < argc) torch_variants = argv[++i];
        else if (!strcmp(argv[i], "--recompute")) recompute = true;
        else if (!strcmp(argv[i], "--random-weights")) random_weights = true;
        else if (!strcmp(argv[i], "--no-torch")) no_torch = true;
        else if (!strcmp(argv[i], "--dist")) dist = true;
        else if (!strcmp(argv[i], "--backend") && i + 1 < argc) backend = argv[++i];
        else if (!strcmp(argv[i], "--bucket-mb") && i + 1 < argc) bucket_mb = atof(argv[++i]);
        else if (!strcmp(argv[i], "--timeout") && i + 1 < argc) timeout = atof(argv[++i]);
        else return usage(argv[i]);
    }
    const char *who = "dod-bench train";
    DOD_CHECK(stage == 1 || stage == 2, who, "--stage %d: must be 1 or 2", stage);
    DOD_CHECK(batch >= 1 && iters >= 1, who, "--batch %d and --iters %d must be at least 1", batch, iters);
    DOD_CHECK(crop >= 8 && crop % 8 == 0, who, "--crop %d: must be a positive multiple of 8", crop);
    DOD_CHECK(strspn(torch_variants, "abcdefghijklmnopqrstuvwxyz,") == strlen(torch_variants), who,
              "--torch-variants %s: a comma-separated list of eager, best, compile", torch_variants);
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
    Comm *comm = NULL;   // --dist: joined before any CUDA call (the process's GPU is chosen by its local rank)
    if (dist) {
        static const char *names[] = {"auto", "nccl", "mpi", "tcp", "none"};
        int b = -1;
        for (int k = 0; k < 5; k++)
            if (!strcmp(backend, names[k])) b = k;
        DOD_CHECK(b >= 0, who, "--backend %s: expected auto, nccl, mpi, tcp or none", backend);
        DOD_CHECK(bucket_mb > 0 && timeout > 0, who, "--bucket-mb %g and --timeout %g must be positive", bucket_mb, timeout);
        char err[1024];
        CommOptions co = {.backend = (CommBackend)b, .cuda = cuda, .timeout_s = timeout};
        if (!(comm = comm_create(&co, err, sizeof err))) dod_fatal(who, "--dist: %s", err);
        if (comm_rank(comm) != 0 && !freopen("/dev/null", "w", stdout)) dod_fatal(who, "cannot silence rank %d", comm_rank(comm));
        no_torch = true;
    }
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
        cfg.zero_prompt = true;  // a random base has no text encoder, and the step time does not depend on it
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
    DeviceScalars *scalars = device_scalars_new(cuda ? DEV_CUDA : DEV_CPU, 2);  // loss, gradient norm

    // Inputs as the PyTorch side builds them (values do not matter for timing), on the host, then moved.
    Tensor *lq, *hq;
    dod_synthetic_pair(batch, crop, &lq, &hq);
    if (cuda) {
        tensor_move_to(hq, DEV_CUDA);
        tensor_move_to(lq, DEV_CUDA);
    }

    double *t = dod_malloc(sizeof(double) * (size_t)iters, "times");
    float loss = 0;
    OpFlops step_flops = {0, 0, 0}, step_kind[FLOPS_KINDS];  // the last step's (every step runs the same products)
    for (int i = -1; i < iters; i++) {  // i == -1: warm-up
        OpFlops f0 = op_flops_total(FLOPS_KINDS), k0[FLOPS_KINDS];
        for (int k = 0; k < FLOPS_KINDS; k++) k0[k] = op_flops_total((FlopKind)k);
        double t0 = dod_now_seconds();
        loss = train_step(m, opt, trainable, n, lq, hq, (uint64_t)(i + 2), scalars, NULL);
        if (i >= 0) t[i] = (dod_now_seconds() - t0) * 1e3;
        step_flops = op_flops_sub(op_flops_total(FLOPS_KINDS), f0);
        for (int k = 0; k < FLOPS_KINDS; k++) step_kind[k] = op_flops_sub(op_flops_total((FlopKind)k), k0[k]);
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
    double ours_gib = -1;
    if (cuda) {
        DodCudaMemStats ms = dod_cuda_mem_stats();
        ours_gib = ms.peak_reserved_bytes / 1073741824.0;
        printf("ours peak memory: %.3f GiB reserved on the device (arena peak %.3f GiB, cache peak %.3f GiB)\n", ours_gib,
               ms.arena_peak_bytes / 1073741824.0, ms.cached_peak_bytes / 1073741824.0);
    } else {
        printf("ours peak memory: arena peak %.1f MiB\n", arena_peak() / 1048576.0);
    }
    print_flops(step_flops, step_kind, ours, cuda ? DEV_CUDA : DEV_CPU);
    if (comm) report_allreduce(comm, m, opt, trainable, n, lq, hq, scalars, iters, bucket_mb, ours);
    TorchRun tr;
    if (!recompute && !no_torch &&
        torch_run(stage, batch, crop, iters, threads, device_name, mixed, base, torch_variants, &tr))
        print_torch(&tr, ours, ours_gib, step_flops);
    else
        printf("torch:   NOT RUN\n");
    free(t);
    adamw_free(opt);
    device_scalars_free(scalars);
    free(trainable);
    tensor_free(lq);
    tensor_free(hq);
    dod_model_free(m);
    comm_destroy(comm);
    return 0;
}

BENCH_REGISTER(train, "DOD training step (fixture-sized model) vs PyTorch; --dist: its gradient all-reduce", bench_train_main)
