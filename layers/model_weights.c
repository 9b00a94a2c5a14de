// The checkpoint format, its read side, and models with their trained weights (see
// layers/model_weights.h).
#include "layers/model_weights.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

void checkpoint_info_free(CheckpointInfo *info) {
    free(info->config_text);
    info->config_text = NULL;
}

// ---- names and run dirs -------------------------------------------------------------------------
void checkpoint_name(int64_t step, char *buf, size_t len) { snprintf(buf, len, "step_%07lld.safetensors", (long long)step); }

long long checkpoint_parse_name(const char *name) {
    long long step;
    int used = 0;
    if (sscanf(name, "step_%lld.safetensors%n", &step, &used) != 1 || used != (int)strlen(name) || step < 0) return -1;
    return step;
}

int checkpoint_latest(const char *ckpt_dir, char *path, size_t len, char *err, size_t errlen) {
    char latest[4200], line[256] = "";
    snprintf(latest, sizeof latest, "%s/latest", ckpt_dir);
    FILE *f = fopen(latest, "r");
    if (!f) {
        snprintf(err, errlen, "%s: no checkpoint to resume from (%s)", latest, strerror(errno));
        return -1;
    }
    if (!fgets(line, sizeof line, f)) line[0] = 0;
    fclose(f);
    line[strcspn(line, "\r\n")] = 0;
    if (checkpoint_parse_name(line) < 0) {
        snprintf(err, errlen, "%s: does not name a checkpoint (got '%s', expected step_NNNNNNN.safetensors)", latest, line);
        return -1;
    }
    snprintf(path, len, "%s/%s", ckpt_dir, line);
    struct stat st;
    if (stat(path, &st) != 0) {
        snprintf(err, errlen, "%s: names %s, which is missing (%s)", latest, path, strerror(errno));
        return -1;
    }
    return 0;
}

int checkpoint_resolve(const char *run_dir_or_file, const char *ckpt_subdir, char *path, size_t len, char *err,
                       size_t errlen) {
    struct stat st;
    if (stat(run_dir_or_file, &st) != 0) {
        snprintf(err, errlen, "%s: %s", run_dir_or_file, strerror(errno));
        return -1;
    }
    if (!S_ISDIR(st.st_mode)) {
        snprintf(path, len, "%s", run_dir_or_file);
        return 0;
    }
    char dir[4200];
    if (ckpt_subdir[0] == '/') snprintf(dir, sizeof dir, "%s", ckpt_subdir);
    else snprintf(dir, sizeof dir, "%s/%s", run_dir_or_file, ckpt_subdir);
    return checkpoint_latest(dir, path, len, err, errlen);
}

// ---- the file ----------------------------------------------------------------------------------
int checkpoint_write_file(const char *path, Tensor *const *tensors, int n, const CheckpointInfo *info, char *err,
                          size_t errlen) {
    char step[32], astep[32], seed[32], lnext[32], stage[16], rng[96], ver[8], world[16];
    snprintf(step, sizeof step, "%lld", (long long)info->step);
    snprintf(astep, sizeof astep, "%lld", (long long)info->adamw_step);
    snprintf(seed, sizeof seed, "%llu", (unsigned long long)info->seed);
    snprintf(lnext, sizeof lnext, "%lld", (long long)info->loader_next);
    snprintf(stage, sizeof stage, "%d", info->stage);
    snprintf(ver, sizeof ver, "%d", CKPT_FORMAT_VERSION);
    snprintf(world, sizeof world, "%d", info->world_size > 0 ? info->world_size : 1);
    // The training noise is counter-based: micro-batch b uses rng_key(seed, b), so the counter
    // loader_next is the whole RNG state.
    snprintf(rng, sizeof rng, "keyed: noise_seed = rng_key(%llu, batch index)", (unsigned long long)info->seed);
    StMetadata meta[] = {{"format", CKPT_FORMAT}, {"format_version", ver}, {"step", step},
                         {"adamw_step", astep},  {"seed", seed},          {"rng", rng},
                         {"loader_next", lnext}, {"model_kind", info->model_kind}, {"stage", stage},
                         {"config", info->config_text ? info->config_text : ""}, {"world_size", world},
                         {"prompt", info->prompt ? info->prompt : ""},
                         {"negative_prompt", info->negative_prompt ? info->negative_prompt : ""},
                         {"prompt_embedding", info->prompt_embedding ? info->prompt_embedding : ""}};
    char st_err[ST_ERR_LEN];
    if (safetensors_save(path, tensors, n, meta, (int)(sizeof meta / sizeof meta[0]), st_err) != ST_OK) {
        snprintf(err, errlen, "%s", st_err);
        return -1;
    }
    return 0;
}

SafeTensors *checkpoint_open(const char *path, char *err, size_t errlen) {
    SafeTensors *st = NULL;
    char st_err[ST_ERR_LEN];
    if (safetensors_open(path, &st, st_err) != ST_OK) {
        snprintf(err, errlen, "checkpoint %s", st_err);
        return NULL;
    }
    const char *fmt = safetensors_metadata(st, "format"), *ver = safetensors_metadata(st, "format_version");
    if (!fmt || strcmp(fmt, CKPT_FORMAT)) {
        snprintf(err, errlen, "%s: not a dod-train checkpoint (metadata format is %s)", path, fmt ? fmt : "missing");
        safetensors_close(st);
        return NULL;
    }
    if (!ver || atoi(ver) != CKPT_FORMAT_VERSION) {
        snprintf(err, errlen, "%s: checkpoint format version %s, this build reads %d", path, ver ? ver : "missing",
                 CKPT_FORMAT_VERSION);
        safetensors_close(st);
        return NULL;
    }
    return st;
}

// Integer metadata value (=). -1 with a message when absent or malformed.
static int meta_int(const SafeTensors *st, const char *key, long long *out, char *err, size_t errlen) {
    const char *v = safetensors_metadata(st, key);
    char *end = NULL;
    errno = 0;
    long long x = v ? strtoll(v, &end, 10) : 0;
    if (!v || errno || end == v || *end) {
        snprintf(err, errlen, "%s: metadata %s is %s", safetensors_path(st), key, v ? "not an integer" : "missing");
        return -1;
    }
    *out = x;
    return 0;
}

int checkpoint_read_info(const SafeTensors *st, CheckpointInfo *info, char *err, size_t errlen) {
    memset(info, 0, sizeof *info);
    long long step, astep, seed, lnext, stage;
    if (meta_int(st, "step", &step, err, errlen) || meta_int(st, "adamw_step", &astep, err, errlen) ||
        meta_int(st, "seed", &seed, err, errlen) || meta_int(st, "loader_next", &lnext, err, errlen) ||
        meta_int(st, "stage", &stage, err, errlen))
        return -1;
    long long world = 1;   // older checkpoints do not say: one process
    if (safetensors_metadata(st, "world_size") && meta_int(st, "world_size", &world, err, errlen)) return -1;
    // Ranges: a step count beyond 2^40 is no run anyone made, and keeps step * grad_accum * processes exact.
    const struct {
        const char *key;
        long long v, lo, hi;
    } ranges[] = {{"step", step, 0, CKPT_MAX_STEP},         {"adamw_step", astep, 0, CKPT_MAX_STEP},
                  {"loader_next", lnext, 0, 1ll << 62},     {"stage", stage, 1, 2},
                  {"world_size", world, 1, CKPT_MAX_WORLD}};
    for (size_t k = 0; k < sizeof ranges / sizeof ranges[0]; k++)
        if (ranges[k].v < ranges[k].lo || ranges[k].v > ranges[k].hi) {
            snprintf(err, errlen, "%s: metadata %s is %lld, outside [%lld, %lld] (damaged checkpoint)",
                     safetensors_path(st), ranges[k].key, ranges[k].v, ranges[k].lo, ranges[k].hi);
            return -1;
        }
    info->step = step;
    info->adamw_step = astep;
    info->seed = (uint64_t)seed;
    info->loader_next = lnext;
    info->stage = (int)stage;
    info->world_size = (int)world;
    const char *kind = safetensors_metadata(st, "model_kind"), *cfg = safetensors_metadata(st, "config");
    snprintf(info->model_kind, sizeof info->model_kind, "%s", kind ? kind : "");
    info->config_text = strdup(cfg ? cfg : "");
    return 0;
}

int checkpoint_read_tensor(const SafeTensors *st, const StEntry *e, Tensor *dst, const char *label, char *err,
                           size_t errlen) {
    bool same = e->ndim == dst->ndim;
    for (int d = 0; same && d < e->ndim; d++) same = e->shape[d] == dst->shape[d];
    if (!same) {
        Tensor probe = {.ndim = e->ndim};
        memcpy(probe.shape, e->shape, sizeof e->shape);
        char want[128];
        snprintf(want, sizeof want, "%s", shape_str(dst));
        snprintf(err, errlen, "%s: tensor %s has shape %s, %s expects %s", safetensors_path(st), e->name,
                 shape_str(&probe), label, want);
        return -1;
    }
    if (dst->dtype != DT_F32 && dst->dtype != DT_BF16 && dst->dtype != DT_F16) {
        snprintf(err, errlen, "%s: cannot load tensor %s into %s storage", safetensors_path(st), e->name, dtype_name(dst->dtype));
        return -1;
    }
    // Converted on the host by the reader (a view of the mapping when the dtypes agree), then copied.
    Tensor *src = NULL;
    char st_err[ST_ERR_LEN];
    if (safetensors_tensor(st, e, dst->dtype, NULL, &src, st_err) != ST_OK) {
        snprintf(err, errlen, "%s", st_err);
        return -1;
    }
    device_copy(dst->data, dst->device, src->data, DEV_CPU, (size_t)dst->numel * dtype_size(dst->dtype));
    tensor_free(src);
    return 0;
}

static bool is_optimizer_tensor(const char *name) { return !strncmp(name, CKPT_OPTIM_PREFIX, strlen(CKPT_OPTIM_PREFIX)); }

int checkpoint_read_trainable(const SafeTensors *st, Tensor *const *params, int n, char *err, size_t errlen) {
    const char *path = safetensors_path(st);
    // Every model tensor of the file must be one the model trains (a config change would show here).
    for (int i = 0; i < safetensors_count(st); i++) {
        const StEntry *e = safetensors_entry(st, i);
        if (is_optimizer_tensor(e->name)) continue;
        bool known = false;
        for (int j = 0; j < n && !known; j++) known = !strcmp(params[j]->name, e->name);
        if (!known) {
            snprintf(err, errlen, "%s: holds tensor %s, which the model does not train in this configuration", path, e->name);
            return -1;
        }
    }
    for (int i = 0; i < n; i++) {
        const StEntry *e = safetensors_find(st, params[i]->name);
        if (!e) {
            snprintf(err, errlen, "%s: trainable tensor %s is missing", path, params[i]->name);
            return -1;
        }
        if (checkpoint_read_tensor(st, e, params[i], "the model", err, errlen)) return -1;
    }
    return 0;
}

int checkpoint_load_weights(const char *path, ParamStore *ps, int *n_loaded, char *err, size_t errlen) {
    SafeTensors *st = checkpoint_open(path, err, errlen);
    if (!st) return -1;
    int loaded = 0, rc = 0;
    for (int i = 0; !rc && i < safetensors_count(st); i++) {
        const StEntry *e = safetensors_entry(st, i);
        if (is_optimizer_tensor(e->name)) continue;
        Tensor *dst = params_get(ps, e->name);
        if (!dst) {
            snprintf(err, errlen, "%s: tensor %s has no counterpart in the model", path, e->name);
            rc = -1;
            break;
        }
        if (checkpoint_read_tensor(st, e, dst, "the model", err, errlen)) rc = -1;
        else loaded++;
    }
    safetensors_close(st);
    if (n_loaded) *n_loaded = loaded;
    return rc;
}

// ---- models with their weights ------------------------------------------------------------------
Model *model_load(const ModelOptions *o, int *n_stage1, char *err, size_t errlen) {
    Model *m = model_create(o, err, errlen);
    if (!m) return NULL;
    int n_loaded = 0;
    if (o->stage == 2) {   // the frozen stage-1 tensors come from the stage-1 run
        char init_path[2 * CFG_STR + 64];
        if (checkpoint_resolve(o->init_from, o->ckpt_dir, init_path, sizeof init_path, err, errlen) ||
            checkpoint_load_weights(init_path, m->params(m->self), &n_loaded, err, errlen)) {
            model_free(m);
            return NULL;
        }
    }
    if (n_stage1) *n_stage1 = n_loaded;
    return m;
}

int model_load_checkpoint(Model *m, const ModelOptions *o, const char *config_file, const char *ckpt_path,
                          char *path_out, size_t path_len, CheckpointInfo *info, char *err, size_t errlen) {
    char path[2 * CFG_STR + 64];
    if (checkpoint_resolve(ckpt_path, o->ckpt_dir, path, sizeof path, err, errlen)) return -1;
    if (path_out) snprintf(path_out, path_len, "%s", path);
    SafeTensors *st = checkpoint_open(path, err, errlen);
    if (!st) return -1;
    ParamStore *ps = m->params(m->self);
    int cap = params_count(ps);
    Tensor **trainable = dod_calloc(sizeof(Tensor *) * (size_t)(cap ? cap : 1), "trainable list");
    int n = params_trainable(ps, trainable, cap);
    CheckpointInfo ci;
    int rc = checkpoint_read_info(st, &ci, err, errlen);
    if (!rc && checkpoint_read_trainable(st, trainable, n, err, errlen)) {
        checkpoint_info_free(&ci);
        rc = -1;
    }
    free(trainable);
    safetensors_close(st);
    if (rc) return -1;
    if (strcmp(ci.model_kind, m->kind) || ci.stage != o->stage) {
        const char *cf = config_file ? config_file : "";
        snprintf(err, errlen, "%s: checkpoint of a %s stage-%d model, the configuration%s%s describes a %s stage-%lld "
                 "model", path, ci.model_kind, ci.stage, cf[0] ? " " : "", cf, m->kind, o->stage);
        checkpoint_info_free(&ci);
        return -1;
    }
    if (info) *info = ci;
    else checkpoint_info_free(&ci);
    return 0;
}
