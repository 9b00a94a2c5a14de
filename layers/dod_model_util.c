// Helpers of the DOD model; see dod_model_util.h.
#include "layers/dod_model_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "layers/model_weights.h"
#include "layers/safetensors.h"

// ---- eval padding and cropping: op_gather_hw with the rows / columns to read ----------------------------
// torch reflect index: i < n stays, n + k (k >= 0) maps to n - 2 - k.
static int64_t reflect(int64_t i, int64_t n) { return i < n ? i : 2 * (n - 1) - i; }
static int64_t identity(int64_t i, int64_t n) { return (void)n, i; }

// x gathered to [N, C, Ho, Wo]: output row i reads source row map(i, H), likewise the columns.
static Tensor *gather_mapped(Tensor *x, int64_t Ho, int64_t Wo, int64_t (*map)(int64_t, int64_t)) {
    int64_t H = x->shape[2], W = x->shape[3];
    int64_t *src = arena_alloc(sizeof(int64_t) * (size_t)(Ho + Wo), "dod gather indices");
    for (int64_t i = 0; i < Ho; i++) src[i] = map(i, H);
    for (int64_t j = 0; j < Wo; j++) src[Ho + j] = map(j, W);
    return op_gather_hw(x, src, Ho, src + Ho, Wo);
}

Tensor *dod_pad_reflect(Tensor *x, int pad_h, int pad_w) {
    DOD_CHECK(x->ndim == 4, "dod_pad_reflect", "input %s is not [N, C, H, W]", shape_str(x));
    int64_t H = x->shape[2], W = x->shape[3];
    DOD_CHECK(pad_h >= 0 && pad_w >= 0 && pad_h < H && pad_w < W, "dod_pad_reflect",
              "reflect padding (%d, %d) needs an image larger than the padding, got %s", pad_h, pad_w, shape_str(x));
    return gather_mapped(x, H + pad_h, W + pad_w, reflect);
}

Tensor *dod_crop(Tensor *x, int64_t h, int64_t w) {
    DOD_CHECK(x->ndim == 4 && h > 0 && w > 0 && h <= x->shape[2] && w <= x->shape[3], "dod_crop",
              "cannot crop %s to %ldx%ld", shape_str(x), (long)h, (long)w);
    return gather_mapped(x, h, w, identity);
}

// ---- the prompt for every image ----------------------------------------------------------------------------
Tensor *dod_repeat_constant(Tensor *t, int64_t n) {
    DOD_CHECK(t->dtype == DT_F32 && t->ndim < TENSOR_MAX_DIMS && n > 0 && n <= INT32_MAX, "dod_repeat_constant",
              "cannot repeat %s tensor %s %ld times", dtype_name(t->dtype), shape_str(t), (long)n);
    int64_t table_shape[2] = {1, t->numel}, shape[TENSOR_MAX_DIMS];
    shape[0] = n;
    for (int d = 0; d < t->ndim; d++) shape[d + 1] = t->shape[d];
    int64_t *ids = arena_calloc(sizeof(int64_t) * (size_t)n, "dod_repeat_constant ids");  // row 0, n times
    bool prev = ag_set_grad_enabled(false);  // a constant: no gradient even if t has one
    Tensor *rows = op_embedding(op_reshape(t, 2, table_shape), ids, (int)n);
    Tensor *out = op_reshape(rows, t->ndim + 1, shape);
    ag_set_grad_enabled(prev);
    return out;
}

// ---- reading tensors ---------------------------------------------------------------------------------
static SafeTensors *open_or_die(const char *path, const char *who) {
    char err[ST_ERR_LEN];
    SafeTensors *st;
    if (tensor_file_open(path, &st, err) != ST_OK) dod_fatal(who, "%s", err);   // safetensors or PyTorch
    return st;
}

// Copies entry e of st into dst (same numel) (=): checkpoint_copy_entry, fatal on failure.
static void copy_entry(SafeTensors *st, const StEntry *e, Tensor *dst, const char *who) {
    char err[ST_ERR_LEN];
    if (checkpoint_copy_entry(st, e, dst, err, sizeof err)) dod_fatal(who, "%s", err);
}

// Entry e of st (path) as a persistent f32 [L, D] tensor `name` (=), its shape checked.
static Tensor *load_embedding(SafeTensors *st, const StEntry *e, const char *path, const char *name, int want_dim) {
    const char *who = "dod prompt embedding";
    bool ok = (e->ndim == 2 || (e->ndim == 3 && e->shape[0] == 1)) && e->shape[e->ndim - 2] > 0;
    DOD_CHECK(ok, who, "%s: tensor %s has %d dims (shape[0] %ld): expected [L, D] or [1, L, D]", path, e->name,
              e->ndim, (long)e->shape[0]);
    int64_t L = e->shape[e->ndim - 2], D = e->shape[e->ndim - 1];
    DOD_CHECK(D == want_dim, who, "%s: tensor %s is %ld wide, the UNet's cross_attention_dim is %d", path, e->name,
              (long)D, want_dim);
    int64_t shape[2] = {L, D};
    Tensor *t = tensor_new_persistent(name, 2, shape, DT_F32);
    copy_entry(st, e, t, who);
    return t;
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
    Tensor *t = load_embedding(st, e, path, "prompt_embeds", want_dim);
    safetensors_close(st);
    return t;
}

Tensor *dod_load_negative_prompt(const char *path, int want_dim) {
    SafeTensors *st = open_or_die(path, "dod prompt embedding");
    const StEntry *e = safetensors_find(st, "negative_prompt_embeds");
    Tensor *t = e ? load_embedding(st, e, path, "negative_prompt_embeds", want_dim) : NULL;
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
