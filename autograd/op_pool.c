// op_max_pool2d: torch.nn.MaxPool2d(kernel, stride) with no padding, dilation 1 and floor sizes
// (ceil_mode=False): Ho = (H - k) / s + 1. Ties go to the first maximum in the window (row-major), a
// NaN wins as in PyTorch; the backward routes each output gradient to that element. The argmax is
// found again in backward from x (the node's input) rather than stored.
#include "autograd/cuda/cuda_ops.h"
#include "autograd/ops_cpu_util.h"

typedef struct {
    int k, s;
} PoolCtx;

// grad_x[argmax of each window] += grad_out.
static void max_pool_backward(AgNode *node) {
    const PoolCtx *c = node->ctx;
    Tensor *x = node->inputs[0];
    int64_t planes = x->shape[0] * x->shape[1], H = x->shape[2], W = x->shape[3];
    int64_t Ho = node->out->shape[2], Wo = node->out->shape[3];
    ScratchScope scratch = scratch_begin(x->device);
    const float *xf = tensor_f32(x), *g = node->out->grad;
    float *gx = tensor_grad(x);
    if (x->device == DEV_CUDA) {
        cuda_max_pool2d_backward(xf, g, gx, planes, H, W, Ho, Wo, c->k, c->s);
    } else {
#pragma omp parallel for if (x->numel > OPS_PARALLEL_MIN)
        for (int64_t p = 0; p < planes; p++)   // a plane per thread: overlapping windows stay race-free
            for (int64_t ho = 0; ho < Ho; ho++)
                for (int64_t wo = 0; wo < Wo; wo++)
                    gx[p * H * W + max_pool_window_argmax(xf + p * H * W, W, c->k, c->s, ho, wo)] += g[(p * Ho + ho) * Wo + wo];
    }
    scratch_end(scratch);
}

Tensor *op_max_pool2d(Tensor *x, int kernel, int stride) {
    const char *op = "op_max_pool2d";
    Device dev = ops_device(op, 1, &x);
    if (x->ndim != 4 || kernel < 1 || stride < 1 || x->shape[2] < kernel || x->shape[3] < kernel)
        dod_fatal(op, "input %s must be [N, C, H, W] with H, W >= kernel %d (stride %d >= 1)", shape_str(x), kernel, stride);
    int64_t planes = x->shape[0] * x->shape[1], H = x->shape[2], W = x->shape[3];
    int64_t Ho = (H - kernel) / stride + 1, Wo = (W - kernel) / stride + 1;
    Tensor *out = tensor_new_activation_of(dev, 4, (int64_t[]){x->shape[0], x->shape[1], Ho, Wo}, 1, &x);
    ScratchScope scratch = scratch_begin(dev);
    const float *xf = tensor_f32(x);
    float *y = tensor_out_f32(out);
    if (dev == DEV_CUDA) {
        cuda_max_pool2d_forward(xf, y, planes, H, W, Ho, Wo, kernel, stride);
    } else {
#pragma omp parallel for if (x->numel > OPS_PARALLEL_MIN)
        for (int64_t p = 0; p < planes; p++)
            for (int64_t ho = 0; ho < Ho; ho++)
                for (int64_t wo = 0; wo < Wo; wo++)
                    y[(p * Ho + ho) * Wo + wo] = xf[p * H * W + max_pool_window_argmax(xf + p * H * W, W, kernel, stride, ho, wo)];
    }
    tensor_store_f32(out, y);
    scratch_end(scratch);
    if (ag_needs_grad(1, &x)) {
        PoolCtx *c = ag_record(op, max_pool_backward, out, 1, &x, sizeof(PoolCtx));
        c->k = kernel;
        c->s = stride;
    }
    return out;
}
