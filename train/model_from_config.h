// Building a TrainModel from a resolved TrainConfig, the way dod-train does, for every tool that
// needs "the model this configuration describes" (dod-train's loop, dod-eval run).
//   train_model_options_from_config: the [model]/[lora]/[modulation]/[stage]/[train] keys ->
//       TrainModelOptions (the strings point into the config);
//   train_model_from_config: create the model and, for stage 2, load the frozen stage-1 tensors
//       from [stage] init_from (a run dir or a checkpoint file);
//   train_model_load_eval_checkpoint: load a checkpoint's trainable tensors for inference (no
//       optimizer state), refusing one made for another model kind or stage.
#pragma once
#include <stddef.h>

#include "train/checkpoint.h"
#include "train/config.h"
#include "train/train_model.h"

// Writes (=) *mo from c. mo's strings point into c, which must outlive it.
void train_model_options_from_config(const TrainConfig *c, TrainModelOptions *mo);

// The model of c (=), stage-1 weights loaded for stage 2 (*n_stage1 receives their count; may be
// NULL). NULL with a message naming the kind / file / tensor at fault.
TrainModel *train_model_from_config(const TrainConfig *c, int *n_stage1, char *err, size_t errlen);

// Loads every trainable tensor of m from ckpt_path (a checkpoint file, or a run dir whose
// [checkpoint] dir has a `latest`): each must be present with the same shape, and the file must
// hold no tensor the model does not train. The checkpoint's model kind and stage must be c's.
// path_out (may be NULL) receives the file read; *info (may be NULL) its metadata (free with
// checkpoint_info_free). 0, or -1 with a message naming the file and the tensor.
int train_model_load_eval_checkpoint(TrainModel *m, const TrainConfig *c, const char *ckpt_path, char *path_out,
                                     size_t path_len, CheckpointInfo *info, char *err, size_t errlen);
