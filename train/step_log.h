// What the training loop reports about its steps and validations, in one place: the loss terms
// that are on, the progress line, and the TensorBoard scalars and images (eval/tfevents.h).
//
// TensorBoard tags (docs/training.md):
//   train/loss, train/<term> for each loss term that is on (train/mse, train/1-ssim, train/lpips), train/lr,
//   train/grad_norm (before clipping), train/it_per_s          every [log] every steps and the last
//   val/psnr, val/ssim, val/psnr_input, val/ssim_input, val/psnr_gain (means over the validation
//   images), val_psnr/<task>, val_ssim/<task> (per-task means), image val/grid (the sample grid,
//   when [val] grid is on)                                     at every validation
#pragma once
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "eval/tfevents.h"
#include "train/config.h"
#include "train/loop.h"
#include "eval/validate.h"

#define STEP_LOG_MAX_TERMS 8

typedef struct {
    const char *name;   // as printed and plotted: "mse", "1-ssim", "lpips"
    double value;       // the unweighted term, mean over the step's micro-batches
} StepLossTerm;

// The loss terms whose weight is on, in the order the loss adds them (= terms[]); returns how many.
int step_log_terms(const TrainConfig *c, const TrainStepStats *st, StepLossTerm terms[STEP_LOG_MAX_TERMS]);
// The progress line to f: "step 120/1000 | loss 0.01234 mse 0.00617 | lr 5e-05 | 1.52 it/s | ETA 9m13s"
// (only the terms that are on).
void step_log_progress(FILE *f, const TrainConfig *c, const TrainStepStats *st, double it_per_s, const char *eta);
// The step's scalars to tb (NULL: nothing).
void step_log_tensorboard_step(TfEvents *tb, const TrainConfig *c, const TrainStepStats *st, double it_per_s);
// A validation's scalars, and the grid PNG at grid_path as an image (NULL: none), to tb (NULL:
// nothing). 0, or -1 with a message naming the grid file when it cannot be read.
int step_log_tensorboard_validation(TfEvents *tb, int64_t step, const ValResult *vr, const char *grid_path, char *err,
                                    size_t errlen);
