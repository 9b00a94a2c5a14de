// Helpers shared by the dense-op tests (test_op_matmul.c, test_op_conv.c, test_op_attention.c):
// half-precision copies of test inputs and
// comparing a tensor with a double-precision reference. Include after tests/check.h.
#pragma once
#include <stdarg.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/check.h"

// Persistent copy of an f32 tensor stored as dtype (f16/bf16, rounded to nearest even).
static inline Tensor *half_copy(const Tensor *src, DType dtype, const char *name) {
    Tensor *t = tensor_new_persistent(name, src->ndim, src->shape, DT_F32);
    memcpy(t->data, src->data, (size_t)src->numel * sizeof(float));
    tensor_convert_dtype(t, dtype);
    return t;
}

// Persistent f32 tensor holding the widened values of a half-precision tensor.
static inline Tensor *widened_copy(const Tensor *half, const char *name) {
    Tensor *t = tensor_new_persistent(name, half->ndim, half->shape, DT_F32);
    memcpy(t->data, tensor_f32(half), (size_t)half->numel * sizeof(float));
    return t;
}

// A frozen half-precision weight is widened to f32 only for the duration of each op call: across
// forward (y = run(x, w)) and backward the step arena must not keep the widened copy. `bound` is what
// the arena may legitimately gain (outputs, gradients, tape nodes); the widened copy is numel(w) * 4.
static inline void check_half_weight_scratch(const char *what, Tensor *(*run)(Tensor *x, Tensor *w), Tensor *x,
                                             Tensor *w_half, size_t bound) {
    ag_step_reset();
    size_t before = arena_used();
    Tensor *y = run(x, w_half);
    size_t after_forward = arena_used() - before;
    ag_backward_from(y, NULL);
    size_t after_backward = arena_used() - before;
    CHECK(after_forward <= bound && after_backward <= 2 * bound,
          "%s: the step arena grew by %zu bytes in forward, %zu after backward (allowed %zu / %zu; the widened "
          "weight is %zu bytes)", what, after_forward, after_backward, bound, 2 * bound, (size_t)w_half->numel * 4);
    ag_step_reset();
}

// CHECKs max |got - ref| <= atol + rtol * max |ref| over n values; ref is double precision.
static inline void check_close_ref(const char *what, const float *got, const double *ref, int64_t n, double rtol,
                                   double atol) {
    double maxdiff = 0, scale = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - ref[i]);
        if (!(d <= maxdiff)) maxdiff = d;  // NaN propagates as a failure
        if (fabs(ref[i]) > scale) scale = fabs(ref[i]);
    }
    CHECK(maxdiff <= atol + rtol * scale, "%s: max |diff| %.3g vs reference scale %.3g (rtol %.1g, atol %.1g)", what,
          maxdiff, scale, rtol, atol);
}

// CHECKs two f32 buffers are equal up to rtol relative to b's scale (both computed by our code).
static inline void check_same(const char *what, const float *a, const float *b, int64_t n, double rtol) {
    double scale = 0;
    double d = max_abs_diff(a, b, n, &scale);
    CHECK(d <= rtol * scale, "%s: max |diff| %.3g vs scale %.3g (rtol %.1g)", what, d, scale, rtol);
}

// The run with a half-precision weight (output y_h, input gradient dx_h, weight gradient wh->grad)
// against the same op with that weight widened to f32 (output yw, x->grad, ww->grad): equal to 1e-6.
static inline void check_half_vs_widened(const char *op, DType dt, const float *y_h, const float *dx_h, const Tensor *x,
                                         const Tensor *yw, const Tensor *wh, const Tensor *ww) {
    char what[64];
    snprintf(what, sizeof what, "%s %s weight forward", op, dtype_name(dt));
    check_same(what, y_h, yw->data, yw->numel, 1e-6);
    snprintf(what, sizeof what, "%s %s weight dx", op, dtype_name(dt));
    check_same(what, dx_h, x->grad, x->numel, 1e-6);
    snprintf(what, sizeof what, "%s %s weight dW", op, dtype_name(dt));
    CHECK(wh->grad != NULL, "%s: half weight got no gradient", what);
    if (wh->grad) check_same(what, wh->grad, ww->grad, wh->numel, 1e-6);
}
