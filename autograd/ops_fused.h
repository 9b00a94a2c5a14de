// Entry points shared by fused ops across files (not part of the op API in ops.h): group norm + SiLU
// (autograd/op_norm.c), concatenation and nearest 2x upsampling (autograd/op_shape.c) as a forward
// into a caller's buffer and a backward from a caller's gradient, used by the ops themselves and by
// the fused convolutions of autograd/op_conv.c (op_group_norm_silu_conv2d, op_concat_conv2d,
// op_upsample_nearest2x_conv2d).
#pragma once
#include "autograd/ops.h"

// Saved state of group norm (+ SiLU): shapes and per-(n, group) statistics. x and gamma are the node's
// inputs, read (widened when stored in half precision) where forward and backward need them.
typedef struct {
    int64_t N, C, S;         // batch, channels, spatial size (product of the dims after C)
    int64_t G;
    float *mean, *rstd;      // [N * G], on x's device
    float eps;
} GroupNormCtx;

// Checks op's arguments (fatal naming op and the shapes) and fills c, allocating the statistics in
// the arena of x's device (call before any scratch scope: backward reads them).
void group_norm_setup(const char *op, Tensor *x, int groups, Tensor *gamma, Tensor *beta, float eps,
                      GroupNormCtx *c);
// y = silu(groupnorm(x)) (=) over c's shapes on dev, writing c's statistics; gamma, beta may be NULL.
void group_norm_silu_forward(Device dev, GroupNormCtx *c, const Tensor *x, const Tensor *gamma, const Tensor *beta,
                             float *y);
// Backward of y = silu(groupnorm(x)) given dy (on dev): accumulates (+=) into the gradients of x,
// gamma and beta (NULL allowed) that require grad. The normalised tensor is recomputed in scratch.
void group_norm_silu_backward_dy(Device dev, const GroupNormCtx *c, Tensor *x, Tensor *gamma, Tensor *beta,
                                 const float *dy);

// The concatenation of xs (checked by the caller to concatenate) along axis d, written (=) into out on dev.
void concat_forward_into(Device dev, Tensor *const *xs, int n, int d, float *out);
// Adds (+=) each slice of g, the gradient of that concatenation, to the gradient of its xs[i] where
// xs[i] requires grad.
void concat_backward_dy(Tensor *const *xs, int n, int d, const float *g);
// x [N, C, H, W] upsampled 2x (nearest), written (=) into y [N, C, 2H, 2W] on dev.
void upsample2x_forward_into(Device dev, const Tensor *x, float *y);
// grad_x += the sum of each 2x2 block of g (the upsampled gradient), when x requires grad.
void upsample2x_backward_dy(Tensor *x, const float *g);
