// Training checkpoints (see train/checkpoint.h).
#include "train/checkpoint.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

// "optim.m.<param>" (which 0) or "optim.v.<param>" (which 1): the name of an AdamW moment (=).
static void moment_name(const char *param, int which, char *buf, size_t len) {
    snprintf(buf, len, "%s%s.%s", CKPT_OPTIM_PREFIX, which ? "v" : "m", param);
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
        long long s = checkpoint_parse_name(e->d_name);
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

int checkpoint_save_groups(const char *ckpt_dir, const CheckpointGroup *groups, int n_groups,
                           const CheckpointInfo *info, int keep_last, char *path_out, size_t path_len, char *err,
                           size_t errlen) {
    if (fs_mkdirs(ckpt_dir, err, errlen)) return -1;
    int total = 0;
    for (int g = 0; g < n_groups; g++) {
        if (groups[g].opt && groups[g].opt->n != groups[g].n) {
            snprintf(err, errlen, "%s: optimizer has %d tensors but %d trainable tensors were given", ckpt_dir,
                     groups[g].opt->n, groups[g].n);
            return -1;
        }
        total += groups[g].n * (groups[g].opt ? 3 : 1);
    }
    char name[64], path[4200];
    checkpoint_name(info->step, name, sizeof name);
    snprintf(path, sizeof path, "%s/%s", ckpt_dir, name);
    // What is written, in file order: the parameters, then the moments (group by group). Host tensors are
    // written as they are; a CUDA parameter or moment goes through a host copy made here (owned[] marks
    // them; the CPU path copies nothing).
    Tensor **all = dod_calloc(sizeof(Tensor *) * (size_t)(total ? total : 1), "checkpoint tensor list");
    bool *owned = dod_calloc(sizeof(bool) * (size_t)(total ? total : 1), "checkpoint tensor list");
    int k = 0, rc = 0;
    for (int g = 0; g < n_groups && !rc; g++)
        for (int i = 0; i < groups[g].n && !rc; i++) {
            const Tensor *p = groups[g].params[i];
            const AdamW *opt = groups[g].opt;
            if (p->dtype != DT_F32 || !p->name || (opt && opt->params[i] != p)) {
                snprintf(err, errlen, "%s: trainable tensor %s is %s (must be a named f32 tensor in optimizer order)",
                         path, p->name ? p->name : shape_str(p), p->name ? dtype_name(p->dtype) : "unnamed");
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
    for (int g = 0; g < n_groups && !rc; g++)
        for (int i = 0; groups[g].opt && i < groups[g].n; i++)
            for (int which = 0; which < 2; which++) {
                const Tensor *p = groups[g].params[i];
                char tname[512];
                moment_name(p->name, which, tname, sizeof tname);
                float *moment = which ? groups[g].opt->v[i] : groups[g].opt->m[i];   // on p's device (adamw_new)
                owned[k] = true;   // the header always; the data only when copied from the device
                if (p->device == DEV_CPU) {
                    all[k++] = tensor_wrap_persistent(tname, p->ndim, p->shape, DT_F32, moment);
                } else {
                    Tensor *host = tensor_new_persistent(tname, p->ndim, p->shape, DT_F32);
                    device_copy(host->data, DEV_CPU, moment, p->device, sizeof(float) * (size_t)p->numel);
                    all[k++] = host;
                }
            }
    if (!rc) rc = checkpoint_write_file(path, all, k, info, err, errlen);
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

int checkpoint_save(const char *ckpt_dir, Tensor *const *params, int n, const AdamW *opt,
                    const CheckpointInfo *info, int keep_last, char *path_out, size_t path_len, char *err,
                    size_t errlen) {
    CheckpointGroup g = {params, n, (AdamW *)opt};
    return checkpoint_save_groups(ckpt_dir, &g, 1, info, keep_last, path_out, path_len, err, errlen);
}

// Reads the moments of group g's optimizer from st (=). 0 or -1 naming the tensor.
static int read_moments(const SafeTensors *st, const CheckpointGroup *g, const char *path, char *err, size_t errlen) {
    for (int i = 0; i < g->n; i++)
        for (int which = 0; which < 2; which++) {
            const Tensor *p = g->params[i];
            char tname[512];
            moment_name(p->name, which, tname, sizeof tname);
            const StEntry *me = safetensors_find(st, tname);
            if (!me) {
                snprintf(err, errlen, "%s: optimizer tensor %s is missing", path, tname);
                return -1;
            }
            Tensor moment = {.ndim = p->ndim, .numel = p->numel, .dtype = DT_F32,
                             .device = g->opt->params[i]->device,   // adamw_new puts the moments on the parameter's device
                             .data = which ? g->opt->v[i] : g->opt->m[i], .name = tname};
            memcpy(moment.shape, p->shape, sizeof moment.shape);
            if (checkpoint_read_tensor(st, me, &moment, "the optimizer", err, errlen)) return -1;
        }
    return 0;
}

int checkpoint_load_groups(const char *path, const CheckpointGroup *groups, int n_groups, CheckpointInfo *info,
                           char *err, size_t errlen) {
    memset(info, 0, sizeof *info);
    DOD_CHECK(n_groups >= 1 && n_groups <= 2, "checkpoint_load_groups", "%d groups: the model's and the regulariser's",
              n_groups);
    SafeTensors *st = checkpoint_open(path, err, errlen);
    if (!st) return -1;
    CheckpointInfo got;
    int rc = checkpoint_read_info(st, &got, err, errlen);
    if (rc) {
        safetensors_close(st);
        return -1;
    }
    rc = checkpoint_read_trainable(st, groups[0].params, groups[0].n, err, errlen);
    // The regulariser's tensors: group 1's, or none (a file that holds some is refused, naming one).
    if (!rc)
        rc = n_groups > 1 ? checkpoint_read_part(st, CKPT_PART_REGULARISER, groups[1].params, groups[1].n, err, errlen)
                          : checkpoint_read_part(st, CKPT_PART_REGULARISER, NULL, 0, err, errlen);
    for (int g = 0; g < n_groups && !rc; g++)
        if (groups[g].opt) rc = read_moments(st, &groups[g], path, err, errlen);
    safetensors_close(st);
    if (rc) {
        checkpoint_info_free(&got);
        return -1;
    }
    for (int g = 0; g < n_groups; g++)
        if (groups[g].opt) groups[g].opt->step = got.adamw_step;
    *info = got;
    return 0;
}

int checkpoint_load(const char *path, Tensor *const *params, int n, AdamW *opt, CheckpointInfo *info, char *err,
                    size_t errlen) {
    CheckpointGroup g = {params, n, opt};
    return checkpoint_load_groups(path, &g, 1, info, err, errlen);
}
