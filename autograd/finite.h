// Finding non-finite values (NaN, +-Inf): in weights as they are loaded from a file, and in the
// loss and gradients of a training step, so the first bad tensor is named where it appears rather
// than as "the loss is nan" many steps later.
#pragma once
#include <stdint.h>

#include "autograd/tensor.h"

// Index of the first NaN or infinity among n floats, or -1 when all are finite. Reads the exponent
// bits (no float compare), so it vectorises and -ffast-math cannot remove it.
int64_t dod_first_nonfinite_f32(const float *x, int64_t n);
// The same for t's storage in any float dtype (f32, f16, bf16; I64 tensors are always finite), on
// either device (a CUDA tensor is copied to the host first). -1 when every value is finite.
int64_t tensor_first_nonfinite(const Tensor *t);
// t's element `index` as a double (for messages: "value nan at element 12 of ...").
double tensor_value_at(const Tensor *t, int64_t index);
// The first of n tensors whose values (grads = false) or gradient buffers (grads = true; tensors
// without one are skipped) hold a non-finite value: its position in ts, with the element's index
// and value in *index and *value; -1 when all are finite. For naming what went wrong in a step.
int tensors_first_nonfinite(Tensor *const *ts, int n, bool grads, int64_t *index, double *value);
