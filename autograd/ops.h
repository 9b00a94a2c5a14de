// Differentiable ops. Every op:
//  - takes arena or persistent tensors (any storage dtype; read through tensor_f32, in scratch, by the
//    forward and again by the backward: no op keeps a widened copy) and returns a NEW arena tensor
//    (outputs never alias inputs, except op_reshape which shares data, and the *_into ops), f32 or, under
//    ag_set_activation_dtype(DT_BF16), bf16 by the rule in autograd/tensor.h; compute is f32;
//  - checks shapes/dtypes and aborts via dod_fatal naming the op and both shapes;
//  - dispatches on the input's device (DEV_CUDA goes to autograd/cuda when built, else fails clearly);
//  - records a tape node when ag_needs_grad(); its backward ACCUMULATES (+=) into input grads.
// Shapes below use PyTorch conventions so that checkpoints map 1:1.
#pragma once
#include "autograd/tape.h"

// ---- dense linear algebra (autograd/op_matmul.c, op_conv.c, op_attention.c) --------------------
// C = A @ B. A [..., M, K], B [K, N] (broadcast over A's leading dims) or B [..., K, N] with the
// same leading dims as A. trans_b: B given as [.., N, K] and used transposed.
Tensor *op_matmul(Tensor *a, Tensor *b, bool trans_b);
// y = x @ W^T + b. x [..., in], W [out, in] (torch.nn.Linear layout), bias [out] or NULL.
Tensor *op_linear(Tensor *x, Tensor *w, Tensor *bias);
// y + s * (x projected by w), written into y's storage, for adapters that add a projection to a
// layer's output: w [out, in] projects x [..., in] (linear, y [..., out]), w [out, in, 1, 1] projects
// x [N, in, H, W] (1x1 conv, y [N, out, H, W]). One GEMM accumulating into y (beta = 1): neither the
// projection nor the sum takes new memory. y must be an activation that nothing reads afterwards,
// neither forward code nor its producer's backward (true of op_linear / op_conv2d outputs, not of
// e.g. op_silu's); f32 or bf16 (a bf16 y is widened, updated in f32 and rounded back). The result is a
// tensor of its own on the tape: grad_y += g, and x and w get the projection's gradients scaled by s.
Tensor *op_add_projection_into(Tensor *y, Tensor *x, Tensor *w, float s);
// 2-D convolution, torch.nn.Conv2d semantics (zero padding, dilation 1, groups 1).
// x [N, Cin, H, W], w [Cout, Cin, kh, kw], bias [Cout] or NULL.
Tensor *op_conv2d(Tensor *x, Tensor *w, Tensor *bias, int stride, int padding);
// Scaled dot-product attention, multi-head. q [B, Lq, H*D], k and v [B, Lk, H*D] (self-attention
// when k == v == q's source; cross-attention otherwise). scale = 1/sqrt(D) when scale <= 0.
// Softmax is over Lk, accumulated in f32. Output [B, Lq, H*D]. Memory O(Lq * Lk) per (b, head)
// chunk at most, never the full [B, H, Lq, Lk] at once.
Tensor *op_attention(Tensor *q, Tensor *k, Tensor *v, int heads, float scale);
// op_attention with a causal mask (text encoders): Lq == Lk, query i attends to keys 0..i only
// (torch's scaled_dot_product_attention(is_causal=True), CLIP's causal_attention_mask).
Tensor *op_attention_causal(Tensor *q, Tensor *k, Tensor *v, int heads, float scale);

// ---- normalisation (autograd/op_norm.c) --------------------------------------------------------
// torch.nn.GroupNorm: x [N, C, ...], groups divides C, gamma/beta [C] or NULL, biased variance.
Tensor *op_group_norm(Tensor *x, int groups, Tensor *gamma, Tensor *beta, float eps);
// silu(op_group_norm(...)) in one op that keeps only x and the statistics for backward (the normalised
// tensor is recomputed there): one activation-sized tensor less than the two ops, same values.
Tensor *op_group_norm_silu(Tensor *x, int groups, Tensor *gamma, Tensor *beta, float eps);
// op_conv2d(op_group_norm_silu(x, ...), w, bias, stride, padding) without keeping the conv's input:
// it is made in forward scratch, and backward recomputes it from x and the statistics where the
// conv's dw needs it (dx needs only w). One activation-sized tensor less again; the same values.
// op_conv2d(op_concat(xs, n, 1), w, bias, stride, padding) without keeping the concatenation (it is
// made in forward scratch and again in backward when w needs it): for dense blocks whose convs read
// the concatenation of all earlier features. 1 <= n <= 6; the same values.
Tensor *op_concat_conv2d(Tensor *const *xs, int n, Tensor *w, Tensor *bias, int stride, int padding);
// op_conv2d(op_upsample_nearest2x(x), w, bias, stride, padding) without keeping the upsampled tensor
// (4x the input), likewise: the upsamplers of a decoder. The same values.
Tensor *op_upsample_nearest2x_conv2d(Tensor *x, Tensor *w, Tensor *bias, int stride, int padding);
Tensor *op_group_norm_silu_conv2d(Tensor *x, int groups, Tensor *gamma, Tensor *beta, float eps, Tensor *w,
                                  Tensor *bias, int stride, int padding);
// torch.nn.LayerNorm over the last dim: x [..., C], gamma/beta [C] or NULL.
Tensor *op_layer_norm(Tensor *x, Tensor *gamma, Tensor *beta, float eps);
// x / (sqrt(sum over dim 1 of x^2) + eps), x [N, C, ...]: unit channel vectors at every position
// (lpips.normalize_tensor; autograd/op_channel_norm.c).
Tensor *op_channel_normalize(Tensor *x, float eps);

// ---- activations (autograd/op_activation.c) --------------------------------------------------
Tensor *op_silu(Tensor *x);
Tensor *op_gelu(Tensor *x, bool tanh_approx);       // erf form when !tanh_approx (PyTorch default)
Tensor *op_quick_gelu(Tensor *x);                    // x * sigmoid(1.702 x) (CLIP's QuickGELU)
// diffusers GEGLU after its projection: x [..., 2C] -> hidden, gate = chunk(2, -1); hidden * gelu(gate).
Tensor *op_geglu(Tensor *x);
Tensor *op_relu(Tensor *x);
Tensor *op_leaky_relu(Tensor *x, float slope);
Tensor *op_softmax(Tensor *x);                        // over the last dim
Tensor *op_clamp(Tensor *x, float lo, float hi);      // gradient 0 outside [lo, hi]
Tensor *op_exp(Tensor *x);                            // e^x (expf; inf past ~88.7)

// ---- elementwise and shape (autograd/op_elementwise.c, op_shape.c) -------------------------------
// NumPy/PyTorch broadcasting (align from the right, size-1 dims expand).
Tensor *op_add(Tensor *a, Tensor *b);
Tensor *op_sub(Tensor *a, Tensor *b);
Tensor *op_mul(Tensor *a, Tensor *b);
// y + b (b broadcast to y's shape) written into y's storage: for residual and bias adds onto a layer's
// output. y must be an activation (f32 or bf16) nothing reads afterwards (same contract as
// op_add_projection_into); the result is a tensor of its own on the tape.
Tensor *op_add_into(Tensor *y, Tensor *b);
// s * y + b into y's storage, same contract (a scaled residual: ESRGAN's 0.2 * rdb(x) + x).
Tensor *op_scale_add_into(Tensor *y, float s, Tensor *b);
Tensor *op_scale(Tensor *x, float s);                 // s * x
Tensor *op_add_scalar(Tensor *x, float s);            // x + s
// The diagonal-Gaussian posterior sample (diffusers DiagonalGaussianDistribution.sample with the noise
// given): mean + exp(0.5 * logvar) * eps, elementwise; all three the same shape. Gradients to each
// input that requires one (eps is usually a constant). No clamping: the VAE clamps logvar first.
Tensor *op_posterior_sample(Tensor *mean, Tensor *logvar, Tensor *eps);
Tensor *op_concat(Tensor *const *xs, int n, int dim);
// Split x along dim into n pieces of the given sizes (sum == x's dim); writes out[0..n-1].
void op_split(Tensor *x, int dim, int n, const int64_t *sizes, Tensor **out);
void op_chunk(Tensor *x, int n, int dim, Tensor **out);  // n equal pieces
// Same data, new shape (one entry may be -1). Shares data; backward adds the grad back.
Tensor *op_reshape(Tensor *x, int ndim, const int64_t *shape);
Tensor *op_permute(Tensor *x, const int *perm);      // copy into the permuted layout
Tensor *op_pad2d(Tensor *x, int left, int right, int top, int bottom);  // zero padding, NCHW
Tensor *op_upsample_nearest2x(Tensor *x);            // NCHW, F.interpolate(scale_factor=2, 'nearest')
// y[n, c, i, j] = x[n, c, src_y[i], src_x[j]] for NCHW x: [N, C, out_h, out_w], indices in range
// (copied). One gather for nearest resizes, reflect padding and crops (layers/). The gradient of an
// input pixel sums the output pixels that read it, in row-major output order (deterministic).
Tensor *op_gather_hw(Tensor *x, const int64_t *src_y, int64_t out_h, const int64_t *src_x, int64_t out_w);
Tensor *op_global_avg_pool(Tensor *x);               // [N, C, H, W] -> [N, C]
// torch.nn.MaxPool2d(kernel, stride), no padding, floor sizes; NCHW (autograd/op_pool.c).
Tensor *op_max_pool2d(Tensor *x, int kernel, int stride);
// Rows of table [V, D] selected by ids (n of them, each in [0, V)) -> [n, D].
Tensor *op_embedding(Tensor *table, const int64_t *ids, int n);
// diffusers get_timestep_embedding(timesteps, dim, flip_sin_to_cos, downscale_freq_shift,
// scale=1, max_period=10000) -> [n, dim]. Constant w.r.t. everything (no node recorded).
Tensor *op_timestep_embedding(const float *timesteps, int n, int dim, bool flip_sin_to_cos,
                              float freq_shift);

// ---- reductions and losses (autograd/op_reduce.c, op_loss.c) -----------------------------------
Tensor *op_sum(Tensor *x);                            // scalar [1]
Tensor *op_mean(Tensor *x);                           // scalar [1]
Tensor *op_mse_loss(Tensor *pred, Tensor *target);    // mean((p - t)^2), scalar; grads to both
Tensor *op_l1_loss(Tensor *pred, Tensor *target);     // mean(|p - t|), scalar; sign(0) = 0
// Mean SSIM of x vs y, [N, C, H, W]: per channel, 11x11 Gaussian window (sigma 1.5), 'valid'
// region, K1 = 0.01, K2 = 0.03, C1 = (K1*data_range)^2, C2 = (K2*data_range)^2, population
// statistics (pytorch_msssim.ssim semantics). The SSIM loss is 1 - op_ssim. scalar [1].
Tensor *op_ssim(Tensor *x, Tensor *y, float data_range);
