// Loading Stable Diffusion weights (diffusers directory or original single file) into ParamStores,
// checked against the tensor tables of sd_weights.c. See sd_weights.h for the memory behaviour.
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "layers/sd_weights.h"

static void list_push(char ***list, int *n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void list_push(char ***list, int *n, const char *fmt, ...) {
    char *s = NULL;
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(&s, fmt, ap) < 0) s = NULL;
    va_end(ap);
    DOD_CHECK(s != NULL, "sd load report", "out of memory");
    *list = realloc(*list, sizeof(char *) * (size_t)(*n + 1));
    DOD_CHECK(*list != NULL, "sd load report", "out of memory");
    (*list)[(*n)++] = s;
}

static void list_free(char **list, int n) {
    for (int i = 0; i < n; i++) free(list[i]);
    free(list);
}

void sd_report_free(SdLoadReport *rep) {
    list_free(rep->missing, rep->n_missing);
    list_free(rep->mismatch, rep->n_mismatch);
    list_free(rep->unexpected, rep->n_unexpected);
    memset(rep, 0, sizeof *rep);
}

static const char *dims_str(int ndim, const int64_t *shape, char *buf, size_t len) {
    int k = snprintf(buf, len, "[");
    for (int d = 0; d < ndim && k < (int)len; d++) k += snprintf(buf + k, len - (size_t)k, d ? ", %lld" : "%lld", (long long)shape[d]);
    if (k < (int)len) snprintf(buf + k, len - (size_t)k, "]");
    return buf;
}

// diffusers wrote the VAE mid-block attention as query/key/value/proj_attn before 0.14; many hub
// VAEs (SD 2.1's among them) still carry those names.
static bool deprecated_vae_name(const char *name, char *out, size_t len) {
    static const char *const pairs[][2] = {{".to_q.", ".query."}, {".to_k.", ".key."}, {".to_v.", ".value."},
                                           {".to_out.0.", ".proj_attn."}};
    if (!strstr(name, "mid_block.attentions.")) return false;
    for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++) {
        const char *at = strstr(name, pairs[i][0]);
        if (!at) continue;
        snprintf(out, len, "%.*s%s%s", (int)(at - name), name, pairs[i][1], at + strlen(pairs[i][0]));
        return true;
    }
    return false;
}

// Same shape, or (for the 1x1 rules) [O, I] vs [O, I, 1, 1] either way round.
static bool shape_ok(const SdTensorSpec *s, const StEntry *e) {
    if (s->ndim == e->ndim && !memcmp(s->shape, e->shape, sizeof(int64_t) * (size_t)s->ndim)) return true;
    if (s->rule == SD_SHAPE_EXACT || s->shape[0] != e->shape[0] || s->shape[1] != e->shape[1]) return false;
    if (e->ndim == 2) return s->ndim == 4;
    return e->ndim == 4 && s->ndim == 2 && e->shape[2] == 1 && e->shape[3] == 1;
}

int sd_load_tensors(const SafeTensors *st, const SdTensorTable *table, SdNaming naming, const char *unexpected_prefix,
                    DType dtype, ParamStore *ps, SdLoadReport *rep, char **err) {
    *err = NULL;
    const char *path = safetensors_path(st);
    int nfile = safetensors_count(st);
    const StEntry *first = safetensors_entry(st, 0);
    bool *used = calloc((size_t)(nfile > 0 ? nfile : 1), 1);
    const StEntry **found = calloc((size_t)(table->n > 0 ? table->n : 1), sizeof(StEntry *));
    int missing0 = rep->n_missing, mismatch0 = rep->n_mismatch;

    // Pass 1: find and check everything, so every problem is reported at once.
    for (int i = 0; i < table->n; i++) {
        const SdTensorSpec *s = &table->items[i];
        const StEntry *e = safetensors_find(st, naming == SD_NAMES_LDM ? s->ldm_name : s->name);
        char alias[SD_NAME_LEN];
        if (!e && naming == SD_NAMES_DIFFUSERS && deprecated_vae_name(s->name, alias, sizeof alias))
            e = safetensors_find(st, alias);
        if (!e) {
            if (naming == SD_NAMES_LDM) list_push(&rep->missing, &rep->n_missing, "%s (%s)", s->ldm_name, s->name);
            else list_push(&rep->missing, &rep->n_missing, "%s", s->name);
            continue;
        }
        used[e - first] = true;
        if (!shape_ok(s, e)) {
            char a[96], b[96];
            list_push(&rep->mismatch, &rep->n_mismatch, "%s: file has %s, config expects %s", s->name,
                      dims_str(e->ndim, e->shape, a, sizeof a), dims_str(s->ndim, s->shape, b, sizeof b));
            continue;
        }
        if ((dtype == DT_I64) != (e->dtype == DT_I64)) {
            list_push(&rep->mismatch, &rep->n_mismatch, "%s: stored as %s, cannot be loaded as %s", s->name,
                      safetensors_dtype_str(e->dtype), safetensors_dtype_str(dtype));
            continue;
        }
        found[i] = e;
    }
    for (int k = 0; k < nfile; k++) {
        const StEntry *e = safetensors_entry(st, k);
        if (used[k] || (unexpected_prefix && strncmp(e->name, unexpected_prefix, strlen(unexpected_prefix)))) continue;
        list_push(&rep->unexpected, &rep->n_unexpected, "%s", e->name);
    }
    int n_missing = rep->n_missing - missing0, n_mismatch = rep->n_mismatch - mismatch0;
    if (n_missing || n_mismatch) {
        size_t len = 0;
        FILE *f = open_memstream(err, &len);
        fprintf(f, "%s: weights do not match the model config", path);
        if (n_missing) fprintf(f, "\n  %d of %d expected tensors missing:", n_missing, table->n);
        for (int i = missing0; i < rep->n_missing; i++) fprintf(f, "\n    %s", rep->missing[i]);
        if (n_mismatch) fprintf(f, "\n  %d with the wrong shape or dtype:", n_mismatch);
        for (int i = mismatch0; i < rep->n_mismatch; i++) fprintf(f, "\n    %s", rep->mismatch[i]);
        fclose(f);
        free(used);
        free(found);
        return -1;
    }

    // Pass 2: wrap (same dtype: zero copy) or convert (one heap copy, then drop the source pages).
    for (int i = 0; i < table->n; i++) {
        const SdTensorSpec *s = &table->items[i];
        const StEntry *e = found[i];
        Tensor *t;
        char msg[ST_ERR_LEN];
        if (safetensors_tensor(st, e, dtype, s->name, &t, msg) != ST_OK) {   // dtypes were checked: NaN / inf
            *err = strdup(msg);   // the tensors of ps so far stay there: the caller frees ps
            DOD_CHECK(*err != NULL, path, "out of memory");
            free(used);
            free(found);
            return -1;
        }
        if (s->rule == SD_SHAPE_1X1_LINEAR && t->ndim == 4) t->ndim = 2;   // [O, I, 1, 1] -> [O, I]: same bytes
        int64_t bytes = (int64_t)(e->end - e->begin);
        if (t->owns_data) {
            rep->n_converted++;
            rep->bytes_converted += t->numel * (int64_t)dtype_size(dtype);
            safetensors_drop_pages(st, e);
        } else {
            rep->n_zero_copy++;
            rep->bytes_zero_copy += bytes;
        }
        params_add(ps, s->name, t);
    }
    free(used);
    free(found);
    return 0;
}

// ---- whole models -------------------------------------------------------------------------------
static bool file_exists(const char *path) { return access(path, R_OK) == 0; }

// Appends "msg" to *acc (newline-separated), taking ownership of msg.
static void append_err(char **acc, char *msg) {
    if (!msg) return;
    if (!*acc) {
        *acc = msg;
        return;
    }
    char *joined = NULL;
    if (asprintf(&joined, "%s\n%s", *acc, msg) < 0) joined = NULL;
    DOD_CHECK(joined != NULL, "sd load", "out of memory");
    free(*acc);
    free(msg);
    *acc = joined;
}

static char *strdup_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *strdup_printf(const char *fmt, ...) {
    char *s = NULL;
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(&s, fmt, ap) < 0) s = NULL;
    va_end(ap);
    DOD_CHECK(s != NULL, "sd load", "out of memory");
    return s;
}

static int load_configs(const char *dir, SdModel *m, char **err) {
    char path[4096], msg[SD_CONFIG_ERR_LEN];
    snprintf(path, sizeof path, "%s/unet/config.json", dir);
    if (sd_unet_config_load(path, &m->unet_cfg, msg)) return append_err(err, strdup(msg)), -1;
    snprintf(path, sizeof path, "%s/vae/config.json", dir);
    if (sd_vae_config_load(path, &m->vae_cfg, msg)) return append_err(err, strdup(msg)), -1;
    snprintf(path, sizeof path, "%s/scheduler/scheduler_config.json", dir);
    if (sd_scheduler_config_load(path, &m->sched_cfg, msg)) return append_err(err, strdup(msg)), -1;
    return 0;
}

// The weights file of one diffusers part. Preference: the fp16 variant when loading as f16 (zero
// copy), otherwise the full-precision file (f32 -> bf16 rounds once; f16 -> bf16 would round twice).
static int pick_weights(const char *dir, const char *part, DType dtype, char *out, size_t len, char **err) {
    char full[4096], half[4096];
    snprintf(full, sizeof full, "%s/%s/diffusion_pytorch_model.safetensors", dir, part);
    snprintf(half, sizeof half, "%s/%s/diffusion_pytorch_model.fp16.safetensors", dir, part);
    bool has_full = file_exists(full), has_half = file_exists(half);
    if (has_full || has_half) {
        snprintf(out, len, "%s", (has_half && (dtype == DT_F16 || !has_full)) ? half : full);
        return 0;
    }
    // PyTorch checkpoints (read by the restricted unpickler of layers/torch_ckpt.h), same preference.
    snprintf(full, sizeof full, "%s/%s/diffusion_pytorch_model.bin", dir, part);
    snprintf(half, sizeof half, "%s/%s/diffusion_pytorch_model.fp16.bin", dir, part);
    has_full = file_exists(full), has_half = file_exists(half);
    if (has_full || has_half) {
        snprintf(out, len, "%s", (has_half && (dtype == DT_F16 || !has_full)) ? half : full);
        return 0;
    }
    append_err(err, strdup_printf("%s/%s: no diffusion_pytorch_model.safetensors or .bin (or their .fp16 variants) found",
                                  dir, part));
    return -1;
}

static void model_reset(SdModel *m) {
    sd_model_free(m);
    memset(m, 0, sizeof *m);
}

// Loads one part from st into a new *ps, appending any error to *err.
static int load_part(const SafeTensors *st, const SdTensorTable *table, SdNaming naming, const char *prefix,
                     DType dtype, ParamStore **ps, SdLoadReport *rep, char **err) {
    *ps = params_new();
    char *msg = NULL;
    if (sd_load_tensors(st, table, naming, prefix, dtype, *ps, rep, &msg)) {
        append_err(err, msg);
        return -1;
    }
    return 0;
}

int sd_model_load_diffusers(const char *dir, DType dtype, SdModel *m, char **err) {
    memset(m, 0, sizeof *m);
    *err = NULL;
    if (load_configs(dir, m, err)) return -1;
    const char *parts[2] = {"unet", "vae"};
    SdTensorTable tables[2] = {{0}};
    sd_unet_tensor_table(&m->unet_cfg, &tables[0]);
    sd_vae_tensor_table(&m->vae_cfg, &tables[1]);
    ParamStore **stores[2] = {&m->unet, &m->vae};
    SdLoadReport *reps[2] = {&m->unet_report, &m->vae_report};
    int rc = 0;
    for (int p = 0; p < 2; p++) {   // both parts are checked even if the first fails: report everything
        char path[4096], msg[ST_ERR_LEN];
        if (pick_weights(dir, parts[p], dtype, path, sizeof path, err)) {
            rc = -1;
            continue;
        }
        if (tensor_file_open(path, &m->files[p], msg) != ST_OK) {
            append_err(err, strdup(msg));
            rc = -1;
            continue;
        }
        if (load_part(m->files[p], &tables[p], SD_NAMES_DIFFUSERS, NULL, dtype, stores[p], reps[p], err)) rc = -1;
        if (reps[p]->n_zero_copy == 0) {   // everything was converted: the mapping is no longer needed
            safetensors_close(m->files[p]);
            m->files[p] = NULL;
        }
    }
    sd_table_free(&tables[0]);
    sd_table_free(&tables[1]);
    if (rc) model_reset(m);
    return rc;
}

int sd_model_load_single_file(const char *ckpt, const char *config_dir, DType dtype, SdModel *m, char **err) {
    memset(m, 0, sizeof *m);
    *err = NULL;
    if (load_configs(config_dir, m, err)) return -1;
    char msg[ST_ERR_LEN];
    if (tensor_file_open(ckpt, &m->files[0], msg) != ST_OK) {   // safetensors or a PyTorch .ckpt
        append_err(err, strdup(msg));
        return -1;
    }
    SdTensorTable unet = {0}, vae = {0};
    sd_unet_tensor_table(&m->unet_cfg, &unet);
    sd_vae_tensor_table(&m->vae_cfg, &vae);
    int rc = 0;
    if (load_part(m->files[0], &unet, SD_NAMES_LDM, "model.diffusion_model.", dtype, &m->unet, &m->unet_report, err))
        rc = -1;
    if (load_part(m->files[0], &vae, SD_NAMES_LDM, "first_stage_model.", dtype, &m->vae, &m->vae_report, err))
        rc = -1;
    for (int k = 0; k < safetensors_count(m->files[0]); k++) {
        const char *name = safetensors_entry(m->files[0], k)->name;
        if (strncmp(name, "model.diffusion_model.", 22) && strncmp(name, "first_stage_model.", 18)) m->n_other_tensors++;
    }
    if (!rc && m->unet_report.n_zero_copy + m->vae_report.n_zero_copy == 0) {
        safetensors_close(m->files[0]);
        m->files[0] = NULL;
    }
    sd_table_free(&unet);
    sd_table_free(&vae);
    if (rc) model_reset(m);
    return rc;
}

void sd_model_free(SdModel *m) {
    // Parameters first: zero-copy views point into the mappings.
    params_free(m->unet);
    params_free(m->vae);
    m->unet = m->vae = NULL;
    for (int i = 0; i < 2; i++) {
        safetensors_close(m->files[i]);
        m->files[i] = NULL;
    }
    sd_report_free(&m->unet_report);
    sd_report_free(&m->vae_report);
}

void sd_model_print_summary(const SdModel *m) {
    const SdLoadReport *reps[2] = {&m->unet_report, &m->vae_report};
    const char *names[2] = {"unet", "vae"};
    for (int p = 0; p < 2; p++) {
        const SdLoadReport *r = reps[p];
        fprintf(stderr, "dod: %s: %d tensors (%d zero-copy views, %.1f MiB mapped; %d converted, %.1f MiB copied)\n",
                names[p], r->n_zero_copy + r->n_converted, r->n_zero_copy, r->bytes_zero_copy / 1048576.0,
                r->n_converted, r->bytes_converted / 1048576.0);
        for (int i = 0; i < r->n_unexpected; i++)
            fprintf(stderr, "dod: warning: %s: unexpected tensor %s (not used by the model config)\n", names[p],
                    r->unexpected[i]);
    }
    if (m->n_other_tensors)
        fprintf(stderr, "dod: single file: %d tensors of other components (text encoder, EMA, buffers) ignored\n",
                m->n_other_tensors);
}

void sd_tensor_make_owned(Tensor *t) {
    if (t->owns_data) return;
    size_t bytes = (size_t)t->numel * dtype_size(t->dtype);
    void *copy = dod_malloc(bytes, t->name ? t->name : "weight copy");
    memcpy(copy, t->data, bytes);
    t->data = copy;
    t->owns_data = true;
}
