// The adapter file: export, validation, loading onto a base. See adapter.h and docs/restore.md.
#include "layers/adapter.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "autograd/cuda/cuda_backend.h"
#include "layers/model_weights.h"
#include "layers/safetensors.h"
#include "layers/sd_config.h"

// ---- hashing -------------------------------------------------------------------------------------
// A 64-bit multiply-rotate hash over 8-byte words (tail zero-padded) with a murmur3 finaliser: fast
// (one multiply chain, about 2-3 GB/s a core), stable across machines (little-endian words), not
// cryptographic: it detects corruption and a different base, not an adversary.
#define HASH_K1 0x9E3779B97F4A7C15ull
#define HASH_K2 0xC2B2AE3D27D4EB4Full

static uint64_t rotl64(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }

static uint64_t hash_mix(uint64_t h) {
    h ^= h >> 33;
    h *= 0xFF51AFD7ED558CCDull;
    h ^= h >> 33;
    h *= 0xC4CEB9FE1A85EC53ull;
    return h ^ (h >> 33);
}

// h extended by n bytes of p (=: returns the new state).
static uint64_t hash_bytes(uint64_t h, const void *p, size_t n) {
    const uint8_t *b = p;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, b + i, 8);
        h = rotl64(h ^ (w * HASH_K1), 31) * HASH_K2;
    }
    if (i < n) {
        uint64_t w = 0;
        memcpy(&w, b + i, n - i);
        h = rotl64(h ^ (w * HASH_K1), 31) * HASH_K2;
    }
    return hash_mix(h ^ (uint64_t)n);
}

static uint64_t hash_str(uint64_t h, const char *s) { return hash_bytes(h, s, strlen(s) + 1); }

static void hash_hex(uint64_t h, char out[17]) { snprintf(out, 17, "%016llx", (unsigned long long)h); }

// ---- the base's identity ---------------------------------------------------------------------------
static const char *const BASE_CONFIG_FILES[3] = {"unet/config.json", "vae/config.json",
                                                  "scheduler/scheduler_config.json"};

// h extended by the name and bytes of base_dir/rel. 0, or -1 naming the file.
static int hash_file(uint64_t *h, const char *base_dir, const char *rel, char *err, size_t errlen) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", base_dir, rel);
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "%s: cannot read the base's config file: %s", path, strerror(errno));
        return -1;
    }
    *h = hash_str(*h, rel);
    uint8_t buf[1 << 16];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) *h = hash_bytes(*h, buf, n);
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        snprintf(err, errlen, "%s: read error", path);
        return -1;
    }
    return 0;
}

static int config_hash(const char *base_dir, char out[17], char *err, size_t errlen) {
    uint64_t h = 0x646F642D62617365ull;  // "dod-base"
    for (int i = 0; i < 3; i++)
        if (hash_file(&h, base_dir, BASE_CONFIG_FILES[i], err, errlen)) return -1;
    hash_hex(h, out);
    return 0;
}

// The hash of one tensor: name, shape, values rounded to bf16.
static uint64_t tensor_hash(const Tensor *t) {
    uint64_t h = hash_str(0x77656967687473ull, t->name ? t->name : "");
    h = hash_bytes(h, t->shape, sizeof(int64_t) * (size_t)t->ndim);
    uint16_t buf[4096];
    for (int64_t i0 = 0; i0 < t->numel; i0 += 4096) {
        int64_t n = t->numel - i0 < 4096 ? t->numel - i0 : 4096;
        for (int64_t i = 0; i < n; i++) {
            switch (t->dtype) {
            case DT_BF16: buf[i] = ((const uint16_t *)t->data)[i0 + i]; break;
            case DT_F16: buf[i] = f32_to_bf16(f16_to_f32(((const uint16_t *)t->data)[i0 + i])); break;
            default: buf[i] = f32_to_bf16(((const float *)t->data)[i0 + i]); break;
            }
        }
        h = hash_bytes(h, buf, sizeof(uint16_t) * (size_t)n);
    }
    return h;
}

static int by_name(const void *a, const void *b) {
    return strcmp((*(Tensor *const *)a)->name, (*(Tensor *const *)b)->name);
}

// Every tensor of the n stores, prefixes[k] before the names of store k, each store sorted by name;
// tensors hashed in parallel and combined in that order (the same number whatever the thread count),
// the hash started from seed.
static void stores_hash(ParamStore *const *stores, const char *const *prefixes, int n_stores, uint64_t seed,
                        char out[17]) {
    int n = 0;
    for (int k = 0; k < n_stores; k++) n += params_count(stores[k]);
    Tensor **ts = dod_malloc(sizeof(Tensor *) * (size_t)(n ? n : 1), "weight list");
    const char **pre = dod_malloc(sizeof(char *) * (size_t)(n ? n : 1), "weight prefixes");
    for (int k = 0, i0 = 0; k < n_stores; i0 += params_count(stores[k]), k++) {
        for (int i = 0; i < params_count(stores[k]); i++) {
            ts[i0 + i] = params_at(stores[k], i);
            pre[i0 + i] = prefixes[k];
        }
        qsort(ts + i0, (size_t)params_count(stores[k]), sizeof(Tensor *), by_name);
    }
    uint64_t *hs = dod_malloc(sizeof(uint64_t) * (size_t)(n ? n : 1), "weight hashes");
    for (int i = 0; i < n; i++)
        DOD_CHECK(ts[i]->device == DEV_CPU, ts[i]->name, "weights are hashed on the host");
#pragma omp parallel for schedule(dynamic, 1)
    for (int i = 0; i < n; i++) hs[i] = tensor_hash(ts[i]);
    uint64_t h = seed;
    for (int i = 0; i < n; i++) {
        h = hash_str(h, pre[i]);
        h = hash_bytes(h, &hs[i], sizeof hs[i]);
    }
    hash_hex(h, out);
    free(hs);
    free(pre);
    free(ts);
}

static void weights_hash(ParamStore *unet, ParamStore *vae, char out[17]) {
    ParamStore *const stores[2] = {unet, vae};
    const char *const prefixes[2] = {"unet.", "vae."};
    stores_hash(stores, prefixes, 2, 0x626173652D77ull, out);
}

int adapter_base_identity(const DodModel *m, const char *base_dir, BaseIdentity *id, char *err, size_t errlen) {
    if (config_hash(base_dir, id->config_hash, err, errlen)) return -1;
    weights_hash(m->unet->net.ps, m->vae->net.ps, id->weights_hash);
    return 0;
}

// ---- the adm extractor's weights -------------------------------------------------------------------
int adapter_adm_identity(const AdmEncoder *e, const char *path, AdmIdentity *id, char *err, size_t errlen) {
    struct stat sb;
    if (stat(path, &sb) != 0) {
        snprintf(err, errlen, "%s: cannot read the adm extractor's weights: %s", path, strerror(errno));
        return -1;
    }
    const char *slash = strrchr(path, '/');
    snprintf(id->file, sizeof id->file, "%s", slash ? slash + 1 : path);
    id->bytes = (long long)sb.st_size;
    ParamStore *const stores[1] = {e->ps};
    const char *const prefixes[1] = {"adm."};
    stores_hash(stores, prefixes, 1, 0x61646D2D77ull, id->hash);
    return 0;
}

// ---- the file's own tensors -----------------------------------------------------------------------
// Hash of every tensor of a file in file order: name, dtype, shape, raw bytes.
static uint64_t tensors_hash_begin(void) { return 0x61646170746572ull; }  // "adapter"

static uint64_t tensors_hash_add(uint64_t h, const char *name, DType dt, int ndim, const int64_t *shape,
                                 const void *data, size_t bytes) {
    h = hash_str(h, name);
    h = hash_str(h, dtype_name(dt));
    h = hash_bytes(h, shape, sizeof(int64_t) * (size_t)ndim);
    return hash_bytes(h, data, bytes);
}

// ---- export ---------------------------------------------------------------------------------------
const char *adapter_extractor_name(DodExtractorKind k) {
    return k == DOD_EXTRACTOR_VAE ? "vae" : k == DOD_EXTRACTOR_ADM ? "adm" : "cnn";
}

// A JSON array of the set's layer names (heap string) and, for conditional sets, an object of blocks.
static char *layer_list_json(LoraSet *set) {
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; i < lora_set_count(set); i++) cJSON_AddItemToArray(a, cJSON_CreateString(lora_set_at(set, i)->layer));
    char *s = cJSON_PrintUnformatted(a);
    cJSON_Delete(a);
    return s;
}

static char *block_map_json(LoraSet *set) {
    cJSON *o = cJSON_CreateObject();
    for (int i = 0; i < lora_set_count(set); i++) {
        const LoraAdapter *ad = lora_set_at(set, i);
        cJSON_AddNumberToObject(o, ad->layer, ad->block);
    }
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
}

static char *modulation_json(const DodModel *m) {
    const DodModulationConfig *c = &m->mod.cfg;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "rank", c->rank);
    cJSON_AddNumberToObject(o, "feature_dim", c->feature_dim);
    cJSON_AddNumberToObject(o, "de_dim", c->de_dim);
    cJSON_AddNumberToObject(o, "block_dim", c->block_dim);
    cJSON_AddNumberToObject(o, "n_blocks", LORA_N_BLOCKS);
    if (m->cfg.extractor == DOD_EXTRACTOR_CNN) {
        cJSON *w = cJSON_AddArrayToObject(o, "cnn_channels");
        for (int i = 0; i < DOD_CNN_LAYERS; i++) cJSON_AddItemToArray(w, cJSON_CreateNumber(c->cnn_channels[i]));
    }
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
}

// What the metadata says the block index of a UNet layer is (the rule of lora_block_index).
#define BLOCK_RULE "down_blocks.i -> i, mid_block -> 4, up_blocks.i -> 5 + i, any other layer -> 9"
#define WEIGHTS_HASHED "every unet and vae tensor of the base, sorted by name: name, shape, values rounded to bf16"
#define ADM_WEIGHTS_HASHED "every tensor the adm encoder keeps after loading (time_embed folded into the norms), " \
                           "sorted by name: name, shape, values rounded to bf16"

int adapter_export(const DodModel *m, const char *path, const AdapterExportOptions *o, char *err, size_t errlen) {
    DOD_CHECK(o->dtype == DT_F32 || o->dtype == DT_BF16 || o->dtype == DT_F16, "adapter_export",
              "dtype %s: f32, bf16 or f16", dtype_name(o->dtype));
    BaseIdentity id;
    if (adapter_base_identity(m, o->base_dir, &id, err, errlen)) return -1;
    // adm: the encoder's flags a state dict does not record, and which weights it was trained with
    AdmIdentity adm_id;
    char adm_heads[16], adm_groups[16], adm_blocks[16], adm_t[16], adm_bytes[32];
    if (m->adm) {
        if (adapter_adm_identity(m->adm, m->adm->path, &adm_id, err, errlen)) return -1;
        if (m->adm->cfg.timestep != floorf(m->adm->cfg.timestep) || m->adm->cfg.timestep < 0) {
            snprintf(err, errlen, "%s: the adm extractor runs at timestep %g; adapters record integer timesteps",
                     m->adm->path, (double)m->adm->cfg.timestep);
            return -1;
        }
        snprintf(adm_heads, sizeof adm_heads, "%d", m->adm->cfg.head_channels);
        snprintf(adm_groups, sizeof adm_groups, "%d", m->adm->cfg.groups);
        snprintf(adm_blocks, sizeof adm_blocks, "%d", m->adm->cfg.num_res_blocks);
        snprintf(adm_t, sizeof adm_t, "%d", (int)m->adm->cfg.timestep);
        snprintf(adm_bytes, sizeof adm_bytes, "%lld", adm_id.bytes);
    }

    // The tensors: every model tensor (stage 2: the frozen stage-1 ones too), then the prompt.
    ParamStore *ps = m->params;
    int n = params_count(ps) + 1;
    Tensor **out = dod_calloc(sizeof(Tensor *) * (size_t)n, "adapter tensors");
    uint64_t th = tensors_hash_begin();
    for (int i = 0; i < n; i++) {
        const Tensor *src = i < n - 1 ? params_at(ps, i) : m->prompt;
        const char *name = i < n - 1 ? src->name : ADAPTER_PROMPT_TENSOR;
        DOD_CHECK(src->device == DEV_CPU && src->dtype == DT_F32, name, "export reads f32 host tensors, got %s on %s",
                  dtype_name(src->dtype), src->device == DEV_CUDA ? "cuda" : "cpu");
        const float *x = tensor_f32(src);
        for (int64_t k = 0; k < src->numel; k++)
            if (!isfinite(x[k])) {
                snprintf(err, errlen, "%s: tensor %s holds a non-finite value (%g at %lld): nothing written", path, name,
                         x[k], (long long)k);
                for (int j = 0; j < i; j++) tensor_free(out[j]);
                free(out);
                return -1;
            }
        Tensor *t = tensor_new_persistent(name, src->ndim, src->shape, DT_F32);
        memcpy(t->data, x, sizeof(float) * (size_t)src->numel);
        if (o->dtype != DT_F32) tensor_convert_dtype(t, o->dtype);
        out[i] = t;
        th = tensors_hash_add(th, name, t->dtype, t->ndim, t->shape, t->data, (size_t)t->numel * dtype_size(t->dtype));
    }

    char version[16], stage[8], rank[16], alpha[32], step[32], timestep[16], pad[16], th_hex[17];
    snprintf(version, sizeof version, "%d", ADAPTER_FORMAT_VERSION);
    snprintf(stage, sizeof stage, "%d", m->cfg.stage);
    snprintf(rank, sizeof rank, "%d", m->cfg.lora_rank);
    snprintf(alpha, sizeof alpha, "%.9g", (double)m->cfg.lora_alpha);
    snprintf(step, sizeof step, "%lld", o->step);
    snprintf(timestep, sizeof timestep, "%d", DOD_TIMESTEP);
    snprintf(pad, sizeof pad, "%d", dod_model_pad_multiple(m));
    hash_hex(th, th_hex);
    char growth[16];
    snprintf(growth, sizeof growth, "%d", m->has_detail ? m->detail.cfg.growth : 0);
    char *unet_targets = layer_list_json(m->unet_lora), *vae_targets = layer_list_json(m->vae_lora);
    char *blocks = block_map_json(m->unet_lora), *mod = modulation_json(m);
    StMetadata meta[40];
    int nm = 0;
#define META(k, v) meta[nm++] = (StMetadata){(k), (v)}
    META("format", ADAPTER_FORMAT);
    META("format_version", version);
    META("model_kind", "dod");
    META("stage", stage);
    META("lora_rank", rank);
    META("lora_alpha", alpha);
    META("lora_unet_targets", unet_targets);
    META("lora_vae_targets", vae_targets);
    META("lora_block_rule", BLOCK_RULE);
    META("lora_unet_blocks", blocks);
    META("lora_conv", "A: conv with the base layer's kernel, stride and padding (Cin -> r); B: 1x1 conv (r -> Cout)");
    META("lora_formula", "h = W0 x + (alpha / r) B((1 + gamma_k) (A x) + beta_k); plain (VAE): gamma = beta = 0");
    META("timestep", timestep);
    META("prediction_type", sd_prediction_name(m->sched.prediction_type));
    META("extractor", adapter_extractor_name(m->cfg.extractor));
    META("modulation", mod);
    META("detail_growth", growth);
    META("pad_multiple", pad);
    META("base_dir", o->base_dir);
    META("base_config_hash", id.config_hash);
    META("base_weights_hash", id.weights_hash);
    META("base_weights_hashed", WEIGHTS_HASHED);
    META("source_checkpoint", o->checkpoint ? o->checkpoint : "");
    META("source_step", step);
    META("dtype", safetensors_dtype_str(o->dtype));
    META("tensors_hash", th_hex);
    if (o->prompt) META("prompt", o->prompt);
    if (m->adm) {
        META("adm_head_channels", adm_heads);
        META("adm_norm_groups", adm_groups);
        META("adm_num_res_blocks", adm_blocks);
        META("adm_timestep", adm_t);
        META("adm_weights_file", adm_id.file);
        META("adm_weights_bytes", adm_bytes);
        META("adm_weights_hash", adm_id.hash);
        META("adm_weights_hashed", ADM_WEIGHTS_HASHED);
    }
#undef META
    char st_err[ST_ERR_LEN];
    int rc = safetensors_save(path, out, n, meta, nm, st_err) == ST_OK ? 0 : -1;
    if (rc) snprintf(err, errlen, "%s", st_err);
    free(unet_targets);
    free(vae_targets);
    free(blocks);
    free(mod);
    for (int i = 0; i < n; i++) tensor_free(out[i]);
    free(out);
    return rc;
}

// ---- reading ----------------------------------------------------------------------------------------
// The value of a required metadata key, or NULL with a message naming it.
static const char *need_key(SafeTensors *st, const char *key, char *err, size_t errlen) {
    const char *v = safetensors_metadata(st, key);
    if (!v) snprintf(err, errlen, "%s: not a complete dod adapter: metadata key %s is missing", safetensors_path(st), key);
    return v;
}

// A decimal integer in [lo, hi] from key's whole value; -1 (with a message) otherwise.
static int int_key(SafeTensors *st, const char *key, long long lo, long long hi, long long *out, char *err,
                   size_t errlen) {
    const char *v = need_key(st, key, err, errlen);
    if (!v) return -1;
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (errno || end == v || *end || x < lo || x > hi) {
        snprintf(err, errlen, "%s: metadata %s = '%.60s': expected an integer in [%lld, %lld]", safetensors_path(st), key,
                 v, lo, hi);
        return -1;
    }
    *out = x;
    return 0;
}

static int count_json_list(SafeTensors *st, const char *key, int *n, char *err, size_t errlen) {
    const char *v = need_key(st, key, err, errlen);
    if (!v) return -1;
    cJSON *a = cJSON_Parse(v);
    bool ok = a && cJSON_IsArray(a);
    for (cJSON *it = ok ? a->child : NULL; it && ok; it = it->next) ok = cJSON_IsString(it);
    if (ok) *n = cJSON_GetArraySize(a);
    cJSON_Delete(a);
    if (!ok) snprintf(err, errlen, "%s: metadata %s is not a JSON list of layer names", safetensors_path(st), key);
    return ok ? 0 : -1;
}

// The largest modulation width an adapter may record (a bound against absurd allocations: the MLPs hold
// width x width weights).
#define MOD_MAX_WIDTH 16384

// An integer in [lo, hi] from field `field` of the JSON object of metadata key `key`; -1 (with a message
// naming both) otherwise.
static int json_int(SafeTensors *st, const char *key, const cJSON *o, const char *field, int lo, int hi, int *out,
                    char *err, size_t errlen) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, field);
    double x = cJSON_IsNumber(v) ? v->valuedouble : NAN;
    if (!(x >= lo && x <= hi) || x != floor(x)) {
        snprintf(err, errlen, "%s: metadata %s: %s: expected an integer in [%d, %d]%s", safetensors_path(st), key, field,
                 lo, hi, v ? "" : " (missing)");
        return -1;
    }
    *out = (int)x;
    return 0;
}

// The modulation's sizes (metadata `modulation`, modulation_json's object) into info->modulation (=),
// checked against the rank and the extractor already read (the cnn's last width is its feature_dim).
static int read_modulation(SafeTensors *st, AdapterInfo *info, char *err, size_t errlen) {
    const char *path = safetensors_path(st), *v = need_key(st, "modulation", err, errlen);
    if (!v) return -1;
    cJSON *o = cJSON_Parse(v);
    int rc = -1, rank, n_blocks;
    DodModulationConfig c = dod_modulation_default_config(info->rank);
    if (!cJSON_IsObject(o)) snprintf(err, errlen, "%s: metadata modulation is not a JSON object", path);
    else if (!json_int(st, "modulation", o, "rank", 1, 4096, &rank, err, errlen) &&
             !json_int(st, "modulation", o, "feature_dim", 1, MOD_MAX_WIDTH, &c.feature_dim, err, errlen) &&
             !json_int(st, "modulation", o, "de_dim", 1, MOD_MAX_WIDTH, &c.de_dim, err, errlen) &&
             !json_int(st, "modulation", o, "block_dim", 1, MOD_MAX_WIDTH, &c.block_dim, err, errlen) &&
             !json_int(st, "modulation", o, "n_blocks", 1, 4096, &n_blocks, err, errlen)) {
        const cJSON *w = cJSON_GetObjectItemCaseSensitive(o, "cnn_channels");
        rc = 0;
        if (rank != info->rank || n_blocks != LORA_N_BLOCKS) {
            snprintf(err, errlen, "%s: metadata modulation: rank %d, n_blocks %d; the adapter's lora_rank is %d and the "
                     "model has %d LoRA blocks", path, rank, n_blocks, info->rank, LORA_N_BLOCKS);
            rc = -1;
        } else if (info->extractor == DOD_EXTRACTOR_CNN) {
            if (!cJSON_IsArray(w) || cJSON_GetArraySize(w) != DOD_CNN_LAYERS) {
                snprintf(err, errlen, "%s: metadata modulation: cnn_channels is not a list of %d widths (extractor cnn)",
                         path, DOD_CNN_LAYERS);
                rc = -1;
            }
            for (int i = 0; !rc && i < DOD_CNN_LAYERS; i++) {
                const cJSON *x = cJSON_GetArrayItem(w, i);
                double d = cJSON_IsNumber(x) ? x->valuedouble : NAN;
                if (!(d >= 1 && d <= MOD_MAX_WIDTH) || d != floor(d)) {
                    snprintf(err, errlen, "%s: metadata modulation: cnn_channels[%d] is not an integer in [1, %d]", path,
                             i, MOD_MAX_WIDTH);
                    rc = -1;
                } else c.cnn_channels[i] = (int)d;
            }
            if (!rc && c.cnn_channels[DOD_CNN_LAYERS - 1] != c.feature_dim) {
                snprintf(err, errlen, "%s: metadata modulation: the cnn's last width %d is not feature_dim %d", path,
                         c.cnn_channels[DOD_CNN_LAYERS - 1], c.feature_dim);
                rc = -1;
            }
        }
    }
    cJSON_Delete(o);
    if (!rc) info->modulation = c;
    return rc;
}

// The adm extractor's flags and weights identity (metadata adm_*) into info (=).
static int read_adm(SafeTensors *st, AdapterInfo *info, char *err, size_t errlen) {
    long long v;
    info->adm = adm_encoder_default_config();
    if (int_key(st, "adm_head_channels", 1, 4096, &v, err, errlen)) return -1;   // the config keys' ranges
    info->adm.head_channels = (int)v;
    if (int_key(st, "adm_norm_groups", 1, 4096, &v, err, errlen)) return -1;
    info->adm.groups = (int)v;
    if (int_key(st, "adm_num_res_blocks", 1, ADM_MAX_BLOCKS, &v, err, errlen)) return -1;
    info->adm.num_res_blocks = (int)v;
    if (int_key(st, "adm_timestep", 0, 1000000, &v, err, errlen)) return -1;
    info->adm.timestep = (float)v;
    if (int_key(st, "adm_weights_bytes", 0, INT64_MAX, &v, err, errlen)) return -1;
    info->adm_weights.bytes = v;
    const char *s = need_key(st, "adm_weights_file", err, errlen), *h = s ? need_key(st, "adm_weights_hash", err, errlen) : NULL;
    if (!h) return -1;
    if (strlen(h) != 16 || strspn(h, "0123456789abcdef") != 16) {
        snprintf(err, errlen, "%s: metadata adm_weights_hash must be 16 hex digits", safetensors_path(st));
        return -1;
    }
    memcpy(info->adm_weights.hash, h, 17);
    snprintf(info->adm_weights.file, sizeof info->adm_weights.file, "%s", s);
    return 0;
}

// Checks format, version, keys and the tensors' hash of an open file; fills *info (=).
static int read_info(SafeTensors *st, AdapterInfo *info, char *err, size_t errlen) {
    const char *path = safetensors_path(st);
    memset(info, 0, sizeof *info);
    const char *format = safetensors_metadata(st, "format");
    if (!format || strcmp(format, ADAPTER_FORMAT)) {
        snprintf(err, errlen, "%s: not a dod adapter (metadata format is %s%.40s%s, expected %s; dod-export writes "
                 "adapters)", path, format ? "'" : "", format ? format : "missing", format ? "'" : "", ADAPTER_FORMAT);
        return -1;
    }
    long long v;
    if (int_key(st, "format_version", 0, 1000000, &v, err, errlen)) return -1;
    if (v != ADAPTER_FORMAT_VERSION) {
        snprintf(err, errlen, "%s: adapter format version %lld, this build reads version %d", path, v,
                 ADAPTER_FORMAT_VERSION);
        return -1;
    }
    const char *kind = need_key(st, "model_kind", err, errlen);
    if (!kind) return -1;
    if (strcmp(kind, "dod")) {
        snprintf(err, errlen, "%s: adapter of a '%.40s' model, only dod adapters exist", path, kind);
        return -1;
    }
    if (int_key(st, "stage", 1, 2, &v, err, errlen)) return -1;
    info->stage = (int)v;
    if (int_key(st, "lora_rank", 1, 4096, &v, err, errlen)) return -1;
    info->rank = (int)v;
    const char *a = need_key(st, "lora_alpha", err, errlen);
    if (!a) return -1;
    char *end;
    double alpha = strtod(a, &end);
    if (end == a || *end || !(alpha > 0) || !isfinite(alpha)) {
        snprintf(err, errlen, "%s: metadata lora_alpha = '%.40s': expected a positive number", path, a);
        return -1;
    }
    info->alpha = (float)alpha;
    if (int_key(st, "timestep", 0, 100000, &v, err, errlen)) return -1;
    if (v != DOD_TIMESTEP) {
        snprintf(err, errlen, "%s: adapter for timestep %lld, the model runs at t = %d", path, v, DOD_TIMESTEP);
        return -1;
    }
    const char *ex = need_key(st, "extractor", err, errlen);
    if (!ex) return -1;
    if (!strcmp(ex, "cnn")) info->extractor = DOD_EXTRACTOR_CNN;
    else if (!strcmp(ex, "vae")) info->extractor = DOD_EXTRACTOR_VAE;
    else if (!strcmp(ex, "adm")) info->extractor = DOD_EXTRACTOR_ADM;
    else {
        snprintf(err, errlen, "%s: metadata extractor = '%.40s': expected cnn, vae or adm", path, ex);
        return -1;
    }
    if (read_modulation(st, info, err, errlen) || (info->extractor == DOD_EXTRACTOR_ADM && read_adm(st, info, err, errlen)))
        return -1;
    if (int_key(st, "detail_growth", info->stage == 2 ? 1 : 0, info->stage == 2 ? 4096 : 0, &v, err, errlen)) return -1;
    info->detail_growth = (int)v;
    if (count_json_list(st, "lora_unet_targets", &info->n_unet_lora, err, errlen) ||
        count_json_list(st, "lora_vae_targets", &info->n_vae_lora, err, errlen))
        return -1;
    const char *s;
    if (!(s = need_key(st, "prediction_type", err, errlen))) return -1;
    snprintf(info->prediction_type, sizeof info->prediction_type, "%s", s);
    const char *ch = need_key(st, "base_config_hash", err, errlen), *wh = ch ? need_key(st, "base_weights_hash", err, errlen) : NULL;
    if (!wh) return -1;
    if (strlen(ch) != 16 || strlen(wh) != 16) {
        snprintf(err, errlen, "%s: metadata base_config_hash / base_weights_hash must be 16 hex digits", path);
        return -1;
    }
    memcpy(info->base.config_hash, ch, 17);
    memcpy(info->base.weights_hash, wh, 17);
    if (!(s = need_key(st, "base_dir", err, errlen))) return -1;
    snprintf(info->base_dir, sizeof info->base_dir, "%s", s);
    if (!(s = need_key(st, "source_checkpoint", err, errlen))) return -1;
    snprintf(info->source, sizeof info->source, "%s", s);
    long long step;
    if (int_key(st, "source_step", 0, INT64_MAX, &step, err, errlen)) return -1;
    info->step = step;
    if (!(s = need_key(st, "dtype", err, errlen))) return -1;
    snprintf(info->dtype, sizeof info->dtype, "%s", s);
    const char *want = need_key(st, "tensors_hash", err, errlen);
    if (!want) return -1;

    // The tensors themselves: hash (corruption), finite values, and the prompt.
    uint64_t th = tensors_hash_begin();
    for (int i = 0; i < safetensors_count(st); i++) {
        const StEntry *e = safetensors_entry(st, i);
        th = tensors_hash_add(th, e->name, e->dtype, e->ndim, e->shape, safetensors_bytes(st, e), e->end - e->begin);
    }
    char got[17];
    hash_hex(th, got);
    if (strcmp(got, want)) {
        snprintf(err, errlen, "%s: corrupted: its tensors hash to %s, the file says %.16s (re-export the adapter)", path,
                 got, want);
        return -1;
    }
    const StEntry *pe = safetensors_find(st, ADAPTER_PROMPT_TENSOR);
    if (!pe || pe->ndim != 2) {
        snprintf(err, errlen, "%s: tensor %s [L, D] (the prompt embedding) is missing or not 2-d", path,
                 ADAPTER_PROMPT_TENSOR);
        return -1;
    }
    return 0;
}

int adapter_read_info(const char *path, AdapterInfo *info, char *err, size_t errlen) {
    SafeTensors *st;
    char st_err[ST_ERR_LEN];
    if (safetensors_open(path, &st, st_err) != ST_OK) {
        snprintf(err, errlen, "%s", st_err);
        return -1;
    }
    int rc = read_info(st, info, err, errlen);
    safetensors_close(st);
    return rc;
}

// "the base at DIR (config hash X, weights hash Y)" into buf.
static void describe_base(char *buf, size_t len, const char *dir, const BaseIdentity *id, bool weights) {
    if (weights) snprintf(buf, len, "%s (config %s, weights %s)", dir, id->config_hash, id->weights_hash);
    else snprintf(buf, len, "%s (config %s)", dir, id->config_hash);
}

// Copies every model tensor from st (=), checking that the file holds exactly the model's tensors and
// the prompt, each with the model's shape.
static int load_tensors(SafeTensors *st, DodModel *m, char *err, size_t errlen) {
    ParamStore *ps = m->params;
    for (int i = 0; i < safetensors_count(st); i++) {
        const StEntry *e = safetensors_entry(st, i);
        if (strcmp(e->name, ADAPTER_PROMPT_TENSOR) && !params_get(ps, e->name)) {
            snprintf(err, errlen, "%s: holds tensor %s, which a stage-%d DOD model of rank %d on this base does not have",
                     safetensors_path(st), e->name, m->cfg.stage, m->cfg.lora_rank);
            return -1;
        }
    }
    for (int i = 0; i < params_count(ps); i++) {
        Tensor *t = params_at(ps, i);
        const StEntry *e = safetensors_find(st, t->name);
        if (!e) {
            snprintf(err, errlen, "%s: tensor %s is missing (the model on this base has it)", safetensors_path(st),
                     t->name);
            return -1;
        }
        if (checkpoint_read_tensor(st, e, t, "the model on this base", err, errlen)) return -1;
    }
    return 0;
}

// "FILE (N bytes, tensors hash H)" of an adm weights identity into buf.
static void describe_adm(char *buf, size_t len, const AdmIdentity *id) {
    snprintf(buf, len, "%s (%lld bytes, tensors hash %s)", id->file, id->bytes, id->hash);
}

// The recorded modulation and adm weights against the model built from them; 0, or -1 naming both.
static int check_built(const char *path, const AdapterInfo *info, DodModel *m, const char *adm_weights, char *err,
                       size_t errlen) {
    if (m->mod.cfg.feature_dim != info->modulation.feature_dim) {
        snprintf(err, errlen, "%s: metadata modulation: feature_dim %d, the %s extractor on this base gives %d", path,
                 info->modulation.feature_dim, adapter_extractor_name(info->extractor), m->mod.cfg.feature_dim);
        return -1;
    }
    if (!m->adm) return 0;
    AdmIdentity have;
    if (adapter_adm_identity(m->adm, adm_weights, &have, err, errlen)) return -1;
    if (strcmp(have.hash, info->adm_weights.hash)) {
        char a[600], b[600];
        describe_adm(a, sizeof a, &info->adm_weights);
        describe_adm(b, sizeof b, &have);
        snprintf(err, errlen, "%s: trained with other adm extractor weights: exported with %s, --adm-weights %s is %s",
                 path, a, adm_weights, b);
        return -1;
    }
    return 0;
}

DodModel *adapter_load(const char *base_dir, const char *path, const char *adm_weights, DType frozen_dtype,
                       AdapterInfo *info_out, char *err, size_t errlen) {
    SafeTensors *st;
    char st_err[ST_ERR_LEN];
    if (safetensors_open(path, &st, st_err) != ST_OK) {
        snprintf(err, errlen, "%s", st_err);
        return NULL;
    }
    AdapterInfo info;
    if (read_info(st, &info, err, errlen)) {
        safetensors_close(st);
        return NULL;
    }
    // The adm extractor's weights file: given and readable, before anything is loaded.
    if (info.extractor == DOD_EXTRACTOR_ADM) {
        char a[600];
        describe_adm(a, sizeof a, &info.adm_weights);
        struct stat sb;
        if (!adm_weights || !adm_weights[0]) {
            snprintf(err, errlen, "%s: an adapter of a model with the adm extractor needs the guided-diffusion weights it "
                     "was trained with, %s: give them with --adm-weights FILE", path, a);
            safetensors_close(st);
            return NULL;
        }
        if (stat(adm_weights, &sb) != 0 || !S_ISREG(sb.st_mode)) {
            snprintf(err, errlen, "--adm-weights %s: %s (the adm extractor's weights of %s: %s)", adm_weights,
                     stat(adm_weights, &sb) != 0 ? strerror(errno) : "not a regular file", path, a);
            safetensors_close(st);
            return NULL;
        }
    }
    // The base's config files first (cheap), before anything is loaded.
    BaseIdentity have;
    char a[1300], b[1300];
    if (config_hash(base_dir, have.config_hash, err, errlen)) {
        safetensors_close(st);
        return NULL;
    }
    if (strcmp(have.config_hash, info.base.config_hash)) {
        describe_base(a, sizeof a, info.base_dir, &info.base, false);
        describe_base(b, sizeof b, base_dir, &have, false);
        snprintf(err, errlen, "%s: made for another base model: exported on %s, --base is %s; its config files differ",
                 path, a, b);
        safetensors_close(st);
        return NULL;
    }
    // The prompt's width against the UNet (dod_model_create would stop the process on it).
    char cfg_path[4096], cfg_err[SD_CONFIG_ERR_LEN];
    SdUNetConfig ucfg;
    snprintf(cfg_path, sizeof cfg_path, "%s/unet/config.json", base_dir);
    if (sd_unet_config_load(cfg_path, &ucfg, cfg_err)) {
        snprintf(err, errlen, "%s", cfg_err);
        safetensors_close(st);
        return NULL;
    }
    const StEntry *pe = safetensors_find(st, ADAPTER_PROMPT_TENSOR);
    if (pe->shape[1] != ucfg.cross_attention_dim[0]) {
        snprintf(err, errlen, "%s: tensor %s is %lld wide, the UNet of %s takes %d", path, ADAPTER_PROMPT_TENSOR,
                 (long long)pe->shape[1], base_dir, ucfg.cross_attention_dim[0]);
        safetensors_close(st);
        return NULL;
    }

    DodModelConfig cfg = dod_model_default_config(info.stage);
    cfg.base_model_dir = base_dir;
    cfg.prompt_path = path;   // its prompt_embeds tensor (dod_load_prompt)
    cfg.frozen_dtype = frozen_dtype;
    cfg.lora_rank = info.rank;
    cfg.lora_alpha = info.alpha;
    cfg.extractor = info.extractor;
    cfg.modulation = info.modulation;   // dod_model_create sets feature_dim of the vae and adm extractors
    if (info.stage == 2) cfg.detail_growth = info.detail_growth;
    if (info.extractor == DOD_EXTRACTOR_ADM) {
        cfg.adm_weights = adm_weights;
        cfg.adm = info.adm;
    }
    DodModel *m = dod_model_create(&cfg);
    int rc = check_built(path, &info, m, adm_weights, err, errlen);
    if (!rc && (lora_set_count(m->unet_lora) != info.n_unet_lora || lora_set_count(m->vae_lora) != info.n_vae_lora)) {
        snprintf(err, errlen, "%s: lists %d UNet and %d VAE adapters, the model on %s has %d and %d", path,
                 info.n_unet_lora, info.n_vae_lora, base_dir, lora_set_count(m->unet_lora), lora_set_count(m->vae_lora));
        rc = -1;
    }
    if (!rc) {
        weights_hash(m->unet->net.ps, m->vae->net.ps, have.weights_hash);
        if (strcmp(have.weights_hash, info.base.weights_hash)) {
            describe_base(a, sizeof a, info.base_dir, &info.base, true);
            describe_base(b, sizeof b, base_dir, &have, true);
            snprintf(err, errlen, "%s: made for another base model: exported on %s, --base is %s; same configs, "
                     "different weights", path, a, b);
            rc = -1;
        }
    }
    if (!rc) rc = load_tensors(st, m, err, errlen);
    safetensors_close(st);
    if (rc) {
        dod_model_free(m);
        return NULL;
    }
    if (info_out) *info_out = info;
    return m;
}

Model *adapter_model_load(const char *base_dir, const char *path, const char *adm_weights, Device device,
                          AdapterInfo *info, char *err, size_t errlen) {
    if (device == DEV_CUDA && !dod_cuda_available()) {
        snprintf(err, errlen, "no CUDA device: %s", dod_cuda_unavailable_reason());
        return NULL;
    }
    if (device == DEV_CUDA) dod_cuda_set_precision(DOD_PREC_MIXED);
    ag_set_activation_dtype(device == DEV_CUDA ? DT_BF16 : DT_F32);
    DodModel *dm = adapter_load(base_dir, path, adm_weights, device == DEV_CUDA ? DT_BF16 : DT_F32, info, err, errlen);
    if (!dm) return NULL;
    if (device != DEV_CPU) dod_model_to_device(dm, device);
    return model_dod_wrap(dm);
}
