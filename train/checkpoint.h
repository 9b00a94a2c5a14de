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

// Saves params (the trainable tensors, f32) and opt's moments with info into ckpt_dir (created if
// missing), updates `latest` and prunes to keep_last files (0: keep all). path_out (may be NULL)
// receives the file written. Returns 0 or -1 with a message naming the file.
int checkpoint_save(const char *ckpt_dir, Tensor *const *params, int n, const AdamW *opt,
                    const CheckpointInfo *info, int keep_last, char *path_out, size_t path_len, char *err,
                    size_t errlen);

// Loads a checkpoint written by checkpoint_save: every one of params (by name, same shape) and, when
// opt is given, its moments and counter; fills info (=). Any missing or misshapen tensor, a tensor
// holding NaN or infinity, metadata out of range (checkpoint_read_info), a corrupt file or a foreign
// format is an error naming the file and the tensor or key. 0 or -1.
int checkpoint_load(const char *path, Tensor *const *params, int n, AdamW *opt, CheckpointInfo *info, char *err,
                    size_t errlen);
