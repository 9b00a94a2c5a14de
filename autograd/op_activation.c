// Activations: op_silu, op_gelu (erf and tanh forms), op_quick_gelu, op_geglu, op_relu, op_leaky_relu,
// op_clamp, op_exp, op_softmax. The per-element formulas and PyTorch's gradient conventions are autograd/kernel_math.h's
// (act_value, act_grad, geglu_*), which the CUDA kernels (autograd/cuda/activation.cu) use too.
#include "autograd/cuda/cuda_ops.h"
#include "autograd/ops_cpu_util.h"

#include <math.h>

typedef struct {
    ActKind kind;
    float p0, p1;     // leaky slope; clamp lo, hi
} ActCtx;

// One loop per kind, each calling act_value / act_grad with its kind as a constant (STMT(K)), so the
// compiler drops the switch inside them and vectorises where the formula allows.
#define ACT_LOOP(K, STMT)                                     \
    case K:                                                   \
        _Pragma("omp parallel for if (n > OPS_PARALLEL_MIN)") \
        for (int64_t i = 0; i < n; i++) STMT(K);              \
        break;
#define ACT_SWITCH(kind, STMT)                                                              \
    switch (kind) {                                                                         \
        ACT_LOOP(ACT_SILU, STMT) ACT_LOOP(ACT_GELU_ERF, STMT) ACT_LOOP(ACT_GELU_TANH, STMT) \
        ACT_LOOP(ACT_RELU, STMT) ACT_LOOP(ACT_LEAKY, STMT) ACT_LOOP(ACT_CLAMP, STMT)       \
        ACT_LOOP(ACT_EXP, STMT) ACT_LOOP(ACT_QUICK_GELU, STMT)                              \
    }

void act_cpu_apply(ActKind kind, float p0, float p1, const float *x, float *y, int64_t n) {
#define ACT_APPLY(K) y[i] = act_value(K, p0, p1, x[i])
    ACT_SWITCH(kind, ACT_APPLY)
}

void act_cpu_grad(ActKind kind, float p0, float p1, const float *x, const float *g, float *gx, int64_t n) {
#define ACT_GRAD(K) gx[i] += act_grad(K, p0, p1, x[i], g[i])
    ACT_SWITCH(kind, ACT_GRAD)
}

// grad_x += act'(x) * g. Accumulates (+=).
static void act_backward(AgNode *node) {
    const ActCtx *c = node->ctx;
    Tensor *xt = node->inputs[0];
    Device dev = node->out->device;
    ScratchScope scratch = scratch_begin(dev);
    const float *x = tensor_f32(xt);
    if (dev == DEV_CUDA) cuda_act_backward(c->kind, c->p0, c->p1, x, node->out->grad, tensor_grad(xt), xt->numel);
    else act_cpu_grad(c->kind, c->p0, c->p1, x, node->out->grad, tensor_grad(xt), xt->numel);
    scratch_end(scratch);
}

static Tensor *activation(const char *op, ActKind kind, Tensor *x, float p0, float p1) {
    Device dev = ops_device(op, 1, &x);
    Tensor *out = tensor_new_activation_of(dev, x->ndim, x->shape, 1, &x);
    ScratchScope scratch = scratch_begin(dev);
    const float *x32 = tensor_f32(x);
    float *y = tensor_out_f32(out);
    if (dev == DEV_CUDA) cuda_act_forward(kind, p0, p1, x32, y, x->numel);
    else act_cpu_apply(kind, p0, p1, x32, y, x->numel);
    tensor_store_f32(out, y);
    scratch_end(scratch);
    if (ag_needs_grad(1, &x)) *(ActCtx *)ag_record(op, act_backward, out, 1, &x, sizeof(ActCtx)) = (ActCtx){kind, p0, p1};
    return out;
}

Tensor *op_silu(Tensor *x) { return activation("op_silu", ACT_SILU, x, 0, 0); }
Tensor *op_gelu(Tensor *x, bool tanh_approx) {
    return activation("op_gelu", tanh_approx ? ACT_GELU_TANH : ACT_GELU_ERF, x, 0, 0);
}
Tensor *op_quick_gelu(Tensor *x) { return activation("op_quick_gelu", ACT_QUICK_GELU, x, 0, 0); }
Tensor *op_relu(Tensor *x) { return activation("op_relu", ACT_RELU, x, 0, 0); }
Tensor *op_leaky_relu(Tensor *x, float slope) { return activation("op_leaky_relu", ACT_LEAKY, x, slope, 0); }
Tensor *op_exp(Tensor *x) { return activation("op_exp", ACT_EXP, x, 0, 0); }
Tensor *op_clamp(Tensor *x, float lo, float hi) {
    if (!(lo <= hi)) dod_fatal("op_clamp", "lo %g > hi %g (input %s)", lo, hi, shape_str(x));
    return activation("op_clamp", ACT_CLAMP, x, lo, hi);
}

// ---- GEGLU ----------------------------------------------------------------------------------------
// x [..., 2C]: hidden = x[..., :C], gate = x[..., C:]; y [..., C] = hidden * gelu_erf(gate).
typedef struct {
    int64_t rows, half;
} GegluCtx;

static void geglu_cpu_forward(const float *x, float *y, int64_t rows, int64_t half) {
#pragma omp parallel for if (rows * half > OPS_PARALLEL_MIN)
    for (int64_t r = 0; r < rows; r++) {
        const float *h = x + r * 2 * half, *gate = h + half;
        float *o = y + r * half;
        for (int64_t k = 0; k < half; k++) o[k] = geglu_value(h[k], gate[k]);
    }
}

// d hidden += g * gelu(gate); d gate += g * hidden * gelu'(gate). Accumulates (+=).
static void geglu_backward(AgNode *node) {
    const GegluCtx *c = node->ctx;
    float *gx = tensor_grad(node->inputs[0]);
    const float *g = node->out->grad;
    ScratchScope scratch = scratch_begin(node->out->device);
    const float *x = tensor_f32(node->inputs[0]);
    if (node->out->device == DEV_CUDA) {
        cuda_geglu_backward(x, g, gx, c->rows, c->half);
    } else {
        int64_t half = c->half;
#pragma omp parallel for if (c->rows * half > OPS_PARALLEL_MIN)
        for (int64_t r = 0; r < c->rows; r++) {
            const float *h = x + r * 2 * half, *gate = h + half, *gr = g + r * half;
            float *gh = gx + r * 2 * half, *gg = gh + half;
            for (int64_t k = 0; k < half; k++) {
                gh[k] += geglu_grad_hidden(gr[k], gate[k]);
                gg[k] += geglu_grad_gate(gr[k], h[k], gate[k]);
            }
        }
    }
    scratch_end(scratch);
}

Tensor *op_geglu(Tensor *x) {
    Device dev = ops_device("op_geglu", 1, &x);
    if (x->ndim < 1 || x->shape[x->ndim - 1] % 2 != 0)
        dod_fatal("op_geglu", "input %s: the last dim must be even (hidden and gate halves)", shape_str(x));
    int64_t shape[TENSOR_MAX_DIMS];
    for (int i = 0; i < x->ndim; i++) shape[i] = x->shape[i];
    int64_t half = shape[x->ndim - 1] / 2;
    shape[x->ndim - 1] = half;
    Tensor *out = tensor_new_activation_of(dev, x->ndim, shape, 1, &x);
    GegluCtx c = {half ? out->numel / half : 0, half};
    ScratchScope scratch = scratch_begin(dev);
    const float *x32 = tensor_f32(x);
    float *y = tensor_out_f32(out);
    if (dev == DEV_CUDA) cuda_geglu_forward(x32, y, c.rows, half);
    else geglu_cpu_forward(x32, y, c.rows, half);
    tensor_store_f32(out, y);
    scratch_end(scratch);
    if (ag_needs_grad(1, &x)) *(GegluCtx *)ag_record("op_geglu", geglu_backward, out, 1, &x, sizeof(GegluCtx)) = c;
    return out;
}

// ---- softmax over the last dim ----------------------------------------------------------------------
typedef struct {
    int64_t rows, cols;
} SoftmaxCtx;

// y = exp(x - max) / sum exp(x - max), row by row (max subtraction keeps exp <= 1). Writes (=).
static void softmax_cpu_forward(const float *x, float *y, int64_t rows, int64_t cols) {
#pragma omp parallel for if (rows * cols > OPS_PARALLEL_MIN)
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * cols;
        float *yr = y + r * cols;
        float m = -INFINITY;
        for (int64_t k = 0; k < cols; k++) m = xr[k] > m ? xr[k] : m;
        double sum = 0;
        for (int64_t k = 0; k < cols; k++) {
            yr[k] = expf(xr[k] - m);
            sum += yr[k];
        }
        float inv = (float)(1.0 / sum);
        for (int64_t k = 0; k < cols; k++) yr[k] *= inv;
    }
}

// grad_x += y * (g - sum_k g_k y_k), row by row, from the saved output y. Accumulates (+=).
static void softmax_backward(AgNode *node) {
    const SoftmaxCtx *c = node->ctx;
    const float *y = tensor_data_f32(node->out), *g = node->out->grad;
    float *gx = tensor_grad(node->inputs[0]);
    int64_t cols = c->cols;
    if (node->out->device == DEV_CUDA) {
        cuda_softmax_backward(y, g, gx, c->rows, cols);
        return;
    }
#pragma omp parallel for if (c->rows * cols > OPS_PARALLEL_MIN)
    for (int64_t r = 0; r < c->rows; r++) {
        const float *yr = y + r * cols, *gr = g + r * cols;
        double dot = 0;
        for (int64_t k = 0; k < cols; k++) dot += (double)gr[k] * yr[k];
        float d = (float)dot;
        for (int64_t k = 0; k < cols; k++) gx[r * cols + k] += yr[k] * (gr[k] - d);
    }
}

Tensor *op_softmax(Tensor *x) {
    Device dev = ops_device("op_softmax", 1, &x);
    if (x->ndim < 1) dod_fatal("op_softmax", "input %s has no last dim", shape_str(x));
    int64_t cols = x->shape[x->ndim - 1];
    Tensor *out = tensor_new_on(dev, x->ndim, x->shape, DT_F32);  // f32 in every activation dtype
    SoftmaxCtx c = {cols ? x->numel / cols : 0, cols};
    ScratchScope scratch = scratch_begin(dev);
    if (dev == DEV_CUDA) cuda_softmax_forward(tensor_f32(x), tensor_data_f32(out), c.rows, cols);
    else softmax_cpu_forward(tensor_f32(x), tensor_data_f32(out), c.rows, cols);
    scratch_end(scratch);
    if (ag_needs_grad(1, &x))
        *(SoftmaxCtx *)ag_record("op_softmax", softmax_backward, out, 1, &x, sizeof(SoftmaxCtx)) = c;
    return out;
}
