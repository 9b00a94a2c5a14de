// The training loop behind `dod-train`: a run directory, the model, the loader, AdamW, logging,
// validation, checkpoints and resume. Needs HDF5 (the loader) and iniparser (the configuration);
// without them train_run reports what is missing.
//
// Per optimizer step s (0-based; "step" in logs and checkpoint names counts steps completed = s + 1):
//   for a in 0 .. grad_accum-1:  batch index b = s * grad_accum + a (the loader's step argument, so a
//       batch is a pure function of (seed, b)); ag_step_reset; out = model.forward(lq, noise_seed(b));
//       loss = dod_loss(out, hq, [loss] weights) (layers/dod_loss.h: mse_w * MSE + ssim_w * (1 - SSIM)
//       + lpips_w * mean LPIPS, with the LPIPS network the run loads from [loss] lpips_vgg / lpips_lin);
//       backward(loss / grad_accum) (from zeroed gradients; with grad_accum > 1 the micro-batches'
//       gradients are summed outside the tape, train/grad_sync.h)
//   grad_norm = clip_grad_norm(trainable, clip_norm); adamw_step(lr_at(schedule, s)); zero grads.
// noise_seed(b) = rng_key(rng_key(seed, TRAIN_NOISE_STREAM), b) (data/keyed_rng.h): the training
// randomness is counter-based, so the step counter is the whole RNG state.
// W processes (o->comm): process r runs micro-batches a = 0 .. grad_accum-1 as global micro-batch
// g = (s * grad_accum + a) * W + r (loader step s * grad_accum + a with rank r of W: the loader's
// sample stream position is g), noise_seed(g), backward(loss / (W * grad_accum)); the gradients are
// summed over the processes (train/grad_sync.h). So W processes see exactly the samples and noise
// of 1 process with grad_accum x W (its micro-batch a' of step s is process a' mod W's micro-batch
// a' div W), and for W = 2 with grad_accum 1 they train bit-identically to it.
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "train/comm.h"
#include "train/config.h"

#define TRAIN_INTERRUPTED 130             // train_run's return (and dod-train's exit code) after a stop
// train_run's return when every process stopped on the same error at the same step (a non-finite
// loss or gradient: the processes agree on it), so none waits for another: dod-train ends each one
// normally (exit 1) rather than aborting the job. An error on one process alone returns -1.
#define TRAIN_FAILED_TOGETHER (-2)
#define TRAIN_NOISE_STREAM 0x6e6f697365ull   // "noise"

typedef struct {
    int64_t step;            // steps completed (1-based)
    double loss, mse, ssim;  // means over the micro-batches: total loss, MSE, 1 - SSIM (0 when unweighted)
    double lpips;            // mean LPIPS(out, hq) (0 when unweighted)
    double lr, grad_norm;    // grad_norm before clipping
} TrainStepStats;

typedef struct {
    TrainConfig cfg;         // resolved and validated
    bool resume;             // continue from cfg.run_dir's latest checkpoint
    bool quiet;              // no progress lines on stderr
    // Called after every optimizer step (before checkpoint/validation decisions); tests use it to
    // record losses and to raise a stop at a chosen step.
    void (*on_step)(void *ctx, const TrainStepStats *s);
    void *on_step_ctx;
    // Several processes (docs/training.md, "Several processes"): NULL or backend none for one.
    Comm *comm;
} TrainOptions;

// SIGINT/SIGTERM: the first stops the run at the next micro-batch boundary (a step in progress with
// more micro-batches to go is dropped, its partial gradients discarded; with several processes the
// stop is agreed at the end of the step instead, so that step completes), saves a checkpoint of the
// completed steps and makes train_run return TRAIN_INTERRUPTED; a second one exits at once (130).
void train_install_signal_handlers(void);

// Runs (or resumes) training. 0 when cfg.steps are done (final checkpoint saved), TRAIN_INTERRUPTED
// after a stop (checkpoint saved, its path printed), -1 or TRAIN_FAILED_TOGETHER with a message on
// error. A step whose loss or gradient norm is NaN or infinite is an error naming the micro-batch and
// the first tensor whose gradient (else value) is not finite; nothing of it is saved.
int train_run(const TrainOptions *o, char *err, size_t errlen);
