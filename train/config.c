// The training configuration: the training keys, composed with the model's (layers/config_model.c)
// into dod-train's schema; validation and the reference page. See train/config.h.
#include "train/config.h"

#include <string.h>

#include "autograd/base.h"
#include "layers/config_model.h"

// ---- the training keys ------------------------------------------------------------------------------
#define OFF(f) offsetof(TrainConfig, f)
#define BIG 1e15
_Static_assert(sizeof(CfgSchedule) == sizeof(int), "enum keys are stored as int");
static const CfgField TRAIN_FIELDS[] = {
    {"data", "train", CFG_STRING, NULL, 0, 0, NULL, OFF(train_file), false, "training dataset (.h5, `dod-data pack`)", NULL},
    {"data", "tasks", CFG_LIST, NULL, 0, 0, NULL, OFF(tasks), false,
     "tasks and per-step counts in batch order, `name:count,...` (task names as in the file)", NULL},
    {"data", "crop", CFG_INT, "256", 16, 8192, NULL, OFF(crop), false, "square random crop side (pixels)", NULL},
    {"data", "flips", CFG_BOOL, "true", 0, 0, NULL, OFF(flips), false, "random horizontal/vertical flips", NULL},
    {"data", "threads", CFG_INT, "2", 0, 256, NULL, OFF(loader_threads), true,
     "loader threads (0: read in the training thread); batches do not depend on it", NULL},
    {"data", "val", CFG_STRING, "", 0, 0, NULL, OFF(val_file), true, "validation dataset (.h5); empty: no validation", NULL},
    {"optim", "lr", CFG_FLOAT, "5e-5", 0, 1, NULL, OFF(lr), false, "AdamW learning rate (peak)", NULL},
    {"optim", "beta1", CFG_FLOAT, "0.9", 0, 0.999999, NULL, OFF(beta1), false, "AdamW beta1", NULL},
    {"optim", "beta2", CFG_FLOAT, "0.999", 0, 0.99999999, NULL, OFF(beta2), false, "AdamW beta2", NULL},
    {"optim", "weight_decay", CFG_FLOAT, "1e-2", 0, 1, NULL, OFF(weight_decay), false, "AdamW decoupled weight decay", NULL},
    {"optim", "eps", CFG_FLOAT, "1e-8", 0, 1, NULL, OFF(eps), false, "AdamW epsilon", NULL},
    {"optim", "clip_norm", CFG_FLOAT, "1.0", 0, BIG, NULL, OFF(clip_norm), false,
     "global gradient-norm clipping (0: off)", NULL},
    {"optim", "schedule", CFG_ENUM, "constant", 0, 0, "constant|cosine", OFF(schedule), false,
     "learning-rate schedule (cosine decays to 0 at train.steps)", NULL},
    {"optim", "warmup", CFG_INT, "0", 0, BIG, NULL, OFF(warmup), false, "linear warm-up steps", NULL},
    {"optim", "grad_accum", CFG_INT, "1", 1, 4096, NULL, OFF(grad_accum), true,
     "micro-batches per process per optimizer step (loss divided by processes x grad_accum); on resume it may change "
     "only with the number of processes, so that their product stays the checkpoint's", NULL},
    {"loss", "mse", CFG_FLOAT, "1", 0, 1e6, NULL, OFF(loss_mse), false, "weight of MSE(out, hq) on [-1, 1] images", NULL},
    {"loss", "ssim", CFG_FLOAT, "0", 0, 1e6, NULL, OFF(loss_ssim), false,
     "weight of 1 - SSIM(out, hq) (data range 2, 11x11 Gaussian window)", NULL},
    {"loss", "lpips", CFG_FLOAT, "0", 0, 1e6, NULL, OFF(loss_lpips), false,
     "weight of LPIPS(out, hq) (VGG16, lpips v0.1, images in [-1, 1], mean over the batch); needs lpips_vgg and "
     "lpips_lin", NULL},
    {"loss", "lpips_vgg", CFG_STRING, "", 0, 0, NULL, OFF(lpips_vgg), true,
     "torchvision's VGG16 weights (vgg16-397923af.pth from download.pytorch.org/models; any PyTorch or safetensors "
     "file with features.N.weight/bias)", NULL},
    {"loss", "lpips_lin", CFG_STRING, "", 0, 0, NULL, OFF(lpips_lin), true,
     "the lpips package's linear heads (lpips/weights/v0.1/vgg.pth in the package, lin0..4.model.1.weight)", NULL},
    {"train", "steps", CFG_INT, "100000", 1, BIG, NULL, OFF(steps), true, "optimizer steps of the run (total)", NULL},
    {"train", "seed", CFG_INT, "123", 0, BIG, NULL, OFF(model.seed), false,
     "seed of parameter init, batches and training noise", NULL},
    {"train", "recompute", CFG_BOOL, "false", 0, 0, NULL, OFF(model.recompute), true,
     "activation recomputation (less memory, same numbers: bitwise on the CPU)", NULL},
    {"train", "max_memory", CFG_INT, "0", -1, BIG, NULL, OFF(max_memory), true,
     "MiB of memory the run may use (process memory on the CPU, device memory of a step on CUDA); before the "
     "first step the step's memory is measured at small crops and extrapolated, and the run refuses to start "
     "when it would not fit (docs/training.md); 0: what the machine has free; -1: no check", NULL},
    {"train", "run_dir", CFG_STRING, NULL, 0, 0, NULL, OFF(run_dir), true,
     "run directory (config copy, metrics, checkpoints, samples)", NULL},
    {"log", "every", CFG_INT, "10", 1, BIG, NULL, OFF(log_every), true, "steps between JSONL metrics lines", NULL},
    {"log", "jsonl", CFG_STRING, "metrics.jsonl", 0, 0, NULL, OFF(log_jsonl), true,
     "metrics log, relative to the run dir unless absolute", NULL},
    {"log", "tensorboard", CFG_BOOL, "true", 0, 0, NULL, OFF(log_tensorboard), true,
     "TensorBoard event files in RUN_DIR/tb (the [log] every scalars, validation scores and grids; "
     "`tensorboard --logdir RUN_DIR/tb`)", NULL},
    {"checkpoint", "every", CFG_INT, "1000", 1, BIG, NULL, OFF(ckpt_every), true, "steps between checkpoints", NULL},
    {"checkpoint", "keep_last", CFG_INT, "3", 0, BIG, NULL, OFF(ckpt_keep_last), true,
     "checkpoints kept (older ones deleted; 0: keep all)", NULL},
    {"val", "every", CFG_INT, "1000", 0, BIG, NULL, OFF(val_every), true, "steps between validations (0: never)", NULL},
    {"val", "images", CFG_INT, "4", 1, 10000, NULL, OFF(val_images), true,
     "validation images: the first K of data.val, taken round-robin over its tasks", NULL},
    {"val", "grid", CFG_BOOL, "true", 0, 0, NULL, OFF(val_grid), true, "write samples/step_N.png (rows lq | out | hq)", NULL},
    {"dist", "backend", CFG_ENUM, "auto", 0, 0, "auto|nccl|mpi|tcp|none", OFF(dist_backend), true,
     "several processes (mpirun, srun, torchrun; docs/training.md): `nccl` (GPU), `mpi` or `tcp` (CPU), `none` (one "
     "process); `auto`: none for one process, else nccl with device = cuda, tcp under torchrun, mpi otherwise", NULL},
    {"dist", "timeout", CFG_INT, "600", 1, 86400, NULL, OFF(dist_timeout), true,
     "seconds any collective (and the start-up) may take before the job is ended; longer than rank 0's validation "
     "and checkpoint writing", NULL},
    {"dist", "bucket_mb", CFG_FLOAT, "25", 1e-6, 4096, NULL, OFF(dist_bucket_mb), true,
     "gradient bucket size (MiB) of the all-reduce", NULL},
    {"dist", "port", CFG_INT, "0", 0, 65535, NULL, OFF(dist_port), true,
     "TCP bootstrap port on MASTER_ADDR; 0: MASTER_PORT (MASTER_PORT + 1 when torchrun's own store holds it)", NULL},
};
#define N_TRAIN_FIELDS ((int)(sizeof TRAIN_FIELDS / sizeof TRAIN_FIELDS[0]))
// Every section of the file, in the order of the resolved text and the reference.
static const char *const SECTIONS[] = {"model", "lora", "modulation", "stage", "data", "optim",
                                       "loss", "train", "log", "checkpoint", "val", "dist"};
#define N_SECTIONS ((int)(sizeof SECTIONS / sizeof SECTIONS[0]))
_Static_assert(N_SECTIONS <= CFG_MAX_SECTIONS, "raise CFG_MAX_SECTIONS");

// ---- the composed schema ----------------------------------------------------------------------------
// Section by section: the training keys of the section, then the model's (offsets moved into
// TrainConfig.model), so [checkpoint] reads every, keep_last, dir.
static CfgField fields[CFG_MAX_FIELDS];
static CfgSchema schema;

static const CfgSchema *train_schema(void) {
    if (schema.n_fields) return &schema;
    const CfgSchema *ms = model_config_schema();
    if (N_TRAIN_FIELDS + ms->n_fields > CFG_MAX_FIELDS) dod_fatal("train config", "raise CFG_MAX_FIELDS");
    int n = 0;
    for (int k = 0; k < N_SECTIONS; k++) {
        for (int i = 0; i < N_TRAIN_FIELDS; i++)
            if (!strcmp(TRAIN_FIELDS[i].section, SECTIONS[k])) fields[n++] = TRAIN_FIELDS[i];
        for (int i = 0; i < ms->n_fields; i++)
            if (!strcmp(ms->fields[i].section, SECTIONS[k])) {
                fields[n] = ms->fields[i];
                fields[n++].off += offsetof(TrainConfig, model);
            }
    }
    if (n != N_TRAIN_FIELDS + ms->n_fields) dod_fatal("train config", "a key of the schemas is in no section");
    schema = (CfgSchema){fields, n, SECTIONS, N_SECTIONS, N_SECTIONS};
    return &schema;
}

void config_defaults(TrainConfig *c) {
    memset(c, 0, sizeof *c);
    cfg_defaults(train_schema(), c, &c->src);
}

int config_load_file(TrainConfig *c, const char *path, char *err, size_t errlen) {
    return cfg_load_file(train_schema(), c, &c->src, path, err, errlen);
}

int config_set(TrainConfig *c, const char *assignment, char *err, size_t errlen) {
    return cfg_set(train_schema(), c, &c->src, assignment, err, errlen);
}

void config_where(const TrainConfig *c, const char *section, const char *key, char *buf, size_t len) {
    cfg_where(&c->src, section, key, buf, len);
}

// ---- validation -------------------------------------------------------------------------------------
int config_validate(const TrainConfig *c, char *err, size_t errlen) {
    if (err && errlen) err[0] = 0;
    const CfgSource *src = &c->src;
    int bad = cfg_check_required(train_schema(), c, src, err, errlen);
    bad += model_config_check(&c->model, src, err, errlen);
    if (c->model.kind == MODEL_DOD && c->crop % 8)
        cfg_complain(src, "data", "crop", "must be a multiple of 8 for kind = dod (VAE downsampling)", err, errlen), bad++;
    if (c->loss_lpips != 0 && (!c->lpips_vgg[0] || !c->lpips_lin[0]))
        cfg_complain(src, "loss", "lpips",
                     "a non-zero LPIPS weight needs [loss] lpips_vgg (torchvision's vgg16-397923af.pth) and [loss] "
                     "lpips_lin (the lpips package's weights/v0.1/vgg.pth)", err, errlen), bad++;
    if (c->loss_mse == 0 && c->loss_ssim == 0 && c->loss_lpips == 0)
        cfg_complain(src, "loss", "mse", "every loss weight is 0", err, errlen), bad++;
    if (c->beta1 >= 1 || c->beta2 >= 1) cfg_complain(src, "optim", "beta1", "betas must be < 1", err, errlen), bad++;
    return bad ? -1 : 0;
}

// ---- resolved text, comparison, reference ----------------------------------------------------------
char *config_to_text(const TrainConfig *c) {
    return cfg_to_text(train_schema(), c, "dod-train resolved configuration (every key)");
}

int config_compare_text(const TrainConfig *c, const char *text, char *err, size_t errlen) {
    return cfg_compare_text(train_schema(), c, text, err, errlen);
}

void config_write_reference(FILE *f) {
    cfg_write_reference(train_schema(), f,
                        "# dod-train configuration reference\n\n"
                        "Generated by `dod-train --config-reference` from the schemas in `layers/config_model.c`\n"
                        "and `train/config.c`; do not edit.\n"
                        "Every key has a default unless marked **required**. \"resume\" says whether the key may\n"
                        "differ from the checkpoint's value when a run is continued with `--resume`.\n"
                        "Override any key with `--set section.key=value`. See docs/training.md.\n");
}
