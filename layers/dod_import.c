// The public DOD code's saved dicts into the DOD model's tensors; see dod_import.h.
#include "layers/dod_import.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "layers/model_weights.h"
#include "layers/safetensors.h"

// ---- names ----------------------------------------------------------------------------------------------
static bool starts(const char *s, const char *prefix) { return !strncmp(s, prefix, strlen(prefix)); }

static int put(char *out, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int put(char *out, size_t len, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(out, len, fmt, ap);
    va_end(ap);
    return n >= 0 && (size_t)n < len ? 0 : -1;
}

// "<L>.lora_A.<adapter>.weight" -> "<prefix><L>.lora_A.weight" (=). 0, or -1 for another shape of key.
static int lora_name(const char *rest, const char *prefix, char *out, size_t len) {
    size_t n = strlen(rest);
    if (n < 7 || strcmp(rest + n - 7, ".weight")) return -1;
    const char *a = NULL;
    for (const char *p = strstr(rest, ".lora_"); p; p = strstr(p + 1, ".lora_"))
        if ((p[6] == 'A' || p[6] == 'B') && p[7] == '.') a = p;
    if (!a || a == rest) return -1;
    const char *adapter = a + 8, *end = rest + n - 7;
    if (adapter >= end || memchr(adapter, '.', (size_t)(end - adapter))) return -1;   // one name, no dots
    return put(out, len, "%s%.*s.lora_%c.weight", prefix, (int)(a - rest), rest, a[6]);
}

// A ResBlock parameter of the fusion block: the public shortcut conv_out is our conv_shortcut.
static int resblock_part(const char *p, const char *ours_block, int i, char *out, size_t len) {
    if (starts(p, "conv_out.")) return put(out, len, "detail.fuse.%d.%s.conv_shortcut.%s", i, ours_block, p + 9);
    static const char *const parts[] = {"norm1.", "conv1.", "norm2.", "conv2."};
    for (int k = 0; k < 4; k++)
        if (starts(p, parts[k])) return put(out, len, "detail.fuse.%d.%s.%s", i, ours_block, p);
    return -1;
}

// state_dict_vae/decoder.* of a stage-2 save (the part after "decoder.").
static int detail_name(const char *d, char *out, size_t len) {
    int n = 0, used = 0;
    if (sscanf(d, "skip_conv_%d%n", &n, &used) == 1 && n >= 1 && !strcmp(d + used, ".weight"))
        return put(out, len, "detail.skip_convs.%d.weight", n - 1);
    if (sscanf(d, "sft_blocks_%d%n", &n, &used) != 1 || n < 1 || d[used] != '.') return -1;
    const char *p = d + used + 1;
    int i = n - 1;
    if (!strcmp(p, "w")) return put(out, len, "detail.fuse_weights.%d", i);
    if (starts(p, "encode_enc_1.")) return resblock_part(p + 13, "res_in", i, out, len);
    if (starts(p, "encode_enc_3.")) return resblock_part(p + 13, "res_out", i, out, len);
    int r = 0, j = 0;
    char wb[8] = "";
    if (sscanf(p, "encode_enc_2.0.rdb%d.conv%d.%7s", &r, &j, wb) == 3 && r >= 1 && r <= 3 && j >= 1 && j <= 5 &&
        (!strcmp(wb, "weight") || !strcmp(wb, "bias")))
        return put(out, len, "detail.fuse.%d.rrdb.rdb%d.conv%d.%s", i, r, j, wb);
    return -1;
}

// A tensor of the frozen base VAE (a full = True stage-2 save holds the whole decoder VAE).
static bool base_vae_weight(const char *k) {
    return !strstr(k, "lora") && !strstr(k, "sft_blocks") && !strstr(k, "skip_conv") &&
           (starts(k, "encoder.") || starts(k, "decoder.") || starts(k, "quant_conv.") || starts(k, "post_quant_conv."));
}

int dod_public_to_ours(const char *key, char *out, size_t len) {
    const char *slash = strchr(key, '/');
    if (!slash) return -1;
    size_t tl = (size_t)(slash - key);
    const char *k = slash + 1;
#define TOP(s) (tl == strlen(s) && !strncmp(key, s, tl))
    if (TOP("state_dict_unet")) {
        if (!strcmp(k, "conv_in.weight") || !strcmp(k, "conv_in.bias")) return put(out, len, "unet.%s", k);
        return lora_name(k, "unet.", out, len);
    }
    if (TOP("state_dict_vae")) {
        if (!lora_name(k, "vae.", out, len)) return 0;
        if (starts(k, "decoder.") && !detail_name(k + 8, out, len)) return 0;
        return base_vae_weight(k) ? DOD_IMPORT_SKIPPED : -1;
    }
    static const struct {
        const char *top, *key, *ours;
    } mlp[] = {{"state_dict_unet_de_mlp", "0.weight", "mod.de_mlp.weight"},
               {"state_dict_unet_de_mlp", "0.bias", "mod.de_mlp.bias"},
               {"state_dict_unet_block_mlp", "0.weight", "mod.block_mlp.weight"},
               {"state_dict_unet_block_mlp", "0.bias", "mod.block_mlp.bias"},
               {"state_dict_unet_fuse_mlp", "weight", "mod.fuse_mlp.weight"},
               {"state_dict_unet_fuse_mlp", "bias", "mod.fuse_mlp.bias"},
               {"state_dict_unet_block", "weight", "mod.block_embeddings.weight"}};
    for (size_t m = 0; m < sizeof mlp / sizeof mlp[0]; m++)
        if (TOP(mlp[m].top) && !strcmp(k, mlp[m].key)) return put(out, len, "%s", mlp[m].ours);
#undef TOP
    return -1;
}

int dod_ours_to_public(const char *name, char *out, size_t len) {
    static const struct {
        const char *ours, *pub;
    } mlp[] = {{"mod.de_mlp.weight", "state_dict_unet_de_mlp/0.weight"},
               {"mod.de_mlp.bias", "state_dict_unet_de_mlp/0.bias"},
               {"mod.block_mlp.weight", "state_dict_unet_block_mlp/0.weight"},
               {"mod.block_mlp.bias", "state_dict_unet_block_mlp/0.bias"},
               {"mod.fuse_mlp.weight", "state_dict_unet_fuse_mlp/weight"},
               {"mod.fuse_mlp.bias", "state_dict_unet_fuse_mlp/bias"},
               {"mod.block_embeddings.weight", "state_dict_unet_block/weight"}};
    for (size_t m = 0; m < sizeof mlp / sizeof mlp[0]; m++)
        if (!strcmp(name, mlp[m].ours)) return put(out, len, "%s", mlp[m].pub);
    if (!strcmp(name, "unet.conv_in.weight") || !strcmp(name, "unet.conv_in.bias"))
        return put(out, len, "state_dict_unet/%s", name + 5);
    size_t n = strlen(name);
    bool lora = n > 14 && (!strcmp(name + n - 14, ".lora_A.weight") || !strcmp(name + n - 14, ".lora_B.weight"));
    if (lora) {
        bool unet = starts(name, "unet."), vae = starts(name, "vae.");
        if (!unet && !vae) return -1;
        const char *layer = name + (unet ? 5 : 4);
        return put(out, len, "state_dict_%s/%.*s.lora_%c.%s.weight", unet ? "unet" : "vae", (int)(n - 14 - (layer - name)),
                   layer, name[n - 8], unet ? "default" : "vae_skip");
    }
    int i = 0, used = 0;
    if (sscanf(name, "detail.skip_convs.%d%n", &i, &used) == 1 && !strcmp(name + used, ".weight"))
        return put(out, len, "state_dict_vae/decoder.skip_conv_%d.weight", i + 1);
    if (sscanf(name, "detail.fuse_weights.%d%n", &i, &used) == 1 && !name[used])
        return put(out, len, "state_dict_vae/decoder.sft_blocks_%d.w", i + 1);
    if (sscanf(name, "detail.fuse.%d.%n", &i, &used) == 1 && used > 0) {
        const char *p = name + used;
        const char *blk = starts(p, "res_in.") ? "encode_enc_1" : starts(p, "res_out.") ? "encode_enc_3"
                        : starts(p, "rrdb.")   ? "encode_enc_2.0" : NULL;
        if (!blk) return -1;
        p = strchr(p, '.') + 1;
        if (starts(p, "conv_shortcut."))
            return put(out, len, "state_dict_vae/decoder.sft_blocks_%d.%s.conv_out.%s", i + 1, blk, p + 14);
        return put(out, len, "state_dict_vae/decoder.sft_blocks_%d.%s.%s", i + 1, blk, p);
    }
    return -1;
}

// ---- the import ---------------------------------------------------------------------------------------------
// A bounded list of names for the error message: the first LIST_MAX, then a count.
#define LIST_MAX 24
typedef struct {
    char text[LIST_MAX * 200];
    size_t len;
    int n;
} NameList;

static void list_add(NameList *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void list_add(NameList *l, const char *fmt, ...) {
    if (l->n++ >= LIST_MAX) return;
    va_list ap;
    va_start(ap, fmt);
    int w = vsnprintf(l->text + l->len, sizeof l->text - l->len, fmt, ap);
    va_end(ap);
    if (w > 0 && l->len + (size_t)w < sizeof l->text) l->len += (size_t)w;
}

static void list_report(char *err, size_t errlen, size_t *at, const NameList *l, const char *what) {
    if (!l->n || *at >= errlen) return;
    int w = snprintf(err + *at, errlen - *at, "\n%d %s:%s%s", l->n, what, l->text, l->n > LIST_MAX ? "\n  ..." : "");
    if (w > 0) *at += (size_t)w;
    if (*at >= errlen) *at = errlen - 1;
}

int dod_import_public(ParamStore *ps, const char *path, DodImportStats *stats, char *err, size_t errlen) {
    SafeTensors *st;
    char msg[ST_ERR_LEN];
    if (tensor_file_open(path, &st, msg) != ST_OK) {
        snprintf(err, errlen, "%s", msg);
        return -1;
    }
    int n_ps = params_count(ps);
    bool *filled = dod_calloc((size_t)(n_ps ? n_ps : 1), "import flags");
    NameList unexpected = {0}, mismatch = {0}, missing = {0}, twice = {0};
    DodImportStats s = {0};
    int rc = 0;
    for (int i = 0; i < safetensors_count(st) && !rc; i++) {
        const StEntry *e = safetensors_entry(st, i);
        char ours[512];
        int m = dod_public_to_ours(e->name, ours, sizeof ours);
        if (m == DOD_IMPORT_SKIPPED) {
            s.skipped++;
            continue;
        }
        int at = -1;
        for (int j = 0; m == 0 && j < n_ps && at < 0; j++)
            if (!strcmp(params_at(ps, j)->name, ours)) at = j;
        if (at < 0) {
            if (m == 0) list_add(&unexpected, "\n  %s (our %s: not in this model)", e->name, ours);
            else list_add(&unexpected, "\n  %s (not a key the public code saves)", e->name);
            continue;
        }
        Tensor *dst = params_at(ps, at);
        Tensor probe = {.ndim = e->ndim};
        memcpy(probe.shape, e->shape, sizeof e->shape);
        bool scalar = e->ndim == 0 && dst->numel == 1;
        if (!scalar && !tensor_same_shape(&probe, dst)) {
            char a[96];
            snprintf(a, sizeof a, "%s", shape_str(&probe));
            list_add(&mismatch, "\n  %s is %s, our %s is %s", e->name, a, ours, shape_str(dst));
            filled[at] = true;   // named here, not again as missing
            continue;
        }
        if (filled[at]) {
            list_add(&twice, "\n  %s (%s again: two adapters on one layer?)", e->name, ours);
            continue;
        }
        if (checkpoint_copy_entry(st, e, dst, err, errlen)) rc = -1;
        filled[at] = true;
        s.copied++;
    }
    for (int j = 0; j < n_ps && !rc; j++) {
        Tensor *t = params_at(ps, j);
        if (filled[j] || !t->requires_grad) continue;
        char pub[512];
        if (dod_ours_to_public(t->name, pub, sizeof pub) == 0) list_add(&missing, "\n  %s (public key %s)", t->name, pub);
        else list_add(&missing, "\n  %s (the public code has no such tensor)", t->name);
    }
    free(filled);
    safetensors_close(st);
    if (!rc && (unexpected.n || mismatch.n || missing.n || twice.n)) {
        size_t at = 0;
        int w = snprintf(err, errlen, "%s: not the public DOD code's save of this model (%d tensors matched)", path,
                         s.copied);
        at = w > 0 ? (size_t)w : 0;
        if (at >= errlen) at = errlen - 1;
        list_report(err, errlen, &at, &missing, "tensors of the model missing from the file");
        list_report(err, errlen, &at, &unexpected, "unexpected keys");
        list_report(err, errlen, &at, &mismatch, "shapes differ");
        list_report(err, errlen, &at, &twice, "keys filling a tensor twice");
        rc = -1;
    }
    if (stats) *stats = s;
    return rc;
}

int dod_import_gamma_plain(ParamStore *ps, int rank, char *err, size_t errlen) {
    Tensor *b = params_get(ps, "mod.fuse_mlp.bias");
    if (!b || b->ndim != 1 || b->shape[0] != 2 * (int64_t)rank || b->dtype != DT_F32) {
        snprintf(err, errlen, "no f32 mod.fuse_mlp.bias of %d entries (LoRA rank %d) to convert", 2 * rank, rank);
        return -1;
    }
    float *host = dod_malloc(sizeof(float) * (size_t)b->numel, "fuse bias");
    device_copy(host, DEV_CPU, b->data, b->device, sizeof(float) * (size_t)b->numel);
    for (int i = 0; i < rank; i++) host[i] -= 1.0f;
    device_copy(b->data, b->device, host, DEV_CPU, sizeof(float) * (size_t)b->numel);
    free(host);
    return 0;
}
