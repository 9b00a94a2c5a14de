// dod-bench cuda_block: one training step (forward, MSE loss, backward) of an SD 2.1 UNet level-1
// block pair on the CUDA backend: a ResNet block (GroupNorm, SiLU, 3x3 convs, time embedding) and a
// transformer block (self-attention, cross-attention on a 77-token context, GEGLU feed-forward), at
// 320 channels on a 32x32 latent (256x256 crops), batch 7 by default. The same step in PyTorch
// eager (scripts/bench_cuda_block_torch.py, same shapes, same precision) gives the ratio.
// This stands in for the full UNet step until the UNet code runs on CUDA (docs/cuda.md).
//
// Options: --batch B (7), --size S (latent 32), --iters N (10), --blocks K (1: K block pairs in a
// row), --mixed (frozen bf16 weights on the mixed path and bf16 activations; default f32 trainable
// weights, f32 activations).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "autograd/cuda/cuda_ops.h"
#include "autograd/ops.h"
#include "tests/bench/bench.h"

#define C 320
#define CTX_LEN 77
#define CTX_DIM 1024
#define TEMB 1280
#define HEADS 5

typedef struct {
    Tensor *gn1_g, *gn1_b, *conv1_w, *conv1_b, *temb_w, *temb_b, *gn2_g, *gn2_b, *conv2_w, *conv2_b;
    Tensor *tgn_g, *tgn_b, *proj_in_w, *proj_in_b, *ln1_g, *ln1_b, *q1, *k1, *v1, *o1_w, *o1_b;
    Tensor *ln2_g, *ln2_b, *q2, *k2, *v2, *o2_w, *o2_b, *ln3_g, *ln3_b, *ff1_w, *ff1_b, *ff2_w, *ff2_b;
    Tensor *proj_out_w, *proj_out_b;
} BlockPair;

static Tensor *param(const char *name, int ndim, const int64_t *shape, uint64_t seed, float std, bool mixed,
                     bool matrix) {
    Tensor *t = tensor_new_persistent(name, ndim, shape, DT_F32);
    if (std > 0) tensor_randn(t, seed, std);
    else tensor_fill(t, 1.0f);
    t->requires_grad = !(mixed && matrix);
    if (mixed && matrix) tensor_convert_dtype(t, DT_BF16);
    tensor_move_to(t, DEV_CUDA);
    return t;
}

#define P1(name, n, seed, std) param(name, 1, (int64_t[]){n}, seed, std, mixed, false)
#define P2(name, a, b, seed) param(name, 2, (int64_t[]){a, b}, seed, 0.02f, mixed, true)
#define P4(name, a, b, k, seed) param(name, 4, (int64_t[]){a, b, k, k}, seed, 0.02f, mixed, true)

static void block_init(BlockPair *p, uint64_t s, bool mixed) {
    p->gn1_g = P1("gn1_g", C, 0, 0); p->gn1_b = P1("gn1_b", C, s + 1, 0.02f);
    p->conv1_w = P4("conv1_w", C, C, 3, s + 2); p->conv1_b = P1("conv1_b", C, s + 3, 0.02f);
    p->temb_w = P2("temb_w", C, TEMB, s + 4); p->temb_b = P1("temb_b", C, s + 5, 0.02f);
    p->gn2_g = P1("gn2_g", C, 0, 0); p->gn2_b = P1("gn2_b", C, s + 6, 0.02f);
    p->conv2_w = P4("conv2_w", C, C, 3, s + 7); p->conv2_b = P1("conv2_b", C, s + 8, 0.02f);
    p->tgn_g = P1("tgn_g", C, 0, 0); p->tgn_b = P1("tgn_b", C, s + 9, 0.02f);
    p->proj_in_w = P2("proj_in_w", C, C, s + 10); p->proj_in_b = P1("proj_in_b", C, s + 11, 0.02f);
    p->ln1_g = P1("ln1_g", C, 0, 0); p->ln1_b = P1("ln1_b", C, s + 12, 0.02f);
    p->q1 = P2("q1", C, C, s + 13); p->k1 = P2("k1", C, C, s + 14); p->v1 = P2("v1", C, C, s + 15);
    p->o1_w = P2("o1_w", C, C, s + 16); p->o1_b = P1("o1_b", C, s + 17, 0.02f);
    p->ln2_g = P1("ln2_g", C, 0, 0); p->ln2_b = P1("ln2_b", C, s + 18, 0.02f);
    p->q2 = P2("q2", C, C, s + 19); p->k2 = P2("k2", C, CTX_DIM, s + 20); p->v2 = P2("v2", C, CTX_DIM, s + 21);
    p->o2_w = P2("o2_w", C, C, s + 22); p->o2_b = P1("o2_b", C, s + 23, 0.02f);
    p->ln3_g = P1("ln3_g", C, 0, 0); p->ln3_b = P1("ln3_b", C, s + 24, 0.02f);
    p->ff1_w = P2("ff1_w", 8 * C, C, s + 25); p->ff1_b = P1("ff1_b", 8 * C, s + 26, 0.02f);
    p->ff2_w = P2("ff2_w", C, 4 * C, s + 27); p->ff2_b = P1("ff2_b", C, s + 28, 0.02f);
    p->proj_out_w = P2("proj_out_w", C, C, s + 29); p->proj_out_b = P1("proj_out_b", C, s + 30, 0.02f);
}

static Tensor *block_forward(const BlockPair *p, Tensor *x, Tensor *temb, Tensor *ctx) {
    int64_t N = x->shape[0], H = x->shape[2], W = x->shape[3], L = H * W;
    // ResNet block
    Tensor *h = op_conv2d(op_silu(op_group_norm(x, 32, p->gn1_g, p->gn1_b, 1e-5f)), p->conv1_w, p->conv1_b, 1, 1);
    Tensor *t = op_linear(op_silu(temb), p->temb_w, p->temb_b);
    h = op_add(h, op_reshape(t, 4, (int64_t[]){N, C, 1, 1}));
    h = op_conv2d(op_silu(op_group_norm(h, 32, p->gn2_g, p->gn2_b, 1e-5f)), p->conv2_w, p->conv2_b, 1, 1);
    Tensor *r = op_add(x, h);
    // Transformer block on [N, L, C] tokens
    Tensor *s = op_group_norm(r, 32, p->tgn_g, p->tgn_b, 1e-6f);
    s = op_reshape(op_permute(op_reshape(s, 3, (int64_t[]){N, C, L}), (int[]){0, 2, 1}), 3, (int64_t[]){N, L, C});
    s = op_linear(s, p->proj_in_w, p->proj_in_b);
    Tensor *a = op_layer_norm(s, p->ln1_g, p->ln1_b, 1e-5f);
    a = op_attention(op_linear(a, p->q1, NULL), op_linear(a, p->k1, NULL), op_linear(a, p->v1, NULL), HEADS, 0);
    s = op_add(s, op_linear(a, p->o1_w, p->o1_b));
    a = op_layer_norm(s, p->ln2_g, p->ln2_b, 1e-5f);
    a = op_attention(op_linear(a, p->q2, NULL), op_linear(ctx, p->k2, NULL), op_linear(ctx, p->v2, NULL), HEADS, 0);
    s = op_add(s, op_linear(a, p->o2_w, p->o2_b));
    a = op_linear(op_geglu(op_linear(op_layer_norm(s, p->ln3_g, p->ln3_b, 1e-5f), p->ff1_w, p->ff1_b)), p->ff2_w,
                  p->ff2_b);
    s = op_linear(op_add(s, a), p->proj_out_w, p->proj_out_b);
    s = op_reshape(op_permute(s, (int[]){0, 2, 1}), 4, (int64_t[]){N, C, H, W});
    return op_add(s, r);
}

static Tensor *device_input(int ndim, const int64_t *shape, uint64_t seed, bool requires_grad) {
    Tensor *t = tensor_new_persistent("input", ndim, shape, DT_F32);
    tensor_randn(t, seed, 1.0f);
    t->requires_grad = requires_grad;
    tensor_move_to(t, DEV_CUDA);
    return t;
}

static double torch_side(int batch, int size, int iters, int blocks, bool mixed, double *peak_gib) {
    char args[256];
    snprintf(args, sizeof args, "--batch %d --size %d --iters %d --blocks %d%s", batch, size, iters, blocks,
             mixed ? " --mixed" : "");
    return bench_torch_ms("bench_cuda_block_torch.py", args, peak_gib);
}

static int bench_cuda_block_main(int argc, char **argv) {
    int batch = 7, size = 32, iters = 10, blocks = 1;
    bool mixed = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("usage: dod-bench cuda_block [--batch B] [--size S] [--iters N] [--blocks K] [--mixed]\n"
                   "  one training step of K SD 2.1 level-1 ResNet + transformer pairs (320 channels, latent S x S,\n"
                   "  77 x 1024 context) on the GPU against PyTorch; --mixed: frozen bf16 weights\n");
            return 0;
        }
        if (!strcmp(argv[i], "--batch") && i + 1 < argc) batch = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--size") && i + 1 < argc) size = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--iters") && i + 1 < argc) iters = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--blocks") && i + 1 < argc) blocks = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--mixed")) mixed = true;
        else dod_fatal("dod-bench cuda_block", "unknown option %s (see tests/bench/bench_cuda_block.c)", argv[i]);
    }
    DOD_CHECK(batch > 0 && size > 0 && iters > 0 && blocks > 0 && blocks <= 16, "dod-bench cuda_block",
              "--batch %d --size %d --iters %d --blocks %d: all must be positive, blocks <= 16", batch, size, iters,
              blocks);
    if (!dod_cuda_available()) {
        printf("SKIP: no CUDA device visible (%s)\n", dod_cuda_unavailable_reason());
        return 0;
    }
    dod_cuda_set_precision(mixed ? DOD_PREC_MIXED : DOD_PREC_F32);
    ag_set_activation_dtype(mixed ? DT_BF16 : DT_F32);
    printf("device:  %s\n", dod_cuda_device_name());
    printf("shape:   batch %d, latent %dx%d, %d channels, %d block pair(s), %s\n", batch, size, size, C, blocks,
           mixed ? "mixed (frozen bf16 weights, bf16 activations)" : "f32 (trainable weights, TF32 off)");
    BlockPair pairs[16];
    for (int b = 0; b < blocks; b++) block_init(&pairs[b], 100 * (uint64_t)b, mixed);
    Tensor *x = device_input(4, (int64_t[]){batch, C, size, size}, 1, true);
    Tensor *target = device_input(4, (int64_t[]){batch, C, size, size}, 2, false);
    Tensor *temb = device_input(2, (int64_t[]){batch, TEMB}, 3, false);
    Tensor *ctx = device_input(3, (int64_t[]){batch, CTX_LEN, CTX_DIM}, 4, false);
    double *ms = dod_malloc(sizeof(double) * (iters + 1), "timings");
    for (int it = 0; it <= iters; it++) {  // iteration 0 warms up (algorithm choice, arena growth)
        double t0 = dod_now_seconds();
        Tensor *h = x;
        for (int b = 0; b < blocks; b++) h = block_forward(&pairs[b], h, temb, ctx);
        ag_backward(op_mse_loss(h, target));
        dod_cuda_synchronize("dod-bench cuda_block");
        if (it > 0) ms[it - 1] = (dod_now_seconds() - t0) * 1e3;
        ag_step_reset();
        if (it == 0) op_profile_reset();  // DOD_PROFILE: the timed iterations only
    }
    double ours = bench_median(ms, iters);
    DodCudaMemStats st = dod_cuda_mem_stats();
    printf("ours:    %.3f ms/step (median of %d), peak device memory %.3f GiB reserved\n", ours, iters,
           st.peak_reserved_bytes / 1073741824.0);
    double torch_peak = 0, theirs = torch_side(batch, size, iters, blocks, mixed, &torch_peak);
    if (theirs > 0)
        printf("torch:   %.3f ms/step, peak device memory %.3f GiB allocated\nratio:   %.2fx (ours / torch)\n", theirs,
               torch_peak, ours / theirs);
    free(ms);
    return 0;
}

BENCH_REGISTER(cuda_block, "CUDA: SD 2.1 level-1 ResNet+transformer training step vs PyTorch", bench_cuda_block_main)
