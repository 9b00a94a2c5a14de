// Small helpers shared by the pointwise/shape/norm/loss ops (op_norm.c, op_activation.c,
// op_elementwise.c, op_shape.c, op_reduce.c, op_loss.c, op_matmul.c): device dispatch checks, axis
// normalisation, contiguous strides, gradient accumulation (threading: autograd/parallel.h). Header-only,
// static inline.
#pragma once
#include "autograd/cuda/cuda_backend.h"
#include "autograd/kernel_math.h"
#include "autograd/ops.h"
#include "autograd/parallel.h"

// The CPU loops of op_activation.c (ActKind and the formulas: autograd/kernel_math.h), for ops that
// apply an activation inside a fused op (op_group_norm_silu).
// y = act(x) over n elements (=; y may be x). p0: leaky slope or clamp lo; p1: clamp hi.
void act_cpu_apply(ActKind kind, float p0, float p1, const float *x, float *y, int64_t n);
// gx += act'(x) * g over n elements (+=).
void act_cpu_grad(ActKind kind, float p0, float p1, const float *x, const float *g, float *gx, int64_t n);


// Axis `dim` of t (negative counts from the end) as 0..ndim-1, or fatal naming op and the shape.
static inline int ops_axis(const char *op, int dim, const Tensor *t) {
    int d = dim < 0 ? dim + t->ndim : dim;
    if (d < 0 || d >= t->ndim) dod_fatal(op, "dim %d out of range for shape %s", dim, shape_str(t));
    return d;
}

// Product of shape[from..to) (1 for an empty range).
static inline int64_t ops_prod(const int64_t *shape, int from, int to) {
    int64_t p = 1;
    for (int i = from; i < to; i++) p *= shape[i];
    return p;
}

// Row-major contiguous strides (elements) of a shape, written (=) into strides.
static inline void ops_strides(int ndim, const int64_t *shape, int64_t *strides) {
    int64_t s = 1;
    for (int i = ndim - 1; i >= 0; i--) {
        strides[i] = s;
        s *= shape[i];
    }
}

// sum_i reduce_term(kind, p[i], t[i]) over n elements in double (t unused, may be NULL, for REDUCE_SUM
// and REDUCE_SQUARES): op_sum / op_mean, the point losses and the gradient norm. Returns the value.
static inline double ops_reduce_cpu(ReduceKind kind, const float *p, const float *t, int64_t n) {
    double s = 0;
    switch (kind) {  // a loop per kind with the kind a constant: no branch inside
#define OPS_REDUCE_LOOP(K)                                                     \
    case K:                                                                    \
        _Pragma("omp parallel for reduction(+ : s) if (n > OPS_PARALLEL_MIN)") \
        for (int64_t i = 0; i < n; i++) s += reduce_term(K, p[i], t ? t[i] : 0.0f); \
        break;
        OPS_REDUCE_LOOP(REDUCE_SUM) OPS_REDUCE_LOOP(REDUCE_SQUARED_DIFF) OPS_REDUCE_LOOP(REDUCE_ABS_DIFF)
        OPS_REDUCE_LOOP(REDUCE_SQUARES)
#undef OPS_REDUCE_LOOP
    }
    return s;
}

// dst[i] += src[i] over n floats (the usual "add the gradient back" step).
static inline void ops_accumulate(float *dst, const float *src, int64_t n) {
#pragma omp parallel for if (n > OPS_PARALLEL_MIN)
    for (int64_t i = 0; i < n; i++) dst[i] += src[i];
}

// A new tensor header on y's storage, for ops that write their result into y (op_add_into,
// op_add_projection_into): y must be an f32 or bf16 activation (fatal naming op otherwise). The header
// is a tensor of its own on the tape (no gradient yet); y's data is about to be overwritten, so y is
// marked and any later op given y fails (ops_device) instead of reading the result as if it were y.
static inline Tensor *ops_overwrite_alias(const char *op, Tensor *y) {
    Tensor *owner = tensor_storage_owner(y);  // a reshape view overwrites its source's storage
    DOD_CHECK(!owner->persistent && (y->dtype == DT_F32 || y->dtype == DT_BF16), op,
              "y %s must be an f32 or bf16 activation (it is overwritten), got %s%s%s",
              y->name ? y->name : shape_str(y), dtype_name(y->dtype), owner->persistent ? " persistent" : "",
              owner != y ? " (a reshape of a parameter)" : "");
    Tensor *out = arena_alloc(sizeof(Tensor), "overwritten tensor header");
    *out = *y;  // same shape and storage
    out->grad = NULL;
    out->requires_grad = false;
    y->overwritten = true;
    owner->overwritten = true;
    return out;
}

// The f32 values an in-place op updates, given the alias from ops_overwrite_alias (inside a scratch
// scope): the alias's own storage when f32, else y's values widened into scratch; either way the op
// finishes with tensor_store_f32(alias, values), which rounds them back into the storage for bf16.
static inline float *ops_inplace_f32(Tensor *alias) {
    return alias->dtype == DT_F32 ? tensor_data_f32(alias) : (float *)tensor_f32(alias);
}

// grad_x += s * g (g: x->numel values on x's device), when x requires grad.
static inline void ops_accumulate_scaled_grad(Tensor *x, const float *g, float s) {
    if (!x->requires_grad) return;
    float *gx = tensor_grad(x);
    if (x->device == DEV_CUDA) {
        cuda_axpy(gx, g, s, x->numel);
        return;
    }
#pragma omp parallel for if (x->numel > OPS_PARALLEL_MIN)
    for (int64_t i = 0; i < x->numel; i++) gx[i] += s * g[i];
}
