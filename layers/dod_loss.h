// The DOD training loss (docs/dod-model.md, "Losses") on restored and target images in [-1, 1]:
//   total = mse * MSE(out, hq) + ssim * (1 - SSIM(out, hq))   [+ lpips * LPIPS once it exists]
// with SSIM from op_ssim (data range 2, 11 x 11 Gaussian window). One definition: dod-train
// back-propagates it (train/loop.c, weights from [loss], any model kind) and tests/test_dod_model.c
// checks it against PyTorch through dod_model_loss (the stage's default weights).
#pragma once
#include "autograd/tensor.h"

typedef struct {
    float mse, ssim, lpips;   // >= 0; lpips must be 0 until LPIPS is implemented
} DodLossWeights;

typedef struct {
    Tensor *total;     // the scalar to back-propagate
    float mse;         // MSE(out, hq), unweighted
    float ssim;        // SSIM(out, hq); NaN when the ssim weight is 0 (not computed)
    float ssim_loss;   // 1 - SSIM as back-propagated; 0 when the ssim weight is 0
    float lpips;       // NaN until LPIPS exists
} DodLoss;

// The loss of out against hq ([N, 3, H, W], same shape) with weights w (= new tensors; records the
// tape when grad mode is on). The SSIM term is built only when w.ssim > 0. The float fields are read
// back from the loss tensors (one small copy each on CUDA, each waiting for the kernels before it).
DodLoss dod_loss(Tensor *out, Tensor *hq, DodLossWeights w);

// The same loss with its terms left where they were computed (no read-back, no host sync): one-element
// f32 tensors on out's device; ssim and ssim_loss NULL when w.ssim == 0. dod_loss reads these.
typedef struct {
    Tensor *total, *mse, *ssim, *ssim_loss;
} DodLossTerms;
DodLossTerms dod_loss_terms(Tensor *out, Tensor *hq, DodLossWeights w);
