// Full reductions to a scalar [1]: op_sum and op_mean, accumulated in double.
#include "autograd/cuda/cuda_ops.h"
#include "autograd/ops_cpu_util.h"

// grad_x += grad_out[0] * scale (scale 1 for the sum, 1/n for the mean).
static void reduce_backward(AgNode *node) {
    Tensor *x = node->inputs[0];
    if (x->device == DEV_CUDA) {  // the output gradient stays on the device
        cuda_fill_grad_scalar(node->out->grad, *(const float *)node->ctx, tensor_grad(x), x->numel);
        return;
    }
    float scale = *(const float *)node->ctx, v = node->out->grad[0] * scale;
    float *gx = tensor_grad(x);
#pragma omp parallel for if (x->numel > OPS_PARALLEL_MIN)
    for (int64_t i = 0; i < x->numel; i++) gx[i] += v;
}

static Tensor *reduce(const char *op, Tensor *x, bool mean) {
    Device dev = ops_device(op, 1, &x);
    if (mean && x->numel == 0) dod_fatal(op, "mean of the empty input %s", shape_str(x));
    int64_t one = 1;
    Tensor *out = tensor_new_on(dev, 1, &one, DT_F32);
    if (dev == DEV_CUDA) {
        cuda_reduce_sum(REDUCE_SUM, tensor_f32(x), NULL, x->numel, mean ? 1.0f / (float)x->numel : 1.0f, tensor_data_f32(out));
    } else {
        double s = ops_reduce_cpu(REDUCE_SUM, tensor_f32(x), NULL, x->numel);
        tensor_data_f32(out)[0] = (float)(mean ? s / (double)x->numel : s);
    }
    if (ag_needs_grad(1, &x))
        *(float *)ag_record(op, reduce_backward, out, 1, &x, sizeof(float)) = mean ? 1.0f / (float)x->numel : 1.0f;
    return out;
}

Tensor *op_sum(Tensor *x) { return reduce("op_sum", x, false); }
Tensor *op_mean(Tensor *x) { return reduce("op_mean", x, true); }
