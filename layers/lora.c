// LoRA adapters, plain and conditional; see lora.h.
#include "layers/lora.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/gemm.h"

struct LoraSet {
    LoraAdapter *items;
    int n, cap;
    int *index;       // hash slots -> item position, -1 empty (open addressing, linear probing)
    int index_cap;    // power of two, kept at least twice n
    bool enabled;
    bool has_modulation;
    Tensor *gamma[LORA_N_BLOCKS], *beta[LORA_N_BLOCKS];
};

// FNV-1a: the hook looks a name up after every conv/linear, so lookups must not scan.
static uint64_t hash_str(const char *s) {
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 1099511628211ull;
    return h;
}

static void rebuild_index(LoraSet *set, int cap) {
    free(set->index);
    set->index = dod_malloc(sizeof(int) * (size_t)cap, "lora adapter index");
    for (int i = 0; i < cap; i++) set->index[i] = -1;
    set->index_cap = cap;
    for (int i = 0; i < set->n; i++) {
        uint64_t h = hash_str(set->items[i].layer) & (uint64_t)(cap - 1);
        while (set->index[h] >= 0) h = (h + 1) & (uint64_t)(cap - 1);
        set->index[h] = i;
    }
}

LoraSet *lora_set_new(void) {
    LoraSet *set = dod_calloc(sizeof(LoraSet), "lora set");
    set->enabled = true;
    rebuild_index(set, 64);
    return set;
}

void lora_set_free(LoraSet *set) {
    if (!set) return;
    for (int i = 0; i < set->n; i++) free(set->items[i].layer);
    free(set->items);
    free(set->index);
    free(set);
}

int lora_set_count(const LoraSet *set) { return set->n; }

LoraAdapter *lora_set_at(LoraSet *set, int i) {
    DOD_CHECK(i >= 0 && i < set->n, "lora_set_at", "index %d out of range (%d adapters)", i, set->n);
    return &set->items[i];
}

LoraAdapter *lora_set_find(const LoraSet *set, const char *layer) {
    uint64_t mask = (uint64_t)(set->index_cap - 1);
    for (uint64_t h = hash_str(layer) & mask;; h = (h + 1) & mask) {
        int i = set->index[h];
        if (i < 0) return NULL;
        if (strcmp(set->items[i].layer, layer) == 0) return &set->items[i];
    }
}

// ---- target rules ---------------------------------------------------------------------------------
// True when name is `suffix` or ends with "." + suffix (PEFT's target_modules matching).
static bool ends_with_module(const char *name, const char *suffix) {
    size_t n = strlen(name), s = strlen(suffix);
    if (n == s) return strcmp(name, suffix) == 0;
    return n > s && name[n - s - 1] == '.' && strcmp(name + n - s, suffix) == 0;
}

static bool is_attention_proj(const char *layer) {
    return ends_with_module(layer, "to_q") || ends_with_module(layer, "to_k") || ends_with_module(layer, "to_v") ||
           ends_with_module(layer, "to_out.0");
}

static bool is_resnet_conv(const char *layer) {
    return strstr(layer, ".resnets.") != NULL &&
           (ends_with_module(layer, "conv1") || ends_with_module(layer, "conv2") ||
            ends_with_module(layer, "conv_shortcut"));
}

bool lora_is_target(LoraTargets which, const char *layer) {
    if (which == LORA_TARGETS_UNET_OSEDIFF) return strcmp(layer, "conv_in") == 0 || lora_is_target(LORA_TARGETS_UNET, layer);
    if (which == LORA_TARGETS_UNET) {
        if (is_attention_proj(layer) || is_resnet_conv(layer)) return true;
        if (ends_with_module(layer, "proj_in") || ends_with_module(layer, "proj_out") ||
            ends_with_module(layer, "ff.net.0.proj") || ends_with_module(layer, "ff.net.2"))
            return true;
        if (ends_with_module(layer, "conv") && (strstr(layer, "downsamplers.") || strstr(layer, "upsamplers.")))
            return true;
        return strcmp(layer, "conv_out") == 0;
    }
    DOD_CHECK(which == LORA_TARGETS_VAE_ENCODER, "lora_is_target", "unknown target set %d", (int)which);
    if (strncmp(layer, "encoder.", 8) != 0) return false;
    const char *rest = layer + 8;
    if (strcmp(rest, "conv_in") == 0 || strcmp(rest, "conv_out") == 0) return true;
    if (is_resnet_conv(layer)) return true;
    if (ends_with_module(rest, "conv") && strstr(rest, "downsamplers.")) return true;
    return strncmp(rest, "mid_block.attentions.", 21) == 0 && is_attention_proj(rest);
}

int lora_block_index(const char *layer) {
    int i = -1, used = 0;
    if (sscanf(layer, "down_blocks.%d.%n", &i, &used) == 1 && used > 0) {
        DOD_CHECK(i >= 0 && i <= 3, layer, "down block index %d has no block embedding (0..3 supported)", i);
        return i;
    }
    if (strncmp(layer, "mid_block.", 10) == 0) return 4;
    if (sscanf(layer, "up_blocks.%d.%n", &i, &used) == 1 && used > 0) {
        DOD_CHECK(i >= 0 && i <= 3, layer, "up block index %d has no block embedding (0..3 supported)", i);
        return 5 + i;
    }
    return 9;
}

// ---- creation ------------------------------------------------------------------------------------
static Tensor *register_tensor(ParamStore *store, const char *name_prefix, const char *layer, const char *what,
                               int ndim, const int64_t *shape) {
    char name[512];
    int len = snprintf(name, sizeof name, "%s%s.%s", name_prefix ? name_prefix : "", layer, what);
    DOD_CHECK(len > 0 && len < (int)sizeof name, layer, "adapter tensor name too long");
    DOD_CHECK(params_get(store, name) == NULL, name, "adapter tensor already registered");
    Tensor *t = tensor_new_persistent(name, ndim, shape, DT_F32);
    t->requires_grad = true;
    return params_add(store, name, t);
}

LoraAdapter *lora_add(LoraSet *set, ParamStore *store, const char *name_prefix, const char *layer,
                      const Tensor *w0, int rank, float alpha, bool conditional, uint64_t seed) {
    DOD_CHECK(rank > 0, layer, "LoRA rank must be positive, got %d", rank);
    DOD_CHECK(lora_set_find(set, layer) == NULL, layer, "layer already has a LoRA adapter");
    DOD_CHECK(w0->ndim == 2 || (w0->ndim == 4 && w0->shape[2] == w0->shape[3]), layer,
              "base weight %s has shape %s: expected [out, in] or [Cout, Cin, k, k]", layer, shape_str(w0));
    if (set->n == set->cap) {
        set->cap = set->cap ? 2 * set->cap : 64;
        set->items = realloc(set->items, sizeof(LoraAdapter) * (size_t)set->cap);
        DOD_CHECK(set->items, "lora_add", "out of memory growing the adapter table to %d", set->cap);
    }
    LoraAdapter *ad = &set->items[set->n];
    memset(ad, 0, sizeof *ad);
    size_t len = strlen(layer) + 1;
    ad->layer = dod_malloc(len, "lora layer name");
    memcpy(ad->layer, layer, len);
    ad->kind = w0->ndim == 2 ? LORA_LINEAR : LORA_CONV;
    ad->block = lora_block_index(layer);
    ad->conditional = conditional;
    ad->rank = rank;
    ad->scale = alpha / (float)rank;
    ad->out = w0->shape[0];
    ad->in = w0->shape[1];
    ad->kh = ad->kind == LORA_CONV ? w0->shape[2] : 1;
    ad->kw = ad->kind == LORA_CONV ? w0->shape[3] : 1;
    if (ad->kind == LORA_LINEAR) {
        int64_t sa[2] = {rank, ad->in}, sb[2] = {ad->out, rank};
        ad->A = register_tensor(store, name_prefix, layer, "lora_A.weight", 2, sa);
        ad->B = register_tensor(store, name_prefix, layer, "lora_B.weight", 2, sb);
    } else {
        int64_t sa[4] = {rank, ad->in, ad->kh, ad->kw}, sb[4] = {ad->out, rank, 1, 1};
        ad->A = register_tensor(store, name_prefix, layer, "lora_A.weight", 4, sa);
        ad->B = register_tensor(store, name_prefix, layer, "lora_B.weight", 4, sb);
    }
    // Seed from the layer name too, so adding or removing other targets does not change this init.
    tensor_randn(ad->A, seed ^ hash_str(layer), 1.0f / (float)rank);  // B stays 0 (zeroed storage)
    set->n++;
    if (2 * set->n > set->index_cap) rebuild_index(set, 2 * set->index_cap);
    else {
        uint64_t mask = (uint64_t)(set->index_cap - 1), h = hash_str(layer) & mask;
        while (set->index[h] >= 0) h = (h + 1) & mask;
        set->index[h] = set->n - 1;
    }
    return ad;
}

int lora_add_targets(LoraSet *set, ParamStore *base, const char *base_prefix, LoraTargets which, ParamStore *store,
                     const char *name_prefix, int rank, float alpha, uint64_t seed) {
    size_t plen = base_prefix ? strlen(base_prefix) : 0;
    int added = 0;
    for (int i = 0; i < params_count(base); i++) {
        Tensor *w = params_at(base, i);
        const char *name = w->name;
        size_t n = strlen(name);
        if (plen && strncmp(name, base_prefix, plen) != 0) continue;
        if (n < plen + 7 || strcmp(name + n - 7, ".weight") != 0) continue;
        char layer[512];
        DOD_CHECK(n - plen - 7 < sizeof layer, name, "layer name too long");
        memcpy(layer, name + plen, n - plen - 7);
        layer[n - plen - 7] = 0;
        if (!lora_is_target(which, layer)) continue;
        lora_add(set, store, name_prefix, layer, w, rank, alpha, which == LORA_TARGETS_UNET, seed);
        added++;
    }
    return added;
}

void lora_set_modulation(LoraSet *set, Tensor *const *gamma, Tensor *const *beta) {
    DOD_CHECK((gamma == NULL) == (beta == NULL), "lora_set_modulation", "gamma and beta must be given together");
    set->has_modulation = gamma != NULL;
    for (int k = 0; k < LORA_N_BLOCKS; k++) {
        set->gamma[k] = gamma ? gamma[k] : NULL;
        set->beta[k] = beta ? beta[k] : NULL;
    }
}

void lora_set_enabled(LoraSet *set, bool on) { set->enabled = on; }

// ---- forward ---------------------------------------------------------------------------------------
bool lora_conv_geometry(int64_t k, int64_t h, int64_t w, int64_t oh, int64_t ow, int *stride, int *padding) {
    const int cand[4][2] = {{1, (int)(k / 2)}, {2, (int)(k / 2)}, {2, 0}, {1, 0}};
    for (int c = 0; c < 4; c++) {
        int s = cand[c][0], p = cand[c][1];
        if (h + 2 * p < k || w + 2 * p < k) continue;
        if ((h + 2 * p - k) / s + 1 == oh && (w + 2 * p - k) / s + 1 == ow) {
            *stride = s;
            *padding = p;
            return true;
        }
    }
    return false;
}

// gamma/beta [N, r] as a view that broadcasts against A x: [N, r, 1, 1] (conv) or [N, 1, .., 1, r].
static Tensor *modulation_view(const LoraAdapter *ad, Tensor *m, const Tensor *ax, bool conv, const char *what) {
    DOD_CHECK(m->ndim == 2 && m->shape[0] == ax->shape[0] && m->shape[1] == ad->rank, ad->layer,
              "%s has shape %s, expected [%ld, %d] for input batch %ld", what, shape_str(m), (long)ax->shape[0],
              ad->rank, (long)ax->shape[0]);
    int64_t shape[TENSOR_MAX_DIMS];
    for (int d = 0; d < ax->ndim; d++) shape[d] = 1;
    shape[0] = m->shape[0];
    shape[conv ? 1 : ax->ndim - 1] = ad->rank;
    return op_reshape(m, ax->ndim, shape);
}

// Stride and padding of a conv adapter from its input x [N, C, H, W] and the base output y (fatal
// naming the layer when none fits).
static void conv_adapter_geometry(const LoraAdapter *ad, const Tensor *x, const Tensor *y, int *stride, int *padding) {
    DOD_CHECK(y->ndim == 4, ad->layer, "conv output has shape %s", shape_str(y));
    DOD_CHECK(lora_conv_geometry(ad->kh, x->shape[2], x->shape[3], y->shape[2], y->shape[3], stride, padding),
              ad->layer, "no stride/padding maps conv input %s to output %s with a %ldx%ld kernel", shape_str(x),
              shape_str(y), (long)ad->kh, (long)ad->kw);
}

// y + s * B((1 + gamma) * ax + beta), written into y's storage (op_add_projection_into); ax = A x.
static Tensor *lora_finish(const LoraAdapter *ad, Tensor *ax, Tensor *y, Tensor *B, Tensor *gamma, Tensor *beta) {
    bool conv = B->ndim == 4;
    if (gamma) ax = op_mul(ax, op_add_scalar(modulation_view(ad, gamma, ax, conv, "gamma"), 1.0f));
    if (beta) ax = op_add(ax, modulation_view(ad, beta, ax, conv, "beta"));
    return op_add_projection_into(y, ax, B, ad->scale);
}

// y + s * B((1 + gamma) * (A x) + beta), written into y's storage (op_add_projection_into); y also gives
// the output size from which a conv's stride and padding are recovered.
static Tensor *lora_add_into(const LoraAdapter *ad, Tensor *x, Tensor *y, Tensor *gamma, Tensor *beta) {
    Tensor *A = ad->A, *B = ad->B, *ax;
    bool conv = ad->kind == LORA_CONV && x->ndim == 4;
    DOD_CHECK(x->ndim >= 2, ad->layer, "LoRA input has shape %s, expected a batch first", shape_str(x));
    if (conv) {
        int stride, padding;
        conv_adapter_geometry(ad, x, y, &stride, &padding);
        ax = op_conv2d(x, A, NULL, stride, padding);
    } else {
        if (ad->kind == LORA_CONV) {  // a [out, in, 1, 1] weight the blocks use as a linear layer
            DOD_CHECK(ad->kh == 1 && ad->kw == 1, ad->layer, "conv adapter (kernel %ldx%ld) called on input %s",
                      (long)ad->kh, (long)ad->kw, shape_str(x));
            int64_t sa[2] = {ad->rank, ad->in}, sb[2] = {ad->out, ad->rank};
            A = op_reshape(A, 2, sa);
            B = op_reshape(B, 2, sb);
        }
        ax = op_linear(x, A, NULL);
    }
    return lora_finish(ad, ax, y, B, gamma, beta);
}

// The layer's adapter (NULL: none, or the set is off) and its modulation (NULL for plain adapters).
static const LoraAdapter *active_adapter(const LoraSet *set, const char *layer, Tensor **gamma, Tensor **beta) {
    *gamma = *beta = NULL;
    if (!set->enabled) return NULL;
    const LoraAdapter *ad = lora_set_find(set, layer);
    if (ad && ad->conditional) {
        DOD_CHECK(set->has_modulation && set->gamma[ad->block] && set->beta[ad->block], layer,
                  "conditional LoRA adapter (block %d) has no gamma/beta: call lora_set_modulation first", ad->block);
        *gamma = set->gamma[ad->block];
        *beta = set->beta[ad->block];
    }
    return ad;
}

Tensor *lora_hook(void *ctx, const char *layer, Tensor *x, Tensor *y) {
    Tensor *gamma, *beta;
    const LoraAdapter *ad = active_adapter(ctx, layer, &gamma, &beta);
    return ad ? lora_add_into(ad, x, y, gamma, beta) : y;
}

Tensor *lora_hook_norm(void *ctx, const char *layer, const SdNormSiluInput *in, Tensor *y) {
    Tensor *gamma, *beta;
    const LoraAdapter *ad = active_adapter(ctx, layer, &gamma, &beta);
    if (!ad) return y;
    if (ad->kind != LORA_CONV || in->x->ndim != 4)  // not a conv adapter: make the input after all
        return lora_add_into(ad, op_group_norm_silu(in->x, in->groups, in->gamma, in->beta, in->eps), y, gamma, beta);
    int stride, padding;
    conv_adapter_geometry(ad, in->x, y, &stride, &padding);  // the norm keeps the shape
    Tensor *ax = op_group_norm_silu_conv2d(in->x, in->groups, in->gamma, in->beta, in->eps, ad->A, NULL, stride, padding);
    return lora_finish(ad, ax, y, ad->B, gamma, beta);
}

bool lora_hook_needs_input(void *ctx, const char *layer) {
    const LoraSet *set = ctx;
    return set->enabled && lora_set_find(set, layer) != NULL;
}

// ---- merge -----------------------------------------------------------------------------------------
// The merge is a host computation (once per export, not per step): tensors on CUDA are widened there
// and copied back. Returns an f32 host view of t; *owned is the heap copy to free (NULL: a view).
static const float *host_f32(const Tensor *t, float **owned) {
    *owned = NULL;
    if (t->device != DEV_CUDA) return tensor_f32(t);
    *owned = dod_malloc(sizeof(float) * (size_t)t->numel, "lora merge host copy");
    device_copy(*owned, DEV_CPU, tensor_f32(t), t->device, sizeof(float) * (size_t)t->numel);  // widened on the device
    return *owned;
}

void lora_merge(const LoraAdapter *ad, const Tensor *w0, const Tensor *b0, const float *gamma, const float *beta,
                Tensor *w_out, Tensor *b_out) {
    int64_t r = ad->rank, cols = ad->in * ad->kh * ad->kw;
    DOD_CHECK(w0->numel == ad->out * cols && w_out->numel == w0->numel && w_out->dtype == DT_F32, ad->layer,
              "merge: base weight %s / output %s do not match the adapter (%ld x %ld)", shape_str(w0),
              shape_str(w_out), (long)ad->out, (long)cols);
    DOD_CHECK(b_out->numel == ad->out && b_out->dtype == DT_F32 && (!b0 || b0->numel == ad->out), ad->layer,
              "merge: bias shapes %s / %s, expected [%ld]", b0 ? shape_str(b0) : "none", shape_str(b_out),
              (long)ad->out);
    DOD_CHECK(w_out->device == DEV_CPU && b_out->device == DEV_CPU, ad->layer, "merge writes host tensors only");
    float *own_a, *own_b, *own_w0, *own_b0 = NULL;
    const float *A = host_f32(ad->A, &own_a), *B = host_f32(ad->B, &own_b), *W0 = host_f32(w0, &own_w0);
    float *M = dod_malloc(sizeof(float) * (size_t)(r * cols), "lora merge scratch");
    for (int64_t k = 0; k < r; k++) {  // M = diag(1 + gamma) A
        float g = 1.0f + (gamma ? gamma[k] : 0.0f);
        for (int64_t c = 0; c < cols; c++) M[k * cols + c] = g * A[k * cols + c];
    }
    float *W = tensor_data_f32(w_out);
    memcpy(W, W0, sizeof(float) * (size_t)w0->numel);
    gemm_f32(false, false, ad->out, cols, r, ad->scale, B, r, M, cols, 1.0f, W, cols);  // W += s B M
    free(M);
    float *bo = tensor_data_f32(b_out);
    const float *b0d = b0 ? host_f32(b0, &own_b0) : NULL;
    for (int64_t o = 0; o < ad->out; o++) {  // beta is added after A, so B beta is a constant per output
        double acc = 0;
        if (beta)
            for (int64_t k = 0; k < r; k++) acc += (double)B[o * r + k] * beta[k];
        bo[o] = (b0d ? b0d[o] : 0.0f) + ad->scale * (float)acc;
    }
    free(own_a);
    free(own_b);
    free(own_w0);
    free(own_b0);
}

int lora_merge_all(const LoraSet *set, ParamStore *base, const char *base_prefix, int n, ParamStore *out) {
    char wname[512], bname[512];
    for (int i = 0; i < set->n; i++) {
        const LoraAdapter *ad = &set->items[i];
        snprintf(wname, sizeof wname, "%s%s.weight", base_prefix ? base_prefix : "", ad->layer);
        snprintf(bname, sizeof bname, "%s%s.bias", base_prefix ? base_prefix : "", ad->layer);
        Tensor *w0 = params_require(base, wname, "lora_merge_all");
        Tensor *b0 = params_get(base, bname);
        const float *g = NULL, *b = NULL;
        float *own_g = NULL, *own_bt = NULL;
        if (ad->conditional) {
            Tensor *gt = set->gamma[ad->block], *bt = set->beta[ad->block];
            DOD_CHECK(set->has_modulation && gt && bt, ad->layer, "merge of a conditional adapter needs gamma/beta");
            DOD_CHECK(gt->ndim == 2 && n >= 0 && n < gt->shape[0] && gt->shape[1] == ad->rank &&
                          tensor_same_shape(gt, bt),
                      ad->layer, "merge: sample %d of gamma %s / beta %s", n, shape_str(gt), shape_str(bt));
            g = host_f32(gt, &own_g) + (int64_t)n * ad->rank;
            b = host_f32(bt, &own_bt) + (int64_t)n * ad->rank;
        }
        Tensor *w = tensor_new_persistent(wname, w0->ndim, w0->shape, DT_F32);
        int64_t bshape[1] = {ad->out};
        Tensor *bias = tensor_new_persistent(bname, 1, bshape, DT_F32);
        lora_merge(ad, w0, b0, g, b, w, bias);
        free(own_g);
        free(own_bt);
        params_add(out, wname, w);
        params_add(out, bname, bias);
    }
    return set->n;
}
