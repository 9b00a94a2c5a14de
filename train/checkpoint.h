// Training checkpoints: saving the trainable tensors with the AdamW state into a run's checkpoint
// folder, and loading both back to resume. The file format and its read side (names, `latest`,
// metadata, loading weights for inference) are layers/model_weights.h.
//
// checkpoint_save writes the file atomically (safetensors_save), then `latest` (one line, the file
// name) through a temp file and a rename, then deletes older checkpoints beyond keep_last.
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "autograd/optim.h"
#include "autograd/params.h"
#include "layers/model_weights.h"

// What a checkpoint holds of one optimised set: its trainable tensors (f32, named, in optimizer order)
// and their optimizer (NULL: weights only). A run has the model's set and, with [loss] vsd > 0, the VSD
// regulariser's (its tensors named vsd_reg.*, layers/model_weights.h); every optimizer of a file steps
// together, so the file's adamw_step is each one's counter.
typedef struct {
    Tensor *const *params;
    int n;
    AdamW *opt;
} CheckpointGroup;

// Saves every group's tensors and moments with info into ckpt_dir (created if missing), updates
// `latest` and prunes to keep_last files (0: keep all). path_out (may be NULL) receives the file
// written. Returns 0 or -1 with a message naming the file.
int checkpoint_save_groups(const char *ckpt_dir, const CheckpointGroup *groups, int n_groups,
                           const CheckpointInfo *info, int keep_last, char *path_out, size_t path_len, char *err,
                           size_t errlen);
// One group: params (the trainable tensors) and opt.
int checkpoint_save(const char *ckpt_dir, Tensor *const *params, int n, const AdamW *opt,
                    const CheckpointInfo *info, int keep_last, char *path_out, size_t path_len, char *err,
                    size_t errlen);

// Loads a checkpoint written by checkpoint_save_groups: every group's tensors (by name, same shape;
// group 0 is the model's, CKPT_PART_MODEL, the others the regulariser's, CKPT_PART_REGULARISER) and,
// where an optimizer is given, its moments and counter; fills info (=). Any missing or misshapen
// tensor, a tensor of the file that no group trains, a tensor holding NaN or infinity, metadata out of
// range (checkpoint_read_info), a corrupt file or a foreign format is an error naming the file and the
// tensor or key. 0 or -1.
int checkpoint_load_groups(const char *path, const CheckpointGroup *groups, int n_groups, CheckpointInfo *info,
                           char *err, size_t errlen);
// One group (the model's).
int checkpoint_load(const char *path, Tensor *const *params, int n, AdamW *opt, CheckpointInfo *info, char *err,
                    size_t errlen);
