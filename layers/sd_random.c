// Random-weight UNet / VAE from a config; see sd_random.h.
#include "layers/sd_random.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "layers/sd_weights.h"

// The config.json of `part` under dir (dir/<part>/config.json, else dir/config.json).
static void config_path(const char *dir, const char *part, char out[1200], const char *who) {
    struct stat sb;
    snprintf(out, 1200, "%s/%s/config.json", dir, part);
    if (stat(out, &sb) == 0) return;
    snprintf(out, 1200, "%s/config.json", dir);
    if (stat(out, &sb) == 0) return;
    dod_fatal(who, "%s: neither %s/%s/config.json nor %s/config.json exists", dir, dir, part, dir);
}

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

// A new store holding every tensor of table, randomly initialised (see sd_random.h).
static ParamStore *random_store(const SdTensorTable *table, DType dtype, uint64_t seed) {
    Tensor **ts = dod_malloc(sizeof(Tensor *) * (size_t)(table->n ? table->n : 1), "random weight list");
    for (int i = 0; i < table->n; i++) {
        const SdTensorSpec *s = &table->items[i];
        int ndim = s->ndim;
        if (s->rule == SD_SHAPE_1X1_LINEAR && ndim == 4) ndim = 2;  // the loader stores these as [O, I]
        ts[i] = tensor_new_persistent(s->name, ndim, s->shape, DT_F32);
    }
#pragma omp parallel for schedule(dynamic)
    for (int i = 0; i < table->n; i++) {
        Tensor *t = ts[i];
        if (t->ndim >= 2) {
            float bound = 1.0f / sqrtf((float)(t->numel / t->shape[0]));
            tensor_rand_uniform(t, seed + (uint64_t)i, -bound, bound);
        } else if (ends_with(t->name, ".weight")) {
            tensor_fill(t, 1.0f);
        }  // biases stay 0 (zeroed storage)
        if (dtype != DT_F32) tensor_convert_dtype(t, dtype);
    }
    ParamStore *ps = params_new();
    for (int i = 0; i < table->n; i++) params_add(ps, table->items[i].name, ts[i]);
    free(ts);
    return ps;
}

static void check_dtype(DType dtype, const char *who) {
    DOD_CHECK(dtype == DT_F32 || dtype == DT_BF16 || dtype == DT_F16, who, "weight dtype %s: expected f32, bf16 or f16",
              dtype_name(dtype));
}

Unet *unet_create_random(const char *dir, DType dtype, uint64_t seed) {
    const char *who = "unet_create_random";
    check_dtype(dtype, who);
    char path[1200], err[SD_CONFIG_ERR_LEN];
    config_path(dir, "unet", path, who);
    Unet *m = dod_calloc(sizeof(Unet), "unet");
    if (sd_unet_config_load(path, &m->cfg, err) != 0) dod_fatal(who, "%s", err);
    SdTensorTable table = {0};
    sd_unet_tensor_table(&m->cfg, &table);
    m->owned_ps = random_store(&table, dtype, seed);
    sd_table_free(&table);
    m->net = (SdNet){.ps = m->owned_ps, .prefix = ""};
    return m;
}

Vae *vae_create_random(const char *dir, DType dtype, uint64_t seed) {
    const char *who = "vae_create_random";
    check_dtype(dtype, who);
    char path[1200], err[SD_CONFIG_ERR_LEN];
    config_path(dir, "vae", path, who);
    Vae *m = dod_calloc(sizeof(Vae), "vae");
    if (sd_vae_config_load(path, &m->cfg, err) != 0) dod_fatal(who, "%s", err);
    SdTensorTable table = {0};
    sd_vae_tensor_table(&m->cfg, &table);
    m->owned_ps = random_store(&table, dtype, seed);
    sd_table_free(&table);
    m->net = (SdNet){.ps = m->owned_ps, .prefix = ""};
    return m;
}
