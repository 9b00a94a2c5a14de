// Training checkpoints (see train/checkpoint.h).
#include "train/checkpoint.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "autograd/cuda/cuda_backend.h"
#include "autograd/finite.h"
#include "data/fileio.h"
#include "layers/safetensors.h"

void checkpoint_info_free(CheckpointInfo *info) {
    free(info->config_text);
    info->config_text = NULL;
}

void checkpoint_name(int64_t step, char *buf, size_t len) { snprintf(buf, len, "step_%07lld.safetensors", (long long)step); }

// Parses "step_NNNNNNN.safetensors" -> step; -1 for anything else.
static long long parse_ckpt_name(const char *name) {
    long long step;
    int used = 0;
    if (sscanf(name, "step_%lld.safetensors%n", &step, &used) != 1 || used != (int)strlen(name) || step < 0) return -1;
    return step;
}

static int cmp_ll(const void *a, const void *b) {
    long long x = *(const long long *)a, y = *(const long long *)b;
    return (x > y) - (x < y);
}

// Deletes the oldest checkpoints of ckpt_dir so that keep_last remain (never `keep_step`).
static void prune(const char *ckpt_dir, int keep_last, long long keep_step) {
    if (keep_last <= 0) return;
    DIR *d = opendir(ckpt_dir);
    if (!d) return;
    long long steps[4096];
    int n = 0;
    for (struct dirent *e; (e = readdir(d)) && n < 4096;) {
        long long s = parse_ckpt_name(e->d_name);
        if (s >= 0) steps[n++] = s;
    }
    closedir(d);
    qsort(steps, (size_t)n, sizeof steps[0], cmp_ll);
    for (int i = 0; i + keep_last < n; i++) {
        if (steps[i] == keep_step) continue;
        char name[64], path[4200];
        checkpoint_name(steps[i], name, sizeof name);
        snprintf(path, sizeof path, "%s/%s", ckpt_dir, name);
        if (unlink(path) != 0) fprintf(stderr, "dod-train: warning: cannot delete old checkpoint %s: %s\n", path, strerror(errno));
    }
}

int checkpoint_save(const char *ckpt_dir, Tensor *const *params, int n, const AdamW *opt,
                    const CheckpointInfo *info, int keep_last, char *path_out, size_t path_len, char *err,
                    size_t errlen) {
    if (fs_mkdirs(ckpt_dir, err, errlen)) return -1;
    if (opt && opt->n != n) {
        snprintf(err, errlen, "%s: optimizer has %d tensors but %d trainable tensors were given", ckpt_dir, opt->n, n);
        return -1;
    }
    char name[64], path[4200];
    checkpoint_name(info->step, name, sizeof name);
    snprintf(path, sizeof path, "%s/%s", ckpt_dir, name);
    int total = n * (opt ? 3 : 1);
    // What is written, in file order: the parameters, then the moments. Host tensors are written
    // as they are; a CUDA parameter or moment goes through a host copy made here (owned[] marks
    // them; the CPU path copies nothing).
    Tensor **all = dod_calloc(sizeof(Tensor *) * (size_t)(total ? total : 1), "checkpoint tensor list");
    bool *owned = dod_calloc(sizeof(bool) * (size_t)(total ? total : 1), "checkpoint tensor list");
    int k = 0, rc = 0;
    for (int i = 0; i < n && !rc; i++) {
        const Tensor *p = params[i];
        if (p->dtype != DT_F32 || !p->name || (opt && opt->params[i] != p)) {
            snprintf(err, errlen, "%s: trainable tensor %s is %s (must be a named f32 tensor in optimizer order)", path,
                     p->name ? p->name : shape_str(p), p->name ? dtype_name(p->dtype) : "unnamed");
            rc = -1;
            break;
        }
        if (p->device == DEV_CPU) {
            all[k++] = (Tensor *)p;
        } else {
            owned[k] = true;
            all[k++] = tensor_to_device(p, DEV_CPU);   // persistent, same name
        }
    }
    for (int i = 0; opt && !rc && i < n; i++)
        for (int which = 0; which < 2; which++) {
            char tname[512];
            snprintf(tname, sizeof tname, "optim.%s.%s", which ? "v" : "m", params[i]->name);
            float *moment = which ? opt->v[i] : opt->m[i];   // on params[i]'s device (adamw_new)
            owned[k] = true;   // the header always; the data only when copied from the device
            if (params[i]->device == DEV_CPU) {
                all[k++] = tensor_wrap_persistent(tname, params[i]->ndim, params[i]->shape, DT_F32, moment);
            } else {
                Tensor *host = tensor_new_persistent(tname, params[i]->ndim, params[i]->shape, DT_F32);
                cuda_copy_d2h(host->data, moment, sizeof(float) * (size_t)params[i]->numel);
                all[k++] = host;
            }
        }
    if (!rc) {
        char step[32], astep[32], seed[32], lnext[32], stage[16], rng[96], ver[8];
        snprintf(step, sizeof step, "%lld", (long long)info->step);
        snprintf(astep, sizeof astep, "%lld", (long long)info->adamw_step);
        snprintf(seed, sizeof seed, "%llu", (unsigned long long)info->seed);
        snprintf(lnext, sizeof lnext, "%lld", (long long)info->loader_next);
        snprintf(stage, sizeof stage, "%d", info->stage);
        snprintf(ver, sizeof ver, "%d", CKPT_FORMAT_VERSION);
        // The training noise is counter-based: micro-batch b uses rng_key(seed, b), so the counter
        // loader_next is the whole RNG state.
        snprintf(rng, sizeof rng, "keyed: noise_seed = rng_key(%llu, batch index)", (unsigned long long)info->seed);
        StMetadata meta[] = {{"format", CKPT_FORMAT}, {"format_version", ver}, {"step", step},
                             {"adamw_step", astep},  {"seed", seed},          {"rng", rng},
                             {"loader_next", lnext}, {"model_kind", info->model_kind}, {"stage", stage},
                             {"config", info->config_text ? info->config_text : ""}};
        char st_err[ST_ERR_LEN];
        if (safetensors_save(path, all, k, meta, (int)(sizeof meta / sizeof meta[0]), st_err) != ST_OK) {
            snprintf(err, errlen, "%s", st_err);
            rc = -1;
        }
    }
    for (int i = 0; i < k; i++)   // host copies and the optim.* wrappers (tensor_free leaves a wrapper's data)
        if (owned[i]) tensor_free(all[i]);
    free(owned);
    free(all);
    if (rc) return -1;
    char latest[4200], line[80];
    snprintf(latest, sizeof latest, "%s/latest", ckpt_dir);
    snprintf(line, sizeof line, "%s\n", name);
    if (fs_write_text_atomic(latest, line, err, errlen)) return -1;
    prune(ckpt_dir, keep_last, info->step);
    if (path_out) snprintf(path_out, path_len, "%s", path);
    return 0;
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
    if (parse_ckpt_name(line) < 0) {
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

// Copies entry e (any float dtype) into dst (=), converting to dst's storage dtype; checks the shape.
// A CUDA dst is converted into a host buffer, then copied to the device.
static int copy_entry(const SafeTensors *st, const StEntry *e, Tensor *dst, const char *label, char *err, size_t errlen) {
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
    Tensor *src = NULL;
    char st_err[ST_ERR_LEN];
    if (safetensors_tensor(st, e, DT_F32, NULL, &src, st_err) != ST_OK) {
        snprintf(err, errlen, "%s", st_err);
        return -1;
    }
    if (dst->dtype != DT_F32 && dst->dtype != DT_BF16 && dst->dtype != DT_F16) {
        tensor_free(src);
        snprintf(err, errlen, "%s: cannot load tensor %s into %s storage", safetensors_path(st), e->name, dtype_name(dst->dtype));
        return -1;
    }
    const float *s = src->data;
    int64_t bad = dod_first_nonfinite_f32(s, src->numel);
    if (bad >= 0) {
        snprintf(err, errlen, "%s: tensor %s holds a non-finite value (%g at element %lld); the checkpoint is damaged "
                 "or the run diverged before it was written", safetensors_path(st), e->name, (double)s[bad], (long long)bad);
        tensor_free(src);
        return -1;
    }
    size_t bytes = (size_t)dst->numel * dtype_size(dst->dtype);
    void *host = dst->device == DEV_CPU ? dst->data : dod_malloc(bytes ? bytes : 1, "checkpoint staging buffer");
    if (dst->dtype == DT_F32) memcpy(host, s, bytes);
    else if (dst->dtype == DT_BF16)
        for (int64_t i = 0; i < dst->numel; i++) ((uint16_t *)host)[i] = f32_to_bf16(s[i]);
    else
        for (int64_t i = 0; i < dst->numel; i++) ((uint16_t *)host)[i] = f32_to_f16(s[i]);
    if (host != dst->data) {
        cuda_copy_h2d(dst->data, host, bytes);
        free(host);
    }
    tensor_free(src);
    return 0;
}

static SafeTensors *open_checkpoint(const char *path, char *err, size_t errlen) {
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

int checkpoint_load(const char *path, Tensor *const *params, int n, AdamW *opt, CheckpointInfo *info, char *err,
                    size_t errlen) {
    memset(info, 0, sizeof *info);
    SafeTensors *st = open_checkpoint(path, err, errlen);
    if (!st) return -1;
    int rc = 0;
    long long step = 0, astep = 0, seed = 0, lnext = 0, stage = 0;
    if (meta_int(st, "step", &step, err, errlen) || meta_int(st, "adamw_step", &astep, err, errlen) ||
        meta_int(st, "seed", &seed, err, errlen) || meta_int(st, "loader_next", &lnext, err, errlen) ||
        meta_int(st, "stage", &stage, err, errlen))
        rc = -1;
    // Ranges: a step count beyond 2^40 is no run anyone made, and keeps step * grad_accum exact.
    const struct {
        const char *key;
        long long v, lo, hi;
    } ranges[] = {{"step", step, 0, CKPT_MAX_STEP},       {"adamw_step", astep, 0, CKPT_MAX_STEP},
                  {"loader_next", lnext, 0, CKPT_MAX_STEP * 4096}, {"stage", stage, 1, 2}};
    for (size_t k = 0; !rc && k < sizeof ranges / sizeof ranges[0]; k++)
        if (ranges[k].v < ranges[k].lo || ranges[k].v > ranges[k].hi) {
            snprintf(err, errlen, "%s: metadata %s is %lld, outside [%lld, %lld] (damaged checkpoint)", path,
                     ranges[k].key, ranges[k].v, ranges[k].lo, ranges[k].hi);
            rc = -1;
        }
    // Every model tensor of the file must be one the model trains (a config change would show here).
    for (int i = 0; !rc && i < safetensors_count(st); i++) {
        const StEntry *e = safetensors_entry(st, i);
        if (!strncmp(e->name, "optim.", 6)) continue;
        bool known = false;
        for (int j = 0; j < n && !known; j++) known = !strcmp(params[j]->name, e->name);
        if (!known) {
            snprintf(err, errlen, "%s: holds tensor %s, which the model does not train in this configuration", path, e->name);
            rc = -1;
        }
    }
    for (int i = 0; !rc && i < n; i++) {
        const StEntry *e = safetensors_find(st, params[i]->name);
        if (!e) {
            snprintf(err, errlen, "%s: trainable tensor %s is missing", path, params[i]->name);
            rc = -1;
            break;
        }
        if (copy_entry(st, e, params[i], "the model", err, errlen)) rc = -1;
        for (int which = 0; opt && !rc && which < 2; which++) {
            char tname[512];
            snprintf(tname, sizeof tname, "optim.%s.%s", which ? "v" : "m", params[i]->name);
            const StEntry *me = safetensors_find(st, tname);
            if (!me) {
                snprintf(err, errlen, "%s: optimizer tensor %s is missing", path, tname);
                rc = -1;
                break;
            }
            Tensor moment = {.ndim = params[i]->ndim, .numel = params[i]->numel, .dtype = DT_F32,
                             .device = opt->params[i]->device,   // adamw_new puts the moments on the parameter's device
                             .data = which ? opt->v[i] : opt->m[i], .name = tname};
            memcpy(moment.shape, params[i]->shape, sizeof moment.shape);
            if (copy_entry(st, me, &moment, "the optimizer", err, errlen)) rc = -1;
        }
    }
    if (!rc) {
        if (opt) opt->step = astep;
        info->step = step;
        info->adamw_step = astep;
        info->seed = (uint64_t)seed;
        info->loader_next = lnext;
        info->stage = (int)stage;
        const char *kind = safetensors_metadata(st, "model_kind"), *cfg = safetensors_metadata(st, "config");
        snprintf(info->model_kind, sizeof info->model_kind, "%s", kind ? kind : "");
        info->config_text = strdup(cfg ? cfg : "");
    }
    safetensors_close(st);
    return rc;
}

int checkpoint_load_weights(const char *path, ParamStore *ps, int *n_loaded, char *err, size_t errlen) {
    SafeTensors *st = open_checkpoint(path, err, errlen);
    if (!st) return -1;
    int loaded = 0, rc = 0;
    for (int i = 0; !rc && i < safetensors_count(st); i++) {
        const StEntry *e = safetensors_entry(st, i);
        if (!strncmp(e->name, "optim.", 6)) continue;
        Tensor *dst = params_get(ps, e->name);
        if (!dst) {
            snprintf(err, errlen, "%s: tensor %s has no counterpart in the model", path, e->name);
            rc = -1;
            break;
        }
        if (copy_entry(st, e, dst, "the model", err, errlen)) rc = -1;
        else loaded++;
    }
    safetensors_close(st);
    if (n_loaded) *n_loaded = loaded;
    return rc;
}
