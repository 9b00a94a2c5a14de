// unet_load / vae_load: one SD model part -> config + ParamStore with diffusers names, through the
// validating loader of layers/sd_weights.h (every tensor the config implies must be present with
// its shape; zero-copy views when the stored dtype is the requested one).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "layers/sd_weights.h"
#include "layers/unet.h"
#include "layers/vae.h"

static bool is_file(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

static bool is_dir(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
}

// The directory holding the part's config.json: `path` itself, or path/<part> (a diffusers root).
static void part_dir(const char *path, const char *part, char out[1024], const char *who) {
    char probe[1200];
    snprintf(probe, sizeof probe, "%s/config.json", path);
    if (is_file(probe)) {
        snprintf(out, 1024, "%s", path);
        return;
    }
    snprintf(probe, sizeof probe, "%s/%s/config.json", path, part);
    if (is_file(probe)) {
        snprintf(out, 1024, "%s/%s", path, part);
        return;
    }
    dod_fatal(who, "%s: neither %s/config.json nor %s/%s/config.json exists", path, path, path, part);
}

// Loads the table's tensors from `weights` (diffusers or LDM names) into a new store; fatal with the
// loader's message (every missing / mismatched tensor) on failure. *file keeps the mapping open.
static ParamStore *load_part(const char *weights, const SdTensorTable *table, SdNaming naming,
                             const char *ldm_prefix, DType dtype, SafeTensors **file, const char *who) {
    char st_err[ST_ERR_LEN];
    if (tensor_file_open(weights, file, st_err) != ST_OK) dod_fatal(who, "%s", st_err);
    ParamStore *ps = params_new();
    SdLoadReport rep;
    memset(&rep, 0, sizeof rep);
    char *err = NULL;
    if (sd_load_tensors(*file, table, naming, ldm_prefix, dtype, ps, &rep, &err) != 0) dod_fatal(who, "%s", err);
    for (int i = 0; i < rep.n_unexpected; i++)
        fprintf(stderr, "dod: %s: %s: ignoring unexpected tensor %s\n", who, weights, rep.unexpected[i]);
    sd_report_free(&rep);
    return ps;
}

// The weights file of a diffusers part directory (the .fp16 variant when it is the only one; a
// PyTorch .bin when there is no safetensors file).
static void part_weights(const char *dir, char out[1200], const char *who) {
    static const char *const names[] = {"diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors",
                                        "diffusion_pytorch_model.bin", "diffusion_pytorch_model.fp16.bin"};
    for (int i = 0; i < 4; i++) {
        snprintf(out, 1200, "%s/%s", dir, names[i]);
        if (is_file(out)) return;
    }
    dod_fatal(who, "%s: no diffusion_pytorch_model.safetensors or .bin (or their .fp16 variants)", dir);
}

// Where a part ("unet" or "vae") of path lives: its config.json and, for a diffusers directory, its
// weights file; single-file checkpoints keep every part in path itself and take configs from config_dir.
typedef struct {
    bool single;
    char cfg_path[1200], weights[1200];
} PartPaths;

static void part_paths(const char *path, const char *config_dir, const char *part, PartPaths *pp,
                       const char *who) {
    pp->single = is_file(path);
    if (!pp->single && !is_dir(path)) dod_fatal(who, "%s: no such file or directory", path);
    if (pp->single && !config_dir) dod_fatal(who, "%s: a single-file checkpoint needs a config directory", path);
    char dir[1024];
    part_dir(pp->single ? config_dir : path, part, dir, who);
    snprintf(pp->cfg_path, sizeof pp->cfg_path, "%s/config.json", dir);
    if (pp->single) snprintf(pp->weights, sizeof pp->weights, "%s", path);
    else part_weights(dir, pp->weights, who);
}

// Loads the tensors of table (= a new store; *file keeps the mapping zero-copy views point into).
static ParamStore *part_tensors(const PartPaths *pp, SdTensorTable *table, const char *ldm_prefix,
                                DType weight_dtype, SafeTensors **file, const char *who) {
    ParamStore *ps = pp->single ? load_part(pp->weights, table, SD_NAMES_LDM, ldm_prefix, weight_dtype, file, who)
                                : load_part(pp->weights, table, SD_NAMES_DIFFUSERS, NULL, weight_dtype, file, who);
    sd_table_free(table);
    return ps;
}

Unet *unet_load(const char *path, DType weight_dtype, const char *config_dir) {
    const char *who = "unet_load";
    Unet *m = dod_calloc(sizeof(Unet), "unet");
    PartPaths pp;
    part_paths(path, config_dir, "unet", &pp, who);
    char err[SD_CONFIG_ERR_LEN];
    if (sd_unet_config_load(pp.cfg_path, &m->cfg, err) != 0) dod_fatal(who, "%s", err);
    SdTensorTable table = {0};
    sd_unet_tensor_table(&m->cfg, &table);
    SafeTensors *file = NULL;
    m->owned_ps = part_tensors(&pp, &table, "model.diffusion_model.", weight_dtype, &file, who);
    m->owned_file = file;
    m->net = (SdNet){.ps = m->owned_ps, .prefix = ""};
    return m;
}

void unet_free(Unet *m) {
    if (!m) return;
    if (m->owned_ps) params_free(m->owned_ps);  // tensors first: views point into the mapping
    if (m->owned_file) safetensors_close(m->owned_file);
    free(m);
}

Vae *vae_load(const char *path, DType weight_dtype, const char *config_dir) {
    const char *who = "vae_load";
    Vae *m = dod_calloc(sizeof(Vae), "vae");
    PartPaths pp;
    part_paths(path, config_dir, "vae", &pp, who);
    char err[SD_CONFIG_ERR_LEN];
    if (sd_vae_config_load(pp.cfg_path, &m->cfg, err) != 0) dod_fatal(who, "%s", err);
    SdTensorTable table = {0};
    sd_vae_tensor_table(&m->cfg, &table);
    SafeTensors *file = NULL;
    m->owned_ps = part_tensors(&pp, &table, "first_stage_model.", weight_dtype, &file, who);
    m->owned_file = file;
    m->net = (SdNet){.ps = m->owned_ps, .prefix = ""};
    return m;
}

void vae_free(Vae *m) {
    if (!m) return;
    if (m->owned_ps) params_free(m->owned_ps);
    if (m->owned_file) safetensors_close(m->owned_file);
    free(m);
}
