// op_channel_normalize: y = x / (sqrt(sum_c x^2) + eps) over the channel dim of x [N, C, ...], at
// every (n, spatial position): lpips.normalize_tensor. Backward, with n = sqrt(sum_c x^2), d = n + eps:
//   grad_x_c += g_c / d - x_c (sum_k g_k x_k) / (d^2 n)
// At n = 0 (an all-zero channel vector) the second term is taken as 0: PyTorch gets 0 * inf = NaN
// there (sqrt'(0)), which would poison a whole training step; everywhere else the two agree.
#include "autograd/cuda/cuda_ops.h"
#include "autograd/ops_cpu_util.h"

#include <math.h>

typedef struct {
    float *norm;   // [N * S]: sqrt(sum_c x^2), on x's device
    float eps;
} ChannelNormCtx;

static void shape_ncs(const Tensor *x, int64_t *N, int64_t *C, int64_t *S) {
    *N = x->shape[0];
    *C = x->shape[1];
    *S = 1;
    for (int d = 2; d < x->ndim; d++) *S *= x->shape[d];
}

static void channel_norm_backward(AgNode *node) {
    const ChannelNormCtx *c = node->ctx;
    Tensor *xt = node->inputs[0];
    int64_t N, C, S;
    shape_ncs(xt, &N, &C, &S);
    ScratchScope scratch = scratch_begin(xt->device);
    const float *x = tensor_f32(xt), *g = node->out->grad;
    float *gx = tensor_grad(xt);
    if (xt->device == DEV_CUDA) {
        cuda_channel_normalize_backward(x, c->norm, g, gx, N, C, S, c->eps);
    } else {
        float *dot = arena_alloc(sizeof(float) * (size_t)(N * S), "op_channel_normalize dot");
#pragma omp parallel for if (xt->numel > OPS_PARALLEL_MIN)
        for (int64_t n = 0; n < N; n++) {
            const float *xn = x + n * C * S, *gn = g + n * C * S;
            float *dn = dot + n * S, *gxn = gx + n * C * S;
            const float *nrm = c->norm + n * S;
            for (int64_t s = 0; s < S; s++) dn[s] = 0;
            for (int64_t ch = 0; ch < C; ch++)
                for (int64_t s = 0; s < S; s++) dn[s] += gn[ch * S + s] * xn[ch * S + s];
            for (int64_t s = 0; s < S; s++) dn[s] = channel_norm_grad_coef(dn[s], nrm[s], c->eps);   // x_c's coefficient
            for (int64_t ch = 0; ch < C; ch++)
                for (int64_t s = 0; s < S; s++)
                    gxn[ch * S + s] += channel_norm_grad(gn[ch * S + s], xn[ch * S + s], nrm[s], c->eps, dn[s]);
        }
    }
    scratch_end(scratch);
}

Tensor *op_channel_normalize(Tensor *x, float eps) {
    const char *op = "op_channel_normalize";
    Device dev = ops_device(op, 1, &x);
    if (x->ndim < 2) dod_fatal(op, "input %s must be [N, C, ...]", shape_str(x));
    int64_t N, C, S;
    shape_ncs(x, &N, &C, &S);
    Tensor *out = tensor_new_activation_of(dev, x->ndim, x->shape, 1, &x);
    float *norm = arena_alloc_on(dev, sizeof(float) * (size_t)(N * S > 0 ? N * S : 1), "op_channel_normalize norms");
    ScratchScope scratch = scratch_begin(dev);
    const float *xf = tensor_f32(x);
    float *y = tensor_out_f32(out);
    if (dev == DEV_CUDA) {
        cuda_channel_normalize_forward(xf, y, norm, N, C, S, eps);
    } else {
#pragma omp parallel for if (x->numel > OPS_PARALLEL_MIN)
        for (int64_t n = 0; n < N; n++) {
            const float *xn = xf + n * C * S;
            float *nrm = norm + n * S, *yn = y + n * C * S;
            for (int64_t s = 0; s < S; s++) nrm[s] = 0;
            for (int64_t ch = 0; ch < C; ch++)
                for (int64_t s = 0; s < S; s++) nrm[s] += xn[ch * S + s] * xn[ch * S + s];
            for (int64_t s = 0; s < S; s++) nrm[s] = sqrtf(nrm[s]);
            for (int64_t ch = 0; ch < C; ch++)
                for (int64_t s = 0; s < S; s++) yn[ch * S + s] = channel_norm_value(xn[ch * S + s], nrm[s], eps);
        }
    }
    tensor_store_f32(out, y);
    scratch_end(scratch);
    if (ag_needs_grad(1, &x)) {
        ChannelNormCtx *c = ag_record(op, channel_norm_backward, out, 1, &x, sizeof(ChannelNormCtx));
        c->norm = norm;
        c->eps = eps;
    }
    return out;
}
