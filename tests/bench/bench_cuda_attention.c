// dod-bench cuda_attention: op_attention forward + backward on the GPU with each of its two CUDA
// kernels forced (attention.cu: chunked cuBLAS GEMMs, AUTO's choice for all these shapes;
// attention_fused.cu: fused, flash-style), against PyTorch's F.scaled_dot_product_attention on the
// same shapes (scripts/bench_attention_torch.py). f32 inputs, TF32 off on both sides. The shapes are
// SD 2.x's level-1 attention (5 heads of 64): self- and cross-attention at 256x256 crops (batch 7),
// and self-attention at 512x512 (batch 2) and 1024x1024 (batch 1), where the GEMMs run in chunks of
// 1638 and 409 query rows.
// A step is op_attention, an MSE loss against a fixed target and the backward into q, k and v.
//
// Options: --iters N (5), --no-torch (skip the PyTorch side).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/cuda/cuda_ops.h"
#include "autograd/ops.h"
#include "tests/bench/bench.h"

typedef struct {
    const char *name;
    int B, Lq, Lk, H, D;
} AttnShape;

static Tensor *device_input(int64_t B, int64_t L, int64_t C, uint64_t seed, bool requires_grad) {
    Tensor *t = tensor_new_persistent("input", 3, (int64_t[]){B, L, C}, DT_F32);
    tensor_randn(t, seed, 1.0f);
    t->requires_grad = requires_grad;
    tensor_move_to(t, DEV_CUDA);
    return t;
}

// Median ms of `iters` timed steps after one warm-up; *fused_calls = fused-kernel calls per step.
static double time_kernel(const AttnShape *s, CudaAttentionKernel kernel, int iters, long *fused_calls) {
    cuda_set_attention_kernel(kernel);
    int64_t C = (int64_t)s->H * s->D;
    Tensor *q = device_input(s->B, s->Lq, C, 1, true), *k = device_input(s->B, s->Lk, C, 2, true);
    Tensor *v = device_input(s->B, s->Lk, C, 3, true), *target = device_input(s->B, s->Lq, C, 4, false);
    double *ms = dod_malloc(sizeof(double) * (size_t)iters, "timings");
    long calls0 = 0;
    for (int it = 0; it <= iters; it++) {
        if (it == 1) calls0 = cuda_attention_fused_calls();
        double t0 = dod_now_seconds();
        ag_backward(op_mse_loss(op_attention(q, k, v, s->H, 0.0f), target));
        dod_cuda_synchronize("dod-bench cuda_attention");
        if (it > 0) ms[it - 1] = (dod_now_seconds() - t0) * 1e3;
        ag_step_reset();
        tensor_zero_grad(q);
        tensor_zero_grad(k);
        tensor_zero_grad(v);
    }
    *fused_calls = (cuda_attention_fused_calls() - calls0) / iters;
    double med = bench_median(ms, iters);
    free(ms);
    tensor_free(q);
    tensor_free(k);
    tensor_free(v);
    tensor_free(target);
    return med;
}

static int bench_cuda_attention_main(int argc, char **argv) {
    int iters = 5;
    bool torch = true;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("usage: dod-bench cuda_attention [--iters N] [--no-torch]\n"
                   "  op_attention forward + backward on the GPU, chunked GEMM vs fused kernels,\n"
                   "  against PyTorch's scaled_dot_product_attention (SD 2.x level-1 shapes, f32)\n");
            return 0;
        }
        if (!strcmp(argv[i], "--iters") && i + 1 < argc) iters = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--no-torch")) torch = false;
        else dod_fatal("dod-bench cuda_attention", "unknown option %s (see tests/bench/bench_cuda_attention.c)", argv[i]);
    }
    DOD_CHECK(iters > 0, "dod-bench cuda_attention", "--iters %d must be positive", iters);
    if (!dod_cuda_available()) {
        printf("SKIP: no CUDA device visible (%s)\n", dod_cuda_unavailable_reason());
        return 0;
    }
    dod_cuda_set_precision(DOD_PREC_F32);
    printf("device: %s; forward + backward, f32 (TF32 off), median of %d\n", dod_cuda_device_name(), iters);
    const AttnShape shapes[] = {
        {"self 256x256 crops", 7, 1024, 1024, 5, 64},
        {"cross 256x256 crops", 7, 1024, 77, 5, 64},
        {"self 512x512", 2, 4096, 4096, 5, 64},
        {"self 1024x1024", 1, 16384, 16384, 5, 64},
    };
    printf("%-20s %-22s %10s %10s %10s %11s %11s %11s\n", "shape", "B x Lq x Lk x H x D", "gemm ms", "fused ms",
           "torch ms", "fused/gemm", "gemm/torch", "fused/torch");
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        const AttnShape *s = &shapes[i];
        long calls_gemm, calls_fused;
        double g = time_kernel(s, CUDA_ATTENTION_GEMM, iters, &calls_gemm);
        double f = time_kernel(s, CUDA_ATTENTION_FUSED, iters, &calls_fused);
        DOD_CHECK(calls_gemm == 0 && calls_fused == 2, "dod-bench cuda_attention",
                  "%s: forced kernels ran %ld / %ld fused calls per step (want 0 / 2)", s->name, calls_gemm,
                  calls_fused);
        double t = -1;
        if (torch) {
            char args[160];
            snprintf(args, sizeof args, "--batch %d --lq %d --lk %d --heads %d --dim %d --iters %d", s->B, s->Lq, s->Lk,
                     s->H, s->D, iters);
            t = bench_torch_ms("bench_attention_torch.py", args, NULL);
        }
        char dims[64], tcol[16] = "-", gt[16] = "-", ft[16] = "-";
        snprintf(dims, sizeof dims, "%dx%dx%dx%dx%d", s->B, s->Lq, s->Lk, s->H, s->D);
        if (t > 0) {
            snprintf(tcol, sizeof tcol, "%.3f", t);
            snprintf(gt, sizeof gt, "%.2f", g / t);
            snprintf(ft, sizeof ft, "%.2f", f / t);
        }
        printf("%-20s %-22s %10.3f %10.3f %10s %11.2f %11s %11s\n", s->name, dims, g, f, tcol, f / g, gt, ft);
    }
    cuda_set_attention_kernel(CUDA_ATTENTION_AUTO);
    dod_cuda_print_mem_report("dod-bench cuda_attention");
    return 0;
}

BENCH_REGISTER(cuda_attention, "CUDA: op_attention fwd+bwd, chunked GEMM vs fused kernels vs PyTorch SDPA",
               bench_cuda_attention_main)
