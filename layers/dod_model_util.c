// Helpers of the DOD model; see dod_model_util.h.
#include "layers/dod_model_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/cuda/cuda_backend.h"
#include "layers/cuda/layers_cuda.h"
#include "layers/safetensors.h"
#include "layers/sd_blocks.h"

// ---- posterior sample --------------------------------------------------------------------------------
typedef struct {
    const float *logvar, *eps;  // f32 views captured at forward time (arena or the tensors' own data)
} PosteriorCtx;

// grad_mean += g;  grad_logvar += g * eps * 0.5 * exp(0.5 * logvar)
static void posterior_backward(AgNode *node) {
    const PosteriorCtx *c = node->ctx;
    const float *g = node->out->grad;
    Tensor *mean = node->inputs[0], *logvar = node->inputs[1];
    int64_t n = node->out->numel;
    if (node->out->device == DEV_CUDA) {
        cuda_posterior_sample_backward(g, c->logvar, c->eps, mean->requires_grad ? tensor_grad(mean) : NULL,
                                       logvar->requires_grad ? tensor_grad(logvar) : NULL, n);
        return;
    }
    if (mean->requires_grad) {
        float *gm = tensor_grad(mean);
        for (int64_t i = 0; i < n; i++) gm[i] += g[i];
    }
    if (logvar->requires_grad) {
        float *gl = tensor_grad(logvar);
        for (int64_t i = 0; i < n; i++) gl[i] += g[i] * c->eps[i] * 0.5f * expf(0.5f * c->logvar[i]);
    }
}

Tensor *dod_posterior_sample(Tensor *mean, Tensor *logvar, Tensor *eps) {
    DOD_CHECK(tensor_same_shape(mean, logvar) && tensor_same_shape(mean, eps), "dod_posterior_sample",
              "mean %s, logvar %s and eps %s must have the same shape", shape_str(mean), shape_str(logvar),
              shape_str(eps));
    DOD_CHECK(mean->device == logvar->device && mean->device == eps->device, "dod_posterior_sample",
              "mean %s on %s, logvar on %s, eps on %s: all must be on one device", shape_str(mean),
              mean->device == DEV_CUDA ? "cuda" : "cpu", logvar->device == DEV_CUDA ? "cuda" : "cpu",
              eps->device == DEV_CUDA ? "cuda" : "cpu");
    const float *m = tensor_f32(mean), *lv = tensor_f32(logvar), *e = tensor_f32(eps);
    Tensor *out = tensor_new_on(mean->device, mean->ndim, mean->shape, DT_F32);
    float *o = tensor_data_f32(out);
    if (mean->device == DEV_CUDA) {
        cuda_posterior_sample_forward(m, lv, e, o, out->numel);
    } else {
        for (int64_t i = 0; i < out->numel; i++) o[i] = m[i] + expf(0.5f * lv[i]) * e[i];
    }
    Tensor *in[2] = {mean, logvar};
    if (ag_needs_grad(2, in)) {
        PosteriorCtx *c = ag_record("dod_posterior_sample", posterior_backward, out, 2, in, sizeof(PosteriorCtx));
        c->logvar = lv;
        c->eps = e;
    }
    return out;
}

// ---- eval padding ------------------------------------------------------------------------------------
// torch reflect index: i < n stays, n + k (k >= 0) maps to n - 2 - k.
static int64_t reflect(int64_t i, int64_t n) { return i < n ? i : 2 * (n - 1) - i; }

Tensor *dod_pad_reflect(Tensor *x, int pad_h, int pad_w) { return dod_pad_reflect_ex(x, pad_h, pad_w, false); }

// The gather form of padding/cropping: source row i of the output is rows[i] (likewise columns).
static Tensor *gather_rows_cols(Tensor *x, int64_t Ho, int64_t Wo, int64_t (*row)(int64_t, int64_t)) {
    int64_t H = x->shape[2], W = x->shape[3];
    int64_t *src = arena_alloc(sizeof(int64_t) * (size_t)(Ho + Wo), "dod gather indices");
    for (int64_t i = 0; i < Ho; i++) src[i] = row(i, H);
    for (int64_t j = 0; j < Wo; j++) src[Ho + j] = row(j, W);
    bool prev = ag_set_grad_enabled(false);  // eval only, as the loops (no gradient)
    Tensor *out = sd_gather_hw(x, src, Ho, src + Ho, Wo);
    ag_set_grad_enabled(prev);
    return out;
}

static int64_t identity(int64_t i, int64_t n) { return (void)n, i; }

Tensor *dod_pad_reflect_ex(Tensor *x, int pad_h, int pad_w, bool via_ops) {
    DOD_CHECK(x->ndim == 4, "dod_pad_reflect", "input %s is not [N, C, H, W]", shape_str(x));
    int64_t N = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3];
    DOD_CHECK(pad_h >= 0 && pad_w >= 0 && pad_h < H && pad_w < W, "dod_pad_reflect",
              "reflect padding (%d, %d) needs an image larger than the padding, got %s", pad_h, pad_w, shape_str(x));
    if (via_ops || x->device != DEV_CPU) return gather_rows_cols(x, H + pad_h, W + pad_w, reflect);
    Tensor *out = tensor_new4(N, C, H + pad_h, W + pad_w);
    const float *xs = tensor_f32(x);
    float *o = tensor_data_f32(out);
    int64_t Ho = H + pad_h, Wo = W + pad_w;
    for (int64_t p = 0; p < N * C; p++)
        for (int64_t i = 0; i < Ho; i++) {
            const float *row = xs + (p * H + reflect(i, H)) * W;
            float *orow = o + (p * Ho + i) * Wo;
            for (int64_t j = 0; j < Wo; j++) orow[j] = row[reflect(j, W)];
        }
    return out;
}

Tensor *dod_crop(Tensor *x, int64_t h, int64_t w) { return dod_crop_ex(x, h, w, false); }

Tensor *dod_crop_ex(Tensor *x, int64_t h, int64_t w, bool via_ops) {
    DOD_CHECK(x->ndim == 4 && h > 0 && w > 0 && h <= x->shape[2] && w <= x->shape[3], "dod_crop",
              "cannot crop %s to %ldx%ld", shape_str(x), (long)h, (long)w);
    if (via_ops || x->device != DEV_CPU) return gather_rows_cols(x, h, w, identity);
    int64_t N = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3];
    Tensor *out = tensor_new4(N, C, h, w);
    const float *xs = tensor_f32(x);
    float *o = tensor_data_f32(out);
    for (int64_t p = 0; p < N * C; p++)
        for (int64_t i = 0; i < h; i++) memcpy(o + (p * h + i) * w, xs + (p * H + i) * W, sizeof(float) * (size_t)w);
    return out;
}

// ---- small host-side helpers --------------------------------------------------------------------------
float dod_scalar_value(const Tensor *t) {
    DOD_CHECK(t->numel == 1 && t->dtype == DT_F32, "dod_scalar_value", "tensor %s (%s) is not a one-element f32 tensor",
              shape_str(t), dtype_name(t->dtype));
    float v;
    device_copy(&v, DEV_CPU, t->data, t->device, sizeof v);
    return v;
}

Tensor *dod_repeat_constant(const Tensor *t, int64_t n) {
    DOD_CHECK(t->dtype == DT_F32 && t->ndim < TENSOR_MAX_DIMS && n > 0, "dod_repeat_constant",
              "cannot repeat %s tensor %s %ld times", dtype_name(t->dtype), shape_str(t), (long)n);
    int64_t shape[TENSOR_MAX_DIMS];
    shape[0] = n;
    for (int d = 0; d < t->ndim; d++) shape[d + 1] = t->shape[d];
    Tensor *out = tensor_new_on(t->device, t->ndim + 1, shape, DT_F32);
    size_t bytes = sizeof(float) * (size_t)t->numel;
    for (int64_t i = 0; i < n; i++) device_copy(tensor_data_f32(out) + i * t->numel, t->device, t->data, t->device, bytes);
    return out;
}

// ---- reading tensors ---------------------------------------------------------------------------------
static SafeTensors *open_or_die(const char *path, const char *who) {
    char err[ST_ERR_LEN];
    SafeTensors *st;
    if (tensor_file_open(path, &st, err) != ST_OK) dod_fatal(who, "%s", err);   // safetensors or PyTorch
    return st;
}

// Copies entry e of st into dst (f32, same numel) (=).
static void copy_entry(SafeTensors *st, const StEntry *e, Tensor *dst, const char *who) {
    char err[ST_ERR_LEN];
    Tensor *src;
    if (safetensors_tensor(st, e, DT_F32, NULL, &src, err) != ST_OK) dod_fatal(who, "%s", err);
    device_copy(dst->data, dst->device, src->data, DEV_CPU, sizeof(float) * (size_t)dst->numel);
    tensor_free(src);
}

Tensor *dod_load_prompt(const char *path, int want_dim) {
    const char *who = "dod prompt embedding";
    SafeTensors *st = open_or_die(path, who);
    const StEntry *e = safetensors_find(st, "prompt_embeds");
    if (!e) {
        DOD_CHECK(safetensors_count(st) == 1, who,
                  "%s: holds %d tensors and none is named prompt_embeds: expected one [L, D] tensor", path,
                  safetensors_count(st));
        e = safetensors_entry(st, 0);
    }
    bool ok = (e->ndim == 2 || (e->ndim == 3 && e->shape[0] == 1)) && e->shape[e->ndim - 2] > 0;
    DOD_CHECK(ok, who, "%s: tensor %s has %d dims (shape[0] %ld): expected [L, D] or [1, L, D]", path, e->name,
              e->ndim, (long)e->shape[0]);
    int64_t L = e->shape[e->ndim - 2], D = e->shape[e->ndim - 1];
    DOD_CHECK(D == want_dim, who, "%s: tensor %s is %ld wide, the UNet's cross_attention_dim is %d", path, e->name,
              (long)D, want_dim);
    int64_t shape[2] = {L, D};
    Tensor *t = tensor_new_persistent("prompt_embeds", 2, shape, DT_F32);
    copy_entry(st, e, t, who);
    safetensors_close(st);
    return t;
}

int dod_load_into(ParamStore *ps, const char *path, const char *prefix, bool require_all) {
    const char *who = "dod_model_load_tensors";
    SafeTensors *st = open_or_die(path, who);
    int copied = 0, missing = 0;
    size_t cap = 4096, len = 0;
    char *list = dod_malloc(cap, "missing tensor list");
    list[0] = 0;
    for (int i = 0; i < params_count(ps); i++) {
        Tensor *t = params_at(ps, i);
        char name[512];
        int n = snprintf(name, sizeof name, "%s%s", prefix ? prefix : "", t->name);
        DOD_CHECK(n > 0 && n < (int)sizeof name, who, "%s: name %s%s too long", path, prefix, t->name);
        const StEntry *e = safetensors_find(st, name);
        if (!e) {
            missing++;
            int w = snprintf(list + len, cap - len, "\n  %s", name);
            if (w > 0 && len + (size_t)w < cap) len += (size_t)w;
            continue;
        }
        bool same = e->ndim == t->ndim;
        for (int d = 0; same && d < t->ndim; d++) same = e->shape[d] == t->shape[d];
        DOD_CHECK(same, who, "%s: tensor %s has %d dims, first %ld; the model's %s is %s", path, name, e->ndim,
                  (long)(e->ndim ? e->shape[0] : 0), t->name, shape_str(t));
        DOD_CHECK(t->dtype == DT_F32, who, "model tensor %s is %s, expected f32", t->name, dtype_name(t->dtype));
        copy_entry(st, e, t, who);
        copied++;
    }
    safetensors_close(st);
    if (require_all && missing) dod_fatal(who, "%s: %d model tensors missing:%s", path, missing, list);
    free(list);
    return copied;
}
