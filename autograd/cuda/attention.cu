// Multi-head attention on cuBLAS, one batch element and one chunk of query rows at a time:
//   S = scale Q K^T (strided-batched over heads), P = softmax(S) in f32 with the row
//   log-sum-exp saved, O = P V. Backward recomputes P from the saved lse:
//   dV += P^T dO, dP = dO V^T, dS = P (dP - rowsum(dO * O)), dQ += scale dS K, dK += scale dS^T Q.
// Head h of a [B, L, H*D] tensor is the column block h*D, so the head stride is D and every row
// stride is H*D. The score chunk [H, rows, Lk] is capped at ATTN_CHUNK_BYTES.
// Where that chunk would hold fewer than ATTN_FUSED_BELOW_ROWS query rows (thin GEMMs, many
// launches), the fused kernels of attention_fused.cu run instead, for the head widths they are
// built for; cuda_set_attention_kernel / DOD_ATTENTION force either path. Causal attention always takes
// the chunked path: its softmax gives the keys past the query's position probability 0.
#include <stdlib.h>
#include <string.h>

#include "autograd/cuda/attention_fused.h"
#include "autograd/cuda/device.h"

#define ATTN_CHUNK_BYTES ((int64_t)256 << 20)
// AUTO's switch to the fused kernels. Deliberately low: the chunked GEMMs are measured on the GPU,
// the fused kernels not yet (docs/cuda.md); revisit with `dod-bench cuda_attention`.
#define ATTN_FUSED_BELOW_ROWS 64

// Keys row q of a causal attention sees: 0..q (all Lk otherwise).
__device__ __forceinline__ int64_t attn_keys_seen(bool causal, int64_t q, int64_t Lk) {
    return causal && q + 1 < Lk ? q + 1 : Lk;
}

// One block per (head, row) of s [H*rows, Lk]: p = softmax(s) in place, lse[h*Lq + q0 + r] = log-sum-exp.
// causal: the keys past the row's position are left out and get p = 0.
__global__ void attn_softmax_kernel(float *s, float *lse, int64_t rows, int64_t Lk, int64_t Lq, int64_t q0,
                                    bool causal) {
    int64_t hr = blockIdx.x, h = hr / rows, r = hr % rows, seen = attn_keys_seen(causal, q0 + r, Lk);
    float *sr = s + hr * Lk;
    float m = -INFINITY;
    for (int64_t j = threadIdx.x; j < seen; j += blockDim.x) m = fmaxf(m, sr[j]);
    m = dod_block_max(m);
    float sum = 0.0f;
    for (int64_t j = threadIdx.x; j < Lk; j += blockDim.x) {
        float e = j < seen ? expf(sr[j] - m) : 0.0f;
        sr[j] = e;
        sum += e;
    }
    sum = dod_block_sum(sum);
    float inv = 1.0f / sum;
    for (int64_t j = threadIdx.x; j < Lk; j += blockDim.x) sr[j] *= inv;
    if (threadIdx.x == 0) lse[h * Lq + q0 + r] = m + logf(sum);
}

// p = exp(s - lse) in place (the forward's probabilities, recomputed; 0 past the row when causal).
__global__ void attn_recompute_kernel(float *s, const float *lse, int64_t rows, int64_t Lk, int64_t Lq, int64_t q0,
                                      bool causal) {
    int64_t hr = blockIdx.x, h = hr / rows, r = hr % rows, seen = attn_keys_seen(causal, q0 + r, Lk);
    float l = lse[h * Lq + q0 + r];
    float *sr = s + hr * Lk;
    for (int64_t j = threadIdx.x; j < Lk; j += blockDim.x) sr[j] = j < seen ? expf(sr[j] - l) : 0.0f;
}

// dp <- p * (dp - delta), delta = dO[r, head h] . O[r, head h] (the softmax backward), in place.
__global__ void attn_dscores_kernel(const float *p, float *dp, const float *dout, const float *out, int64_t rows,
                                    int64_t Lk, int64_t D, int64_t HD) {
    int64_t hr = blockIdx.x, h = hr / rows, r = hr % rows;
    const float *dor = dout + r * HD + h * D, *orow = out + r * HD + h * D;
    float delta = 0.0f;
    for (int64_t d = threadIdx.x; d < D; d += blockDim.x) delta += dor[d] * orow[d];
    delta = dod_block_sum(delta);
    const float *pr = p + hr * Lk;
    float *dpr = dp + hr * Lk;
    for (int64_t j = threadIdx.x; j < Lk; j += blockDim.x) dpr[j] = pr[j] * (dpr[j] - delta);
}

static int64_t attn_chunk_rows(int64_t Lq, int64_t Lk, int64_t H) {
    int64_t rows = ATTN_CHUNK_BYTES / (H * Lk * (int64_t)sizeof(float) * 2);
    if (rows < 1) rows = 1;
    return rows < Lq ? rows : Lq;
}

static int attention_kernel = -1;  // a CudaAttentionKernel; -1: DOD_ATTENTION not read yet
static long fused_calls;

void cuda_set_attention_kernel(CudaAttentionKernel kernel) { attention_kernel = kernel; }
long cuda_attention_fused_calls(void) { return fused_calls; }

static CudaAttentionKernel attention_kernel_setting(void) {
    if (attention_kernel < 0) {
        const char *v = getenv("DOD_ATTENTION");
        if (!v || !v[0] || !strcmp(v, "auto")) attention_kernel = CUDA_ATTENTION_AUTO;
        else if (!strcmp(v, "fused")) attention_kernel = CUDA_ATTENTION_FUSED;
        else if (!strcmp(v, "gemm")) attention_kernel = CUDA_ATTENTION_GEMM;
        else dod_fatal("DOD_ATTENTION", "'%s' is not one of auto, fused, gemm", v);
    }
    return (CudaAttentionKernel)attention_kernel;
}

// The fused kernels where they are built for this head width and either forced or, under AUTO,
// where a score chunk would hold fewer than min(Lq, ATTN_FUSED_BELOW_ROWS) query rows; the chunked
// GEMMs otherwise. Counts fused calls.
static bool attention_use_fused(int64_t B, int64_t Lq, int64_t Lk, int64_t H, int64_t D, bool causal) {
    CudaAttentionKernel setting = attention_kernel_setting();
    if (causal) return false;
    int64_t thin = Lq < ATTN_FUSED_BELOW_ROWS ? Lq : ATTN_FUSED_BELOW_ROWS;
    bool fused = setting != CUDA_ATTENTION_GEMM && attention_fused_supports(B, H, D) &&
                 (setting == CUDA_ATTENTION_FUSED || attn_chunk_rows(Lq, Lk, H) < thin);
    fused_calls += fused;
    return fused;
}

// S [H, rows, Lk] = scale * Q[q0 : q0 + rows] K^T for batch element b (q, k already offset to b).
static void attn_scores(const float *qb, const float *kb, float *s, int64_t q0, int64_t rows, int64_t Lk, int64_t H,
                        int64_t D, float scale) {
    int64_t HD = H * D;
    cuda_gemm(false, true, rows, Lk, D, scale, qb + q0 * HD, HD, D, kb, HD, D, 0.0f, s, Lk, rows * Lk, H, DT_F32);
}

void cuda_attention_forward(const float *q, const float *k, const float *v, float *out, float *lse, int64_t B,
                            int64_t Lq, int64_t Lk, int64_t H, int64_t D, float scale, bool causal) {
    int64_t HD = H * D, chunk = attn_chunk_rows(Lq, Lk, H);
    if (B * Lq * HD == 0) return;
    if (attention_use_fused(B, Lq, Lk, H, D, causal)) {
        attention_fused_forward(q, k, v, out, lse, B, Lq, Lk, H, D, scale);
        return;
    }
    size_t mark = cuda_arena_mark();
    float *s = (float *)cuda_arena_alloc((size_t)(H * chunk * Lk) * sizeof(float), "attention score chunk");
    for (int64_t b = 0; b < B; b++) {
        const float *qb = q + b * Lq * HD, *kb = k + b * Lk * HD, *vb = v + b * Lk * HD;
        float *ob = out + b * Lq * HD, *lb = lse + b * H * Lq;
        for (int64_t q0 = 0; q0 < Lq; q0 += chunk) {
            int64_t rows = Lq - q0 < chunk ? Lq - q0 : chunk;
            attn_scores(qb, kb, s, q0, rows, Lk, H, D, scale);
            attn_softmax_kernel<<<(unsigned)(H * rows), 256>>>(s, lb, rows, Lk, Lq, q0, causal);
            CUDA_CHECK_LAUNCH("attn_softmax_kernel");
            // O[q0 : q0 + rows, head h] = P_h V_h
            cuda_gemm(false, false, rows, D, Lk, 1.0f, s, Lk, rows * Lk, vb, HD, D, 0.0f, ob + q0 * HD, HD, D, H,
                      DT_F32);
        }
    }
    cuda_arena_release(mark);
}

void cuda_attention_backward(const float *q, const float *k, const float *v, const float *out, const float *lse,
                             const float *dout, float *dq, float *dk, float *dv, int64_t B, int64_t Lq, int64_t Lk,
                             int64_t H, int64_t D, float scale, bool causal) {
    int64_t HD = H * D, chunk = attn_chunk_rows(Lq, Lk, H);
    if (B * Lq * HD == 0) return;
    if (attention_use_fused(B, Lq, Lk, H, D, causal)) {
        attention_fused_backward(q, k, v, out, lse, dout, dq, dk, dv, B, Lq, Lk, H, D, scale);
        return;
    }
    size_t mark = cuda_arena_mark();
    float *p = (float *)cuda_arena_alloc((size_t)(H * chunk * Lk) * sizeof(float), "attention probability chunk");
    float *dp = (float *)cuda_arena_alloc((size_t)(H * chunk * Lk) * sizeof(float), "attention dscore chunk");
    for (int64_t b = 0; b < B; b++) {
        const float *qb = q + b * Lq * HD, *kb = k + b * Lk * HD, *vb = v + b * Lk * HD;
        const float *ob = out + b * Lq * HD, *dob = dout + b * Lq * HD, *lb = lse + b * H * Lq;
        for (int64_t q0 = 0; q0 < Lq; q0 += chunk) {
            int64_t rows = Lq - q0 < chunk ? Lq - q0 : chunk;
            const float *dochunk = dob + q0 * HD;
            attn_scores(qb, kb, p, q0, rows, Lk, H, D, scale);
            attn_recompute_kernel<<<(unsigned)(H * rows), 256>>>(p, lb, rows, Lk, Lq, q0, causal);
            CUDA_CHECK_LAUNCH("attn_recompute_kernel");
            if (dv)  // dV_h [Lk, D] += P_h^T [Lk, rows] dO_h [rows, D]
                cuda_gemm(true, false, Lk, D, rows, 1.0f, p, Lk, rows * Lk, dochunk, HD, D, 1.0f, dv + b * Lk * HD, HD,
                          D, H, DT_F32);
            if (!dq && !dk) continue;
            // dP_h [rows, Lk] = dO_h V_h^T
            cuda_gemm(false, true, rows, Lk, D, 1.0f, dochunk, HD, D, vb, HD, D, 0.0f, dp, Lk, rows * Lk, H, DT_F32);
            attn_dscores_kernel<<<(unsigned)(H * rows), 64>>>(p, dp, dochunk, ob + q0 * HD, rows, Lk, D, HD);
            CUDA_CHECK_LAUNCH("attn_dscores_kernel");
            if (dq)  // dQ_h [rows, D] += scale dS_h K_h
                cuda_gemm(false, false, rows, D, Lk, scale, dp, Lk, rows * Lk, kb, HD, D, 1.0f, dq + b * Lq * HD + q0 * HD,
                          HD, D, H, DT_F32);
            if (dk)  // dK_h [Lk, D] += scale dS_h^T Q_h
                cuda_gemm(true, false, Lk, D, rows, scale, dp, Lk, rows * Lk, qb + q0 * HD, HD, D, 1.0f,
                          dk + b * Lk * HD, HD, D, H, DT_F32);
        }
    }
    cuda_arena_release(mark);
}
