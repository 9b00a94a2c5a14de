// The toy restoration model: a small residual conv net built from engine ops, with the same
// two-stage structure as DOD so the training driver (stages, frozen dtype, checkpoints, resume)
// is exercised end to end without Stable Diffusion weights.
//
//   stage 1:  h = lq + (training ? 0.01 * N(0, 1) keyed by noise_seed : 0)      (the "sampled" input)
//             out1 = lq + conv_out(relu(conv_in(h)))                  conv_in 3->W, conv_out W->3, 3x3
//   stage 2:  out = out1 + detail.conv2(relu(detail.conv1(out1)))    detail.conv1 3->W, conv2 W->3
// Stage 1 trains conv_in.* and conv_out.*; stage 2 freezes them (stored as frozen_dtype) and trains
// detail.* (detail.conv2 starts at zero, so stage 2 starts from the stage-1 output, as DOD's detail
// module starts near identity).
#pragma once
#include "train/train_model.h"

TrainModel *toy_model_create(const TrainModelOptions *o, char *err, size_t errlen);
