// op_attention: multi-head scaled dot-product attention, computed per (batch, head) in blocks of
// query rows so scratch memory is O(block * Lk) (flash-attention style, but with GEMM blocks).
//
// Head h of q [B, Lq, H*D] is the strided matrix q + b*Lq*HD + h*D with row stride HD, so every
// product below is one gemm_f32 call on the interleaved layout, no gather or scatter copies:
//   forward   S = scale * Q K^T        [bm, Lk]
//             P = softmax_rows(S),  lse = rowmax + log(rowsum exp(S - rowmax))   (saved, B*H*Lq floats)
//             O = P V                  [bm, D]
//   backward  P = exp(scale * Q K^T - lse)      (recomputed from q, k and lse)
//             dV += P^T dO,   dP = dO V^T,   delta = rowsum(dO * O)
//             dS = P * (dP - delta)
//             dQ += scale * dS K,   dK += scale * dS^T Q
// gemm_f32 spreads each GEMM over the OpenMP threads; the row-wise exp/softmax passes are OpenMP
// loops between the GEMMs (one thread pool for both, see autograd/gemm.c).
// Causal (op_attention_causal, Lq == Lk): query i sees keys 0..i. A block of query rows [i0, i0 + bm)
// then needs only keys [0, i0 + bm): the products above run over those, and within the block the
// scores of keys j > i are -inf before the softmax and exactly 0 after it (and after the backward's
// recomputation), so masked keys get no weight and no gradient.
#include <math.h>
#include <string.h>

#include "autograd/cuda/cuda_ops.h"
#include "autograd/dense_tuning.h"
#include "autograd/gemm.h"
#include "autograd/ops.h"
#include "autograd/parallel.h"

// Query rows per block: the S (and dP) scratch holds about this many floats (8 MiB each).
#define ATTN_BLOCK_FLOATS ((int64_t)2 << 20)

typedef struct {
    int64_t B, Lq, Lk, H, D, HD;
    float scale;
    bool causal;             // query i sees keys 0..i only (Lq == Lk)
} AttnGeom;

typedef struct {
    AttnGeom g;
    float *lse;              // [B, H, Lq] row-wise log-sum-exp of the scaled logits
} AttnCtx;


static int64_t forced_block_rows;  // 0: automatic
void attention_set_block_rows(int64_t rows) { forced_block_rows = rows > 0 ? rows : 0; }

// Row stride of the score buffers: Lk rounded up to whole 16-float vectors (see attention_rows.inc).
static int64_t attn_score_ld(const AttnGeom *g) { return (g->Lk + 15) & ~(int64_t)15; }

static int64_t attn_block_rows(const AttnGeom *g) {
    if (forced_block_rows) return forced_block_rows > g->Lq ? g->Lq : forced_block_rows;
    int64_t bm = ATTN_BLOCK_FLOATS / attn_score_ld(g);
    if (bm < 16) bm = 16;
    return bm > g->Lq ? g->Lq : bm;
}

// ---- row kernels: exp / softmax / softmax gradient -----------------------------------------------
// Instantiated from autograd/attention_rows.inc for the baseline ISA (8 lanes), AVX2+FMA (8) and
// AVX-512 (16); the variant is picked once per call from the CPU's features (as in gemm.c).
#define ROWS_VW 8
#define ROWS_SUFFIX base
#define ROWS_ATTR
#include "autograd/attention_rows.inc"
#undef ROWS_VW
#undef ROWS_SUFFIX
#undef ROWS_ATTR
#if defined(__x86_64__) && defined(__GNUC__)
#define ATTN_HAVE_X86_VARIANTS 1
#define ROWS_VW 8
#define ROWS_SUFFIX avx2
#define ROWS_ATTR __attribute__((target("avx2,fma")))
#include "autograd/attention_rows.inc"
#undef ROWS_VW
#undef ROWS_SUFFIX
#undef ROWS_ATTR
#define ROWS_VW 16
#define ROWS_SUFFIX avx512
#define ROWS_ATTR __attribute__((target("avx512f,avx2,fma")))
#include "autograd/attention_rows.inc"
#undef ROWS_VW
#undef ROWS_SUFFIX
#undef ROWS_ATTR
#endif

typedef struct {
    void (*softmax_row)(float *, int64_t, float *);
    void (*exp_minus_lse_row)(float *, int64_t, float);
    void (*softmax_grad_row)(const float *, float *, int64_t, float);
} RowKernels;

// Best ISA level the CPU supports: 0 baseline, 1 AVX2+FMA, 2 AVX-512.
static int cpu_isa_level(void) {
#ifdef ATTN_HAVE_X86_VARIANTS
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        return 2;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return 1;
#endif
    return 0;
}

static int forced_isa_level = -1;  // -1: automatic (dense_tuning.h)

bool attention_set_isa(const char *isa) {
    int want = !strcmp(isa, "auto") ? -1 : !strcmp(isa, "base") ? 0 : !strcmp(isa, "avx2") ? 1
             : !strcmp(isa, "avx512") ? 2 : -2;
    if (want == -2 || want > cpu_isa_level()) return false;
    forced_isa_level = want;
    return true;
}

static RowKernels row_kernels(void) {
    int level = forced_isa_level >= 0 ? forced_isa_level : cpu_isa_level();
#ifdef ATTN_HAVE_X86_VARIANTS
    if (level == 2) return (RowKernels){softmax_row_avx512, exp_minus_lse_row_avx512, softmax_grad_row_avx512};
    if (level == 1) return (RowKernels){softmax_row_avx2, exp_minus_lse_row_avx2, softmax_grad_row_avx2};
#endif
    (void)level;
    return (RowKernels){softmax_row_base, exp_minus_lse_row_base, softmax_grad_row_base};
}

// Rows of s [bm, Lk] (row stride lds): softmax in place and (unless lse is NULL) lse[i] written (=).
static void softmax_rows(const RowKernels *rk, float *s, int64_t bm, int64_t Lk, int64_t lds, float *lse) {
#pragma omp parallel for schedule(static) if (bm * Lk > OPS_PARALLEL_MIN)
    for (int64_t i = 0; i < bm; i++) rk->softmax_row(s + i * lds, Lk, lse ? lse + i : NULL);
}

// Rows of s [bm, Lk] (row stride lds): p = exp(s - lse[i]) in place (=).
static void exp_minus_lse_rows(const RowKernels *rk, float *s, int64_t bm, int64_t Lk, int64_t lds,
                               const float *lse) {
#pragma omp parallel for schedule(static) if (bm * Lk > OPS_PARALLEL_MIN)
    for (int64_t i = 0; i < bm; i++) rk->exp_minus_lse_row(s + i * lds, Lk, lse[i]);
}

// dS = P * (dP - delta) written (=) into dp (both row stride lds), delta[i] = sum_d dO[i, d] * O[i, d]
// (dout and out row stride ld).
static void softmax_grad_rows(const RowKernels *rk, const float *p, float *dp, int64_t bm, int64_t Lk, int64_t lds,
                              const float *dout, const float *out, int64_t D, int64_t ld) {
#pragma omp parallel for schedule(static) if (bm * Lk > OPS_PARALLEL_MIN)
    for (int64_t i = 0; i < bm; i++) {
        float delta = 0.0f;
        for (int64_t d = 0; d < D; d++) delta += dout[i * ld + d] * out[i * ld + d];
        rk->softmax_grad_row(p + i * lds, dp + i * lds, Lk, delta);
    }
}

// Keys a block of query rows [i0, i0 + bm) attends to: all Lk, or the first i0 + bm when causal.
static int64_t attn_block_keys(const AttnGeom *g, int64_t i0, int64_t bm) {
    return g->causal && i0 + bm < g->Lk ? i0 + bm : g->Lk;
}

// Causal blocks: s[i, j] = value (=) for the keys j > i0 + i of each row i of s [bm, lk] (row stride lds).
static void causal_fill(const AttnGeom *g, float *s, int64_t i0, int64_t bm, int64_t lk, int64_t lds, float value) {
    if (!g->causal) return;
    for (int64_t i = 0; i < bm; i++)
        for (int64_t j = i0 + i + 1; j < lk; j++) s[i * lds + j] = value;
}

// ---- kernels ------------------------------------------------------------------------------------
// Writes (=) out [B, Lq, HD] and, unless lse is NULL, lse [B, H, Lq].
static void op_attention_cpu_forward(const AttnGeom *g, const float *q, const float *k, const float *v, float *out,
                                  float *lse) {
    int64_t bm_max = attn_block_rows(g), HD = g->HD, lds = attn_score_ld(g);
    RowKernels rk = row_kernels();
    size_t mark = arena_mark();
    float *s = arena_alloc((size_t)(bm_max * lds) * sizeof(float), "attention scores");
    for (int64_t b = 0; b < g->B; b++)
        for (int64_t h = 0; h < g->H; h++) {
            const float *kh = k + b * g->Lk * HD + h * g->D, *vh = v + b * g->Lk * HD + h * g->D;
            for (int64_t i0 = 0; i0 < g->Lq; i0 += bm_max) {
                int64_t bm = g->Lq - i0 < bm_max ? g->Lq - i0 : bm_max, lk = attn_block_keys(g, i0, bm);
                int64_t row0 = (b * g->Lq + i0) * HD + h * g->D;
                gemm_f32(false, true, bm, lk, g->D, g->scale, q + row0, HD, kh, HD, 0.0f, s, lds);
                causal_fill(g, s, i0, bm, lk, lds, -INFINITY);
                softmax_rows(&rk, s, bm, lk, lds, lse ? lse + (b * g->H + h) * g->Lq + i0 : NULL);
                causal_fill(g, s, i0, bm, lk, lds, 0.0f);  // the softmax's exp(-inf) is clamped, not 0
                gemm_f32(false, false, bm, g->D, lk, 1.0f, s, lds, vh, HD, 0.0f, out + row0, HD);
            }
        }
    arena_release(mark);
}

// Accumulates (+=) dq, dk, dv (each [B, L, HD]; NULL skips one) from dout and the saved out, lse.
static void op_attention_cpu_backward(const AttnGeom *g, const float *q, const float *k, const float *v,
                                   const float *out, const float *lse, const float *dout, float *dq, float *dk,
                                   float *dv) {
    int64_t bm_max = attn_block_rows(g), HD = g->HD, lds = attn_score_ld(g);
    bool need_ds = dq || dk;
    RowKernels rk = row_kernels();
    size_t mark = arena_mark();
    float *p = arena_alloc((size_t)(bm_max * lds) * sizeof(float), "attention probabilities");
    float *dp = need_ds ? arena_alloc((size_t)(bm_max * lds) * sizeof(float), "attention dP") : NULL;
    for (int64_t b = 0; b < g->B; b++)
        for (int64_t h = 0; h < g->H; h++) {
            int64_t kv0 = b * g->Lk * HD + h * g->D;
            for (int64_t i0 = 0; i0 < g->Lq; i0 += bm_max) {
                int64_t bm = g->Lq - i0 < bm_max ? g->Lq - i0 : bm_max, lk = attn_block_keys(g, i0, bm);
                int64_t row0 = (b * g->Lq + i0) * HD + h * g->D;
                gemm_f32(false, true, bm, lk, g->D, g->scale, q + row0, HD, k + kv0, HD, 0.0f, p, lds);
                exp_minus_lse_rows(&rk, p, bm, lk, lds, lse + (b * g->H + h) * g->Lq + i0);
                causal_fill(g, p, i0, bm, lk, lds, 0.0f);  // masked keys: no weight, so dS = 0 there too
                if (dv) gemm_f32(true, false, lk, g->D, bm, 1.0f, p, lds, dout + row0, HD, 1.0f, dv + kv0, HD);
                if (!need_ds) continue;
                gemm_f32(false, true, bm, lk, g->D, 1.0f, dout + row0, HD, v + kv0, HD, 0.0f, dp, lds);
                softmax_grad_rows(&rk, p, dp, bm, lk, lds, dout + row0, out + row0, g->D, HD);
                if (dq) gemm_f32(false, false, bm, g->D, lk, g->scale, dp, lds, k + kv0, HD, 1.0f, dq + row0, HD);
                if (dk) gemm_f32(true, false, lk, g->D, bm, g->scale, dp, lds, q + row0, HD, 1.0f, dk + kv0, HD);
            }
        }
    arena_release(mark);
}

// The FLOPs of one of attention's products (Q K^T, P V, or one gradient product): 2 * B*H * Lq * Lk * D.
static double attention_product_flops(const AttnGeom *g) { return flops_gemm(g->B * g->H, g->Lq, g->Lk, g->D); }

static void attention_backward(AgNode *node) {
    AttnCtx *c = node->ctx;
    Tensor *q = node->inputs[0], *k = node->inputs[1], *v = node->inputs[2];
    float *dq = q->requires_grad ? tensor_grad(q) : NULL;
    float *dk = k->requires_grad ? tensor_grad(k) : NULL;
    float *dv = v->requires_grad ? tensor_grad(v) : NULL;
    ScratchScope scratch = scratch_begin(node->out->device);
    const float *q32 = tensor_f32(q), *k32 = tensor_f32(k), *v32 = tensor_f32(v), *o32 = tensor_f32(node->out);
    if (node->out->device == DEV_CUDA)
        cuda_attention_backward(q32, k32, v32, o32, c->lse, node->out->grad, dq, dk, dv, c->g.B, c->g.Lq, c->g.Lk,
                                c->g.H, c->g.D, c->g.scale, c->g.causal);
    else
        op_attention_cpu_backward(&c->g, q32, k32, v32, o32, c->lse, node->out->grad, dq, dk, dv);
    scratch_end(scratch);
    // Gradient products dV = P^T dO, dP = dO V^T (for dQ or dK), dQ = dS K, dK = dS^T Q; the scores
    // Q K^T remade from lse repeat a forward product (recomputed).
    double one = attention_product_flops(&c->g);
    int products = (dv != NULL) + (dq || dk) + (dq != NULL) + (dk != NULL);
    op_flops_backward(node->op, FLOPS_ATTENTION, products * one, one);
}

static Tensor *attention(const char *op, Tensor *q, Tensor *k, Tensor *v, int heads, float scale, bool causal) {
    Tensor *in[3] = {q, k, v};
    Device dev = ops_device(op, 3, in);
    DOD_CHECK(q->ndim == 3 && k->ndim == 3 && tensor_same_shape(k, v) && q->shape[0] == k->shape[0] &&
                  q->shape[2] == k->shape[2],
              op, "q %s, k %s, v %s: need q [B, Lq, H*D] and k, v [B, Lk, H*D]", shape_str(q), shape_str(k),
              shape_str(v));
    DOD_CHECK(heads >= 1 && q->shape[2] % heads == 0, op, "q %s: width %ld is not divisible by %d heads",
              shape_str(q), (long)q->shape[2], heads);
    AttnGeom g = {.B = q->shape[0], .Lq = q->shape[1], .Lk = k->shape[1], .H = heads, .HD = q->shape[2], .causal = causal};
    g.D = g.HD / heads;
    DOD_CHECK(g.Lk >= 1, op, "k %s has no keys", shape_str(k));
    DOD_CHECK(!causal || g.Lq == g.Lk, op, "q %s, k %s: causal attention needs as many queries as keys", shape_str(q),
              shape_str(k));
    g.scale = scale > 0 ? scale : 1.0f / sqrtf((float)g.D);
    int64_t out_shape[3] = {g.B, g.Lq, g.HD};
    Tensor *out = tensor_new_activation(dev, 3, out_shape);
    bool record = ag_needs_grad(3, in);
    size_t lse_bytes = (size_t)(g.B * g.H * g.Lq) * sizeof(float);
    // lse before the scratch scope: backward reads it. The CUDA kernel always writes it.
    float *lse = dev == DEV_CUDA ? cuda_arena_alloc(lse_bytes, "attention log-sum-exp")
                 : record        ? arena_alloc(lse_bytes, "attention log-sum-exp")
                                 : NULL;
    ScratchScope scratch = scratch_begin(dev);
    const float *q32 = tensor_f32(q), *k32 = tensor_f32(k), *v32 = tensor_f32(v);
    float *o32 = tensor_out_f32(out);
    if (dev == DEV_CUDA) cuda_attention_forward(q32, k32, v32, o32, lse, g.B, g.Lq, g.Lk, g.H, g.D, g.scale, causal);
    else op_attention_cpu_forward(&g, q32, k32, v32, o32, lse);
    tensor_store_f32(out, o32);
    scratch_end(scratch);
    // Causal attention counts the full products too (as torch.utils.flop_counter does for SDPA).
    op_flops_forward(op, FLOPS_ATTENTION, 2 * attention_product_flops(&g));
    if (record) {
        AttnCtx *c = ag_record(op, attention_backward, out, 3, in, sizeof(AttnCtx));
        c->g = g;
        c->lse = lse;
    }
    return out;
}

Tensor *op_attention(Tensor *q, Tensor *k, Tensor *v, int heads, float scale) {
    return attention("op_attention", q, k, v, heads, scale, false);
}

Tensor *op_attention_causal(Tensor *q, Tensor *k, Tensor *v, int heads, float scale) {
    return attention("op_attention_causal", q, k, v, heads, scale, true);
}
