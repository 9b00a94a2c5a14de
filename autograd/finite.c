// Non-finite detection (see autograd/finite.h).
#include "autograd/finite.h"

#include <stdlib.h>
#include <string.h>


int64_t dod_first_nonfinite_f32(const float *x, int64_t n) {
    const uint32_t *b = (const uint32_t *)(const void *)x;
    enum { BLOCK = 4096 };
    for (int64_t s = 0; s < n; s += BLOCK) {
        int64_t e = s + BLOCK < n ? s + BLOCK : n;
        uint32_t any = 0;   // a block is scanned branch-free; the exact index only when it has one
        for (int64_t i = s; i < e; i++) any |= (uint32_t)((b[i] & 0x7F800000u) == 0x7F800000u);
        if (any)
            for (int64_t i = s; i < e; i++)
                if ((b[i] & 0x7F800000u) == 0x7F800000u) return i;
    }
    return -1;
}

// 16-bit floats: all-ones exponent (bf16: 8 bits at 0x7F80, f16: 5 bits at 0x7C00).
static int64_t first_nonfinite_u16(const uint16_t *h, int64_t n, uint16_t exp_mask) {
    for (int64_t i = 0; i < n; i++)
        if ((h[i] & exp_mask) == exp_mask) return i;
    return -1;
}

// t's bytes on the host: t->data itself, or a heap copy (*owned) of a CUDA tensor's.
static const void *host_bytes(const Tensor *t, void **owned) {
    *owned = NULL;
    if (t->device == DEV_CPU) return t->data;
    size_t bytes = (size_t)t->numel * dtype_size(t->dtype);
    *owned = dod_malloc(bytes ? bytes : 1, t->name ? t->name : "non-finite check");
    device_copy(*owned, DEV_CPU, t->data, t->device, bytes);
    return *owned;
}

int64_t tensor_first_nonfinite(const Tensor *t) {
    if (t->dtype == DT_I64 || t->numel == 0) return -1;
    void *owned;
    const void *p = host_bytes(t, &owned);
    int64_t at = t->dtype == DT_F32    ? dod_first_nonfinite_f32(p, t->numel)
                 : t->dtype == DT_BF16 ? first_nonfinite_u16(p, t->numel, 0x7F80)
                                       : first_nonfinite_u16(p, t->numel, 0x7C00);
    free(owned);
    return at;
}

double tensor_value_at(const Tensor *t, int64_t index) {
    Tensor one = *t;   // a header over the one element, read through host_bytes
    size_t es = dtype_size(t->dtype);
    one.numel = 1;
    one.data = (char *)t->data + (size_t)index * es;
    void *owned;
    const void *p = host_bytes(&one, &owned);
    double v = t->dtype == DT_F32    ? ((const float *)p)[0]
               : t->dtype == DT_BF16 ? bf16_to_f32(((const uint16_t *)p)[0])
               : t->dtype == DT_F16  ? f16_to_f32(((const uint16_t *)p)[0])
                                     : (double)((const int64_t *)p)[0];
    free(owned);
    return v;
}

int tensors_first_nonfinite(Tensor *const *ts, int n, bool grads, int64_t *index, double *value) {
    for (int i = 0; i < n; i++) {
        Tensor view = *ts[i];
        if (grads) {
            if (!ts[i]->grad) continue;
            view.data = ts[i]->grad;   // gradients are f32 on the tensor's device
            view.dtype = DT_F32;
        }
        int64_t at = tensor_first_nonfinite(&view);
        if (at >= 0) {
            *index = at;
            *value = tensor_value_at(&view, at);
            return i;
        }
    }
    return -1;
}
