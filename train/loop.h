// The training loop behind `dod-train`: a run directory, the model, the loader, AdamW, logging,
// validation, checkpoints and resume. Needs HDF5 (the loader) and iniparser (the configuration);
// without them train_run reports what is missing.
//
// Per optimizer step s (0-based; "step" in logs and checkpoint names counts steps completed = s + 1):
//   for a in 0 .. grad_accum-1:  batch index b = s * grad_accum + a (the loader's step argument, so a
//       batch is a pure function of (seed, b)); ag_step_reset; out = model.forward(lq, noise_seed(b));
//       loss = dod_loss_terms(out, hq, [loss] weights, vsd sample) (layers/dod_loss.h: mse_w * MSE
//       + ssim_w * (1 - SSIM) + lpips_w * mean LPIPS + vsd_w * VSD, with the LPIPS network the run loads
//       from [loss] lpips_vgg / lpips_lin and, for vsd_w > 0, the VSD term on the forward's latent);
//       backward(loss / grad_accum) (from zeroed gradients; with grad_accum > 1 the micro-batches'
//       gradients are summed outside the tape, train/grad_sync.h)
//   grad_norm = clip_grad_norm(trainable, clip_norm); adamw_step(lr_at(schedule, s)); zero grads.
// noise_seed(b) = rng_key(rng_key(seed, TRAIN_NOISE_STREAM), b) (data/keyed_rng.h): the training
// randomness is counter-based, so the step counter is the whole RNG state.
// [loss] vsd > 0 (layers/dod_vsd.h): the VSD term's noise and timesteps, and after the model's backward
// the regulariser's diffusion loss on the same latent (detached), back-propagated into its LoRA (same
// scaling, accumulation and all-reduce as the model's gradients), are keyed by
// rng_key(rng_key(seed, TRAIN_VSD_STREAM), b). After the model's AdamW step the regulariser's: clipped to
// clip_norm, its own AdamW at the same schedule scaled to [loss] vsd_lr.
// Nothing inside a step waits for the device: the loss terms and gradient norms are read once, after both
// optimizers' kernels are queued (train/loop.c).
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
#define TRAIN_VSD_STREAM 0x767364ull         // "vsd"

typedef struct {
    int64_t step;            // steps completed (1-based)
    double loss, mse, ssim;  // means over the micro-batches: total loss, MSE, 1 - SSIM (0 when unweighted)
    double lpips;            // mean LPIPS(out, hq) (0 when unweighted)
    double vsd, vsd_diffusion;   // [loss] vsd > 0: the VSD term (unweighted) and the regulariser's diffusion loss
    double lr, grad_norm;    // grad_norm before clipping
    double vsd_grad_norm;    // the regulariser's, before clipping (0 without it)
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
