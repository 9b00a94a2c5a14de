// CUDA kernel entry points behind the op API (autograd/op_*.c dispatch here for DEV_CUDA inputs),
// and the device check every op makes first. Pointers are device memory, shapes are host values.
// Each entry says whether it writes (=) or accumulates (+=), mirroring the *_cpu_* kernel it
// replaces. Device scalars (loss values, their gradients) stay on the device: no host sync.
// Without CUDA the entries are stubs that fail naming the call (see cuda_backend.h).
#pragma once
#include <stdio.h>

#include "autograd/cuda/cuda_backend.h"
#include "autograd/kernel_math.h"
#include "autograd/profile.h"

// The device all (non-NULL) inputs of `op` live on; mixed devices fail naming the op and each input,
// as does an input whose storage an in-place op has overwritten. Also where every op's forward starts
// for the DOD_PROFILE profile (autograd/profile.h).
static inline Device ops_device(const char *op, int n, Tensor *const *ts) {
    Device dev = DEV_CPU;
    bool seen = false, mixed = false;
    for (int i = 0; i < n; i++) {
        if (!ts[i]) continue;
        if (ts[i]->overwritten)
            dod_fatal(op, "input %d %s was overwritten by an in-place op (op_add_into, op_add_projection_into, ...): "
                      "use the tensor that op returned", i, shape_str(ts[i]));
        if (seen && ts[i]->device != dev) mixed = true;
        dev = seen ? dev : ts[i]->device;
        seen = true;
    }
    if (mixed) {
        char buf[256];
        int len = 0;
        for (int i = 0; i < n && len < 200; i++)
            if (ts[i])
                len += snprintf(buf + len, sizeof buf - (size_t)len, "%s%s %s", len ? ", " : "",
                                ts[i]->device == DEV_CUDA ? "CUDA" : "CPU", shape_str(ts[i]));
        dod_fatal(op, "inputs on different devices (%s): the CUDA backend needs every input on one device "
                  "(move them with tensor_to_device)", buf);
    }
    if (dev == DEV_CUDA && !dod_cuda_available())
        dod_fatal(op, "inputs are CUDA tensors but the CUDA backend cannot run: %s", dod_cuda_unavailable_reason());
    for (int i = 0; dev == DEV_CUDA && i < n; i++)  // a header without storage would fault inside a kernel
        if (ts[i] && ts[i]->numel > 0 && !ts[i]->data)
            dod_fatal(op, "input %d is a CUDA tensor %s without device memory", i, shape_str(ts[i]));
    op_profile_forward(op, dev);
    return dev;
}

DOD_CUDA_API_BEGIN

// ---- elementwise (elementwise.cu) -------------------------------------------------------------
// out = a (op) b over a broadcast plan of ndim axes (shape; element strides sa/sb, 0 on broadcast
// axes). Writes (=).
DOD_CUDA_API(void, cuda_ew_binary, (EwKind kind, int ndim, const int64_t *shape, const float *a, const int64_t *sa,
                                    const float *b, const int64_t *sb, float *out))
// grad_t[j] += sign * sum of g over the axes where t's stride st is 0 (g contiguous with strides so).
DOD_CUDA_API(void, cuda_bcast_reduce, (int ndim, const int64_t *shape, const int64_t *so, const float *g,
                                       const int64_t *st, float sign, float *grad_t, int64_t t_numel))
// y = mul * x + add. Writes (=).
DOD_CUDA_API(void, cuda_affine, (const float *x, float mul, float add, float *y, int64_t n))
// z = mean + exp(0.5 logvar) eps (=); backward: grad_logvar += g eps 0.5 exp(0.5 logvar), grad_eps +=
// g exp(0.5 logvar) (NULL skips one). op_posterior_sample adds grad_mean += g with cuda_axpy.
DOD_CUDA_API(void, cuda_posterior_sample_forward, (const float *mean, const float *logvar, const float *eps, float *z,
                                                   int64_t n))
DOD_CUDA_API(void, cuda_posterior_sample_backward, (const float *g, const float *logvar, const float *eps,
                                                    float *grad_logvar, float *grad_eps, int64_t n))

// ---- activations (activation.cu; kinds and formulas: autograd/kernel_math.h) -------------------------
DOD_CUDA_API(void, cuda_act_forward, (ActKind kind, float p0, float p1, const float *x, float *y, int64_t n)) // =
DOD_CUDA_API(void, cuda_act_backward, (ActKind kind, float p0, float p1, const float *x, const float *g, float *gx,
                                       int64_t n))                                                           // +=
DOD_CUDA_API(void, cuda_geglu_forward, (const float *x, float *y, int64_t rows, int64_t half))              // =
DOD_CUDA_API(void, cuda_geglu_backward, (const float *x, const float *g, float *gx, int64_t rows, int64_t half))  // +=
DOD_CUDA_API(void, cuda_softmax_forward, (const float *x, float *y, int64_t rows, int64_t cols))            // =
DOD_CUDA_API(void, cuda_softmax_backward, (const float *y, const float *g, float *gx, int64_t rows, int64_t cols))  // +=

// ---- normalisation (norm.cu) -----------------------------------------------------------------------
// Group norm over x [N, C, S] with G groups; layer norm is the case N = rows, C = cols, G = 1, S = 1
// with gamma/beta per column. mean/rstd [N*G] written (=), y written (=); statistics in f32 two-pass
// per block. Backward accumulates (+=) into dx, dgamma, dbeta (NULL skips one).
DOD_CUDA_API(void, cuda_group_norm_forward, (const float *x, const float *gamma, const float *beta, float *y,
                                             float *mean, float *rstd, int64_t N, int64_t C, int64_t S, int64_t G,
                                             float eps))
DOD_CUDA_API(void, cuda_group_norm_backward, (const float *x, const float *gamma, const float *mean,
                                              const float *rstd, const float *dy, float *dx, float *dgamma,
                                              float *dbeta, int64_t N, int64_t C, int64_t S, int64_t G))

// ---- reductions and losses (reduce.cu) -------------------------------------------------------------
// out[0] = scale * sum_i reduce_term(kind, p[i], t[i]) (=; autograd/kernel_math.h: p, (p - t)^2, |p - t|, p^2;
// t unused for REDUCE_SUM and REDUCE_SQUARES).
DOD_CUDA_API(void, cuda_reduce_sum, (ReduceKind kind, const float *p, const float *t, int64_t n, float scale,
                                     float *out))
// SSIM (ssim.cu; autograd/op_loss.c's algorithm, statistics in double): out[0] = the mean SSIM over
// planes x valid-window pixels of x and y ([planes, H, W]; win: the 11 normalised Gaussian weights,
// host memory) (=). The backward accumulates (+=) g[0] * d(out)/dx into gx and /dy into gy (device
// scalar g; NULL skips one).
DOD_CUDA_API(void, cuda_ssim_forward, (const float *x, const float *y, int64_t planes, int64_t H, int64_t W,
                                       const double *win, double C1, double C2, float *out))
DOD_CUDA_API(void, cuda_ssim_backward, (const float *x, const float *y, int64_t planes, int64_t H, int64_t W,
                                        const double *win, double C1, double C2, const float *g, float *gx, float *gy))
// gx[i] += g[0] * scale (device scalar g).
DOD_CUDA_API(void, cuda_fill_grad_scalar, (const float *g, float scale, float *gx, int64_t n))
// Point-loss backward: v = point_loss_grad(l1, p - t, g[0] / n); gp += v, gt -= v (NULL skips one).
DOD_CUDA_API(void, cuda_point_loss_backward, (bool l1, const float *p, const float *t, const float *g, float *gp,
                                              float *gt, int64_t n))

// ---- GEMM (gemm.cu): row-major, same contract as gemm_f32 in autograd/gemm.h ----------------------
// C[M,N] = alpha op(A)[M,K] op(B)[K,N] + beta C, repeated over `batch` with element strides
// sa/sb/sc between consecutive problems (batch 1: strides unused). A and B have storage type
// ab_type (DT_F32, DT_BF16 or DT_F16; both the same); C is f32; accumulation is f32.
DOD_CUDA_API(void, cuda_gemm, (bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                               const void *A, int64_t lda, int64_t sa, const void *B, int64_t ldb, int64_t sb,
                               float beta, float *C, int64_t ldc, int64_t sc, int64_t batch, DType ab_type))
// y[r, :] = bias (=) for rows r; db[j] += sum_r g[r, j].
DOD_CUDA_API(void, cuda_rows_set, (float *y, const float *bias, int64_t rows, int64_t n))
DOD_CUDA_API(void, cuda_column_sums, (const float *g, int64_t rows, int64_t n, float *db))
// op_linear's forward with a bias: y[rows, out] = x[rows, in] w[out, in]^T + bias[out] (=), one
// cuBLASLt matmul with the bias epilogue. x and w have storage type ab_type (DT_F32, or both
// DT_BF16/DT_F16); bias and y are f32; f32 accumulation; math mode as cuda_gemm (TF32 only for f32
// operands in DOD_PREC_MIXED). The plan (descriptors, algorithm) is cached per shape, type, precision
// and pointer alignment; the workspace comes from the device arena. Where cuBLASLt's heuristic offers
// no algorithm, a dimension is 1, or the epilogue is switched off, y is set to the bias rows and
// cuda_gemm adds x w^T.
DOD_CUDA_API(void, cuda_linear_bias_forward, (const void *x, const void *w, const float *bias, float *y,
                                              int64_t rows, int64_t in, int64_t out, DType ab_type))
// Switch for the fused path (default on, DOD_LINEAR_EPILOGUE=0 turns it off: always rows set + GEMM),
// and which path ran so far:
// fused calls, and calls that fell back (no algorithm from the heuristic, or a dimension of 1);
// switched-off calls and in == 0 count in neither.
DOD_CUDA_API(void, cuda_set_linear_bias_epilogue, (bool on))
DOD_CUDA_API(long, cuda_linear_bias_epilogue_calls, (void))
DOD_CUDA_API(long, cuda_linear_bias_fallback_calls, (void))

// ---- convolution (conv.cu, cuDNN) ---------------------------------------------------------------------
// x [N, Cin, H, W], w [Cout, Cin, kh, kw] -> y [N, Cout, Ho, Wo]; zero padding, dilation 1.
// Forward writes (=) y (+ bias); backward accumulates (+=) into dx, dw, db (NULL skips one).
// w has storage type w_type: DT_F32, or DT_BF16/DT_F16 (a frozen weight read as-is: x and dy are
// rounded to that type, f32 compute; dw must be NULL). The algorithms are chosen once per shape and cached.
DOD_CUDA_API(void, cuda_conv2d_forward, (const int64_t *geom, const float *x, const void *w, DType w_type,
                                         const float *bias, float *y))
DOD_CUDA_API(void, cuda_conv2d_backward, (const int64_t *geom, const float *x, const void *w, DType w_type,
                                          const float *dy, float *dx, float *dw, float *db))
// Whether mixed precision hands frozen half conv weights to cuDNN as-is. Default off (DOD_CONV_HALF=1
// turns it on): they are widened to f32 as in f32 mode and TF32 runs the product, which measured
// faster (conv.cu).
DOD_CUDA_API(void, cuda_set_conv_half_weights, (bool on))
DOD_CUDA_API(bool, cuda_conv_reads_half_weights, (void))

// ---- attention (attention.cu, attention_fused.cu) -----------------------------------------------------
// q [B, Lq, H*D], k, v [B, Lk, H*D] -> out [B, Lq, H*D] (=), lse [B, H, Lq] (=) saved for backward.
// f32 softmax; never [B, H, Lq, Lk] at once. Two kernels: scores built by cuBLAS one chunk of query
// rows at a time (chunk <= 256 MiB), or fused (flash-style: online softmax, one thread per row, no
// score buffer at all; head widths 8, 16, 32, 40, 64, 80). causal (Lq == Lk): query i sees keys 0..i
// (the cuBLAS kernel only: masked scores get probability 0 there).
DOD_CUDA_API(void, cuda_attention_forward, (const float *q, const float *k, const float *v, float *out, float *lse,
                                            int64_t B, int64_t Lq, int64_t Lk, int64_t H, int64_t D, float scale,
                                            bool causal))
// Accumulates (+=) dq, dk, dv (NULL skips one) from dout, recomputing the probabilities from lse.
DOD_CUDA_API(void, cuda_attention_backward, (const float *q, const float *k, const float *v, const float *out,
                                             const float *lse, const float *dout, float *dq, float *dk, float *dv,
                                             int64_t B, int64_t Lq, int64_t Lk, int64_t H, int64_t D, float scale,
                                             bool causal))
// Which kernel runs: AUTO (default) takes the fused one where a chunk would hold fewer than 64 query
// rows (and fewer than Lq) and the head width has a fused instantiation; FUSED wherever it has one;
// GEMM never. The environment's DOD_ATTENTION=auto|fused|gemm is read at the first call unless set
// here. Counter: entry calls (forward or backward) that ran the fused kernels.
typedef enum { CUDA_ATTENTION_AUTO, CUDA_ATTENTION_FUSED, CUDA_ATTENTION_GEMM } CudaAttentionKernel;
DOD_CUDA_API(void, cuda_set_attention_kernel, (CudaAttentionKernel kernel))
DOD_CUDA_API(long, cuda_attention_fused_calls, (void))

// ---- data movement (shape.cu) ------------------------------------------------------------------------
// dst[sum c_d dst_strides_d] (= or +=) scale * src[sum c_d src_strides_d] over every coordinate c of
// shape (ndim <= 8). With accumulate each coordinate must reach a distinct dst element.
DOD_CUDA_API(void, cuda_strided_copy, (int ndim, const int64_t *shape, float *dst, const int64_t *dst_strides,
                                       const float *src, const int64_t *src_strides, float scale, bool accumulate))
DOD_CUDA_API(void, cuda_plane_means, (const float *x, float *y, int64_t planes, int64_t S))                  // =
DOD_CUDA_API(void, cuda_upsample2x_backward, (const float *g, float *gx, int64_t planes, int64_t H, int64_t W))  // +=
// op_gather_hw (autograd/kernel_math.h's gather_hw_value / gather_hw_grad): y [planes, Ho, Wo] gathered
// from x [planes, H, W] (=); gx += the backward, from the inverse indices (row_start [H + 1], rows [Ho],
// col_start [W + 1], cols [Wo]). Index arrays are device memory.
DOD_CUDA_API(void, cuda_gather_hw_forward, (const float *x, float *y, int64_t planes, int64_t H, int64_t W,
                                            const int64_t *src_y, int64_t Ho, const int64_t *src_x, int64_t Wo))
DOD_CUDA_API(void, cuda_gather_hw_backward, (const float *g, float *gx, int64_t planes, int64_t H, int64_t W,
                                             int64_t Ho, int64_t Wo, const int64_t *row_start, const int64_t *rows,
                                             const int64_t *col_start, const int64_t *cols))
DOD_CUDA_API(void, cuda_embedding_forward, (const float *table, const int64_t *ids_dev, float *y, int64_t n_ids,
                                            int64_t D))                                                      // =
DOD_CUDA_API(void, cuda_embedding_backward, (const float *g, const int64_t *ids_dev, float *grad_table,
                                             int64_t n_ids, int64_t D))                                      // +=

// ---- max pooling (pool.cu) and channel normalisation (channel_norm.cu) ------------------------------
// y[p, ho, wo] = max of the k x k window at (ho s, wo s) of plane p (first maximum; NaN wins). Writes (=).
DOD_CUDA_API(void, cuda_max_pool2d_forward, (const float *x, float *y, int64_t planes, int64_t H, int64_t W,
                                             int64_t Ho, int64_t Wo, int k, int s))
// gx[that window's argmax] += g[p, ho, wo] (atomic: windows may overlap).
DOD_CUDA_API(void, cuda_max_pool2d_backward, (const float *x, const float *g, float *gx, int64_t planes, int64_t H,
                                              int64_t W, int64_t Ho, int64_t Wo, int k, int s))
// norm[n, s] = sqrt(sum_c x^2) (=); y = x / (norm + eps) (=). x, y [N, C, S].
DOD_CUDA_API(void, cuda_channel_normalize_forward, (const float *x, float *y, float *norm, int64_t N, int64_t C,
                                                    int64_t S, float eps))
// gx += the gradient of op_channel_normalize (autograd/op_channel_norm.c) given g and the saved norms.
DOD_CUDA_API(void, cuda_channel_normalize_backward, (const float *x, const float *norm, const float *g, float *gx,
                                                     int64_t N, int64_t C, int64_t S, float eps))

DOD_CUDA_API_END
