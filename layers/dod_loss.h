// The DOD training loss (docs/dod-model.md, "Losses") on restored and target images in [-1, 1]:
//   total = mse * MSE(out, hq) + ssim * (1 - SSIM(out, hq)) + lpips * mean over the batch of LPIPS(out, hq)
// with SSIM from op_ssim (data range 2, 11 x 11 Gaussian window) and LPIPS from lpips_distance
// (layers/lpips.h: VGG16, lpips v0.1). One definition: dod-train back-propagates it (train/loop.c,
// weights from [loss], any model kind) and tests/test_dod_model.c checks it against PyTorch through
// dod_model_loss (the stage's default weights); tests/test_lpips.c checks its LPIPS term.
#pragma once
#include "autograd/tensor.h"
#include "layers/lpips.h"

typedef struct {
    float mse, ssim, lpips;   // >= 0
    Lpips *lpips_net;         // the frozen LPIPS network on out's device (borrowed); needed when lpips > 0
} DodLossWeights;

typedef struct {
    Tensor *total;     // the scalar to back-propagate
    float mse;         // MSE(out, hq), unweighted
    float ssim;        // SSIM(out, hq); NaN when the ssim weight is 0 (not computed)
    float ssim_loss;   // 1 - SSIM as back-propagated; 0 when the ssim weight is 0
    float lpips;       // mean LPIPS(out, hq) over the batch; NaN when the lpips weight is 0 (not computed)
} DodLoss;

// The loss of out against hq ([N, 3, H, W], same shape) with weights w (= new tensors; records the
// tape when grad mode is on). The SSIM and LPIPS terms are built only when their weight is > 0 (LPIPS
// needs H, W >= 16). The float fields are read back from the loss tensors (one small copy each on CUDA,
// each waiting for the kernels before it).
DodLoss dod_loss(Tensor *out, Tensor *hq, DodLossWeights w);

// The same loss with its terms left where they were computed (no read-back, no host sync): one-element
// f32 tensors on out's device; ssim and ssim_loss NULL when w.ssim == 0, lpips NULL when w.lpips == 0.
// dod_loss reads these.
typedef struct {
    Tensor *total, *mse, *ssim, *ssim_loss, *lpips;
} DodLossTerms;
DodLossTerms dod_loss_terms(Tensor *out, Tensor *hq, DodLossWeights w);
