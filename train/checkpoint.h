// Training checkpoints: RUN_DIR/checkpoints/step_XXXXXXX.safetensors (7-digit step count) holding
//   - every trainable tensor, f32, under its parameter name;
//   - AdamW moments as optim.m.<name> and optim.v.<name> (f32, same shape);
//   - metadata (strings): format = "dod-train-checkpoint", format_version = "1", step (optimizer
//     steps completed), adamw_step, seed, rng (the training-noise scheme and its key), loader_next
//     (the next loader batch index = step * grad_accum; the loader is a pure function of it),
//     model_kind, stage, config (the resolved configuration text).
// Frozen weights are never written (they come from the base model / a stage-1 checkpoint).
// Files are written atomically by safetensors_save; then `latest` (one line, the file name) is
// written to a temp file and renamed; then older checkpoints beyond keep_last are deleted.
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "autograd/optim.h"
#include "autograd/params.h"

#define CKPT_FORMAT "dod-train-checkpoint"
#define CKPT_FORMAT_VERSION 1
#define CKPT_ERR_LEN 2048
#define CKPT_MAX_STEP (1ll << 40)   // checkpoint_load refuses larger step / adamw_step metadata

typedef struct {
    int64_t step;          // optimizer steps completed
    int64_t adamw_step;    // AdamW's own counter (bias correction)
    uint64_t seed;
    int64_t loader_next;   // next loader batch index
    char model_kind[16];
    int stage;
    char *config_text;     // heap (checkpoint_load fills it; free with checkpoint_info_free)
} CheckpointInfo;

void checkpoint_info_free(CheckpointInfo *info);

// The file name of step's checkpoint ("step_0001000.safetensors") into buf.
void checkpoint_name(int64_t step, char *buf, size_t len);

// Saves params (the trainable tensors, f32) and opt's moments with info into ckpt_dir (created if
// missing), updates `latest` and prunes to keep_last files (0: keep all). path_out (may be NULL)
// receives the file written. Returns 0 or -1 with a message naming the file.
int checkpoint_save(const char *ckpt_dir, Tensor *const *params, int n, const AdamW *opt,
                    const CheckpointInfo *info, int keep_last, char *path_out, size_t path_len, char *err,
                    size_t errlen);

// The checkpoint `latest` names in ckpt_dir (full path into path). -1 with a message when there is
// none, or it names a missing file.
int checkpoint_latest(const char *ckpt_dir, char *path, size_t len, char *err, size_t errlen);

// Loads a checkpoint written by checkpoint_save: every one of params (by name, same shape) and, when
// opt is given, its moments and counter; fills info (=). Any missing or misshapen tensor, a tensor
// holding NaN or infinity, metadata out of range (step and adamw_step in [0, 2^40], stage 1 or 2),
// a corrupt file or a foreign format is an error naming the file and the tensor or key. 0 or -1.
int checkpoint_load(const char *path, Tensor *const *params, int n, AdamW *opt, CheckpointInfo *info, char *err,
                    size_t errlen);

// Stage-2 initialisation: copies every model tensor of a checkpoint (all but optim.*) into the
// tensor of the same name in ps (=, converted to its storage dtype). A tensor ps does not have, or a
// shape mismatch, is an error. *n_loaded (may be NULL) receives the count. 0 or -1.
int checkpoint_load_weights(const char *path, ParamStore *ps, int *n_loaded, char *err, size_t errlen);

// A run dir (its latest checkpoint) or a checkpoint file -> the checkpoint file path. 0 or -1.
int checkpoint_resolve(const char *run_dir_or_file, const char *ckpt_subdir, char *path, size_t len, char *err,
                       size_t errlen);
