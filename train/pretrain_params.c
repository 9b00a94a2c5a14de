// Pretraining parameters: a fresh diffusers-initialised store built from an SD tensor table, and
// writing a model part (safetensors + config.json) atomically.
#include "train/pretrain.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "data/keyed_rng.h"
#include "autograd/base.h"

// True for GroupNorm / LayerNorm parameters: the module name (before .weight/.bias) ends in a
// component containing "norm" (norm1, norm, conv_norm_out, group_norm).
static bool is_norm(const char *name) {
    const char *end = strrchr(name, '.');
    if (!end) return false;
    const char *start = end;
    while (start > name && start[-1] != '.') start--;
    for (const char *p = start; p + 4 <= end; p++)
        if (!strncmp(p, "norm", 4)) return true;
    return false;
}

// fan_in of a conv / linear weight: everything but the output dim.
static int64_t fan_in(const SdTensorSpec *s) {
    int64_t f = 1;
    for (int d = 1; d < s->ndim; d++) f *= s->shape[d];
    return f;
}

ParamStore *pretrain_init_params(const SdTensorTable *table, uint64_t seed) {
    ParamStore *ps = params_new();
    for (int i = 0; i < table->n; i++) {
        const SdTensorSpec *s = &table->items[i];
        Tensor *t = tensor_new_persistent(s->name, s->ndim, s->shape, DT_F32);
        if (is_norm(s->name)) {
            tensor_fill(t, strstr(s->name, ".weight") ? 1.0f : 0.0f);
        } else {
            const SdTensorSpec *w = s;
            if (s->ndim == 1) {  // a bias: PyTorch bounds it by its layer's weight fan_in
                char wname[SD_NAME_LEN];
                snprintf(wname, sizeof wname, "%s", s->name);
                char *dot = strrchr(wname, '.');
                DOD_CHECK(dot && !strcmp(dot, ".bias"), "pretrain_init_params", "1-d tensor %s is neither a norm "
                          "parameter nor a bias", s->name);
                snprintf(dot, sizeof wname - (size_t)(dot - wname), ".weight");
                w = sd_table_find(table, wname);
                DOD_CHECK(w != NULL, "pretrain_init_params", "bias %s has no weight %s in the table", s->name, wname);
            }
            float bound = (float)(1.0 / sqrt((double)fan_in(w)));
            tensor_rand_uniform(t, rng_key(seed, rng_hash_string(s->name)), -bound, bound);
        }
        t->requires_grad = true;
        params_add(ps, s->name, t);
    }
    return ps;
}

static void mkdir_p(const char *dir) {
    char err[4200];
    if (fs_mkdirs(dir, err, sizeof err)) dod_fatal("pretrain", "%s", err);
}

void pretrain_write_text(const char *path, const char *text) {
    char err[4400];
    if (fs_write_text_atomic(path, text, err, sizeof err)) dod_fatal("pretrain", "%s", err);
}

char *pretrain_read_text(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) dod_fatal("pretrain", "%s: cannot open", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = dod_malloc((size_t)n + 1, path);
    if (n < 0 || fread(s, 1, (size_t)n, f) != (size_t)n) dod_fatal("pretrain", "%s: read failed", path);
    s[n] = '\0';
    fclose(f);
    return s;
}

void pretrain_save_part(const char *dir, ParamStore *ps, const SdTensorTable *table, const char *config_json) {
    mkdir_p(dir);
    Tensor **ts = dod_malloc(sizeof(Tensor *) * (size_t)table->n, "pretrain save list");
    for (int i = 0; i < table->n; i++) ts[i] = params_require(ps, table->items[i].name, "pretrain_save_part");
    char path[1200], err[ST_ERR_LEN];
    snprintf(path, sizeof path, "%s/diffusion_pytorch_model.safetensors", dir);
    StMetadata meta[] = {{"format", "pt"}, {"producer", "dod-pretrain"}};
    if (safetensors_save(path, ts, table->n, meta, 2, err) != ST_OK) dod_fatal("pretrain", "%s", err);
    free(ts);
    snprintf(path, sizeof path, "%s/config.json", dir);
    pretrain_write_text(path, config_json);
}

void pretrain_save_part_text(const char *dir, const char *file, const char *text) {
    mkdir_p(dir);
    char path[1200];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    pretrain_write_text(path, text);
}
