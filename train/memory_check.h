// The memory a training step will need, estimated before the first step, so a configuration that
// cannot fit (a crop of 8192 on a laptop) is refused with the numbers and the keys to change rather
// than ending in the kernel's OOM killer minutes later without a word.
//
// How: one forward + loss (dod_loss_terms with the run's weights, LPIPS included) + backward of the
// model as configured (recomputation, activation dtype, device) on a synthetic batch of one sample, at the configured crop when it is at most 64 pixels,
// else at crops 64 and 128; the step memory (host arena + activation gradients, or on CUDA the
// device arena + cached blocks) is fitted as a + b * pixels per sample and extrapolated to the
// configured batch and crop (activations grow linearly with pixels: attention keeps no score
// matrix). The parameters' gradients are zeroed after it, so training is unchanged (resume stays
// exact). Loader buffers are added. The estimate is compared with [train] max_memory, and on the
// CPU with what the machine allows: MemAvailable, the cgroup's memory.max, the address-space limit.
// Several processes: each checks its own step against what is free when it checks.
#pragma once
#include <stdbool.h>
#include <stddef.h>

#include "autograd/tensor.h"
#include "train/config.h"
#include "layers/dod_loss.h"
#include "layers/model.h"

// 0 when the estimate fits (printing it unless quiet), -1 with a message giving the estimate, the
// limit and the keys to change. c->max_memory < 0 skips the check (returns 0 at once).
// The weights are the run's loss weights (lpips_net on m's device when lpips > 0).
int train_memory_check(Model *m, Tensor *const *trainable, int n_trainable, const TrainConfig *c, DodLossWeights w,
                       int batch_n, bool quiet, char *err, size_t errlen);
