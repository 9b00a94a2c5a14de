// Trained weights: the checkpoint format dod-train writes, reading it, and building a model with
// its trained weights for inference.
//
// A checkpoint is RUN_DIR/<[checkpoint] dir>/step_XXXXXXX.safetensors (7-digit step count) holding
//   - every trainable tensor, f32, under its parameter name;
//   - AdamW moments as optim.m.<name> and optim.v.<name> (f32, same shape; train/checkpoint.c);
//   - metadata (strings): format = "dod-train-checkpoint", format_version = "1", step (optimizer
//     steps completed), adamw_step, seed, rng (the training-noise scheme and its key), loader_next
//     (the next global micro-batch index = step * processes * grad_accum; the loader is a pure
//     function of it), model_kind, stage, config (the resolved configuration text), world_size (the
//     processes that trained it: information only, a run resumes on any number; absent in older
//     files: 1), and what conditions the model: prompt, negative_prompt (the texts of [model] prompt /
//     negative_prompt) and prompt_embedding (the file that was used instead of the prompt text, or "").
// Frozen weights are never written (they come from the base model / a stage-1 checkpoint). Beside
// the files, `latest` (one line) names the newest. checkpoint_write_file and checkpoint_read_info
// are the two sides of the metadata; train/checkpoint.c writes (with the optimizer state) and
// resumes, this file reads the weights.
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "autograd/params.h"
#include "layers/model.h"
#include "layers/safetensors.h"

#define CKPT_FORMAT "dod-train-checkpoint"
#define CKPT_FORMAT_VERSION 1
#define CKPT_ERR_LEN 2048
#define CKPT_OPTIM_PREFIX "optim."   // tensors of the optimizer state, not of the model
#define CKPT_MAX_STEP (1ll << 40)     // checkpoint_read_info refuses larger step / adamw_step metadata
#define CKPT_MAX_WORLD (1 << 20)      // and a larger world_size

typedef struct {
    int64_t step;          // optimizer steps completed
    int64_t adamw_step;    // AdamW's own counter (bias correction)
    uint64_t seed;
    int64_t loader_next;   // next global micro-batch index
    char model_kind[16];
    int stage;
    int world_size;        // processes of the run that wrote it (1 when absent)
    char *config_text;     // heap when read (checkpoint_read_info); free with checkpoint_info_free
    // Writing only (borrowed; NULL: ""): the prompt metadata. checkpoint_read_info leaves them NULL
    // (the resolved configuration in config_text holds the same keys).
    const char *prompt, *negative_prompt, *prompt_embedding;
} CheckpointInfo;

void checkpoint_info_free(CheckpointInfo *info);

// ---- names and run dirs -------------------------------------------------------------------------
// The file name of step's checkpoint ("step_0001000.safetensors") into buf (=).
void checkpoint_name(int64_t step, char *buf, size_t len);
// The step of a checkpoint file name ("step_NNNNNNN.safetensors"); -1 for any other name.
long long checkpoint_parse_name(const char *name);
// The checkpoint `latest` names in ckpt_dir (full path into path). -1 with a message when there is
// none, or it names a missing file.
int checkpoint_latest(const char *ckpt_dir, char *path, size_t len, char *err, size_t errlen);
// A run dir (its latest checkpoint in ckpt_subdir, relative to it unless absolute) or a checkpoint
// file -> the checkpoint file path (=). 0 or -1.
int checkpoint_resolve(const char *run_dir_or_file, const char *ckpt_subdir, char *path, size_t len, char *err,
                       size_t errlen);

// ---- the file ----------------------------------------------------------------------------------
// Writes tensors (host, in file order) and info's metadata to path, atomically (safetensors_save).
// 0 or -1 with a message naming the file.
int checkpoint_write_file(const char *path, Tensor *const *tensors, int n, const CheckpointInfo *info, char *err,
                          size_t errlen);
// Opens path and checks its format and version. NULL with a message naming the file.
SafeTensors *checkpoint_open(const char *path, char *err, size_t errlen);
// The metadata of an open checkpoint (=). 0, or -1 naming the missing, malformed or out-of-range key
// (step and adamw_step in [0, 2^40], loader_next >= 0, stage 1 or 2, world_size in [1, 2^20]).
int checkpoint_read_info(const SafeTensors *st, CheckpointInfo *info, char *err, size_t errlen);
// Copies entry e (any float dtype) into dst (=), converted to dst's storage dtype, on dst's device;
// the shapes must agree (a mismatch names the tensor, both shapes and `label`, what expects it) and
// every value must be finite (safetensors_tensor).
int checkpoint_read_tensor(const SafeTensors *st, const StEntry *e, Tensor *dst, const char *label, char *err,
                           size_t errlen);
// Copies (=) every one of params from the file by name: each must be present with its shape, and
// every model tensor of the file (all but optim.*) must be one of params. 0, or -1 naming the tensor.
int checkpoint_read_trainable(const SafeTensors *st, Tensor *const *params, int n, char *err, size_t errlen);
// Stage-2 initialisation: copies every model tensor of a checkpoint (all but optim.*) into the
// tensor of the same name in ps (=, converted to its storage dtype). A tensor ps does not have, or a
// shape mismatch, is an error. *n_loaded (may be NULL) receives the count. 0 or -1.
int checkpoint_load_weights(const char *path, ParamStore *ps, int *n_loaded, char *err, size_t errlen);

// ---- models with their weights ------------------------------------------------------------------
// The model o describes (=, model_create) and, for stage 2, its frozen stage-1 tensors loaded from
// o->init_from (a run dir or a checkpoint file; *n_stage1 receives their count, may be NULL). NULL
// with a message naming the kind / file / tensor at fault.
Model *model_load(const ModelOptions *o, int *n_stage1, char *err, size_t errlen);
// Loads every trainable tensor of m from ckpt_path (a checkpoint file, or a run dir whose
// o->ckpt_dir has a `latest`) for inference (no optimizer state): the rules of
// checkpoint_read_trainable, and the checkpoint's model kind and stage must be m's and o's
// (config_file, may be "", names the configuration in that message). path_out (may be NULL)
// receives the file read; *info (may be NULL) its metadata (free with checkpoint_info_free).
// 0, or -1 with a message naming the file and the tensor.
int model_load_checkpoint(Model *m, const ModelOptions *o, const char *config_file, const char *ckpt_path,
                          char *path_out, size_t path_len, CheckpointInfo *info, char *err, size_t errlen);
