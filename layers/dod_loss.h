// The DOD training loss (docs/dod-model.md, "Losses"): the generator's whole objective, on restored and
// target images in [-1, 1] and, for the VSD term, the generator's one-step latent:
//   total = mse * MSE(out, hq) + ssim * (1 - SSIM(out, hq)) + lpips * mean over the batch of LPIPS(out, hq)
//         + vsd * VSD(latent)
// with SSIM from op_ssim (data range 2, 11 x 11 Gaussian window), LPIPS from lpips_distance
// (layers/lpips.h: VGG16, lpips v0.1) and VSD from dod_vsd_loss (layers/dod_vsd.h: OSEDiff's
// distribution-matching term, stage 1 of kind = dod). One definition: dod-train back-propagates it
// (train/loop.c, weights from [loss], any model kind), tests/test_dod_model.c checks it against PyTorch
// through dod_model_loss (the stage's default weights), tests/test_lpips.c its LPIPS term and
// tests/test_dod_vsd.c one full stage-1 step with MSE, LPIPS and VSD on. (The VSD regulariser's own
// diffusion loss trains the regulariser, not the generator: it is dod_vsd_diffusion_loss, not a term here.)
#pragma once
#include "autograd/tensor.h"
#include "layers/lpips.h"

typedef struct DodVsd DodVsd;   // layers/dod_vsd.h

typedef struct {
    float mse, ssim, lpips, vsd;   // >= 0
    Lpips *lpips_net;              // the frozen LPIPS network on out's device (borrowed); needed when lpips > 0
    DodVsd *vsd_reg;               // the VSD regulariser (borrowed); needed when vsd > 0
} DodLossWeights;

// The VSD term's inputs for one forward (dod_vsd_generator_sample draws them from a key): the generator's
// one-step latent of `out` (taped: the term's gradient flows through it into the generator), the noise
// (the latent's shape, host or device) and the timesteps t[N].
typedef struct {
    Tensor *latent, *noise;
    const int *t;
} DodVsdSample;

typedef struct {
    Tensor *total;     // the scalar to back-propagate
    float mse;         // MSE(out, hq), unweighted
    float ssim;        // SSIM(out, hq); NaN when the ssim weight is 0 (not computed)
    float ssim_loss;   // 1 - SSIM as back-propagated; 0 when the ssim weight is 0
    float lpips;       // mean LPIPS(out, hq) over the batch; NaN when the lpips weight is 0 (not computed)
} DodLoss;

// The loss of out against hq ([N, 3, H, W], same shape) with weights w, w.vsd = 0 (= new tensors; records
// the tape when grad mode is on). The SSIM and LPIPS terms are built only when their weight is > 0 (LPIPS
// needs H, W >= 16). The float fields are read back from the loss tensors (one small copy each on CUDA,
// each waiting for the kernels before it).
DodLoss dod_loss(Tensor *out, Tensor *hq, DodLossWeights w);

// The loss with its terms left where they were computed (no read-back, no host sync): one-element f32
// tensors on out's device; ssim and ssim_loss NULL when w.ssim == 0, lpips NULL when w.lpips == 0, vsd (the
// unweighted VSD term) NULL when w.vsd == 0. vsd: the VSD term's inputs, needed when w.vsd > 0 (else
// unread; NULL is fine). The terms are added in the order of the formula above, each only when its weight
// is > 0, so a zero weight leaves the total bit for bit as without that term. dod_loss reads these.
typedef struct {
    Tensor *total, *mse, *ssim, *ssim_loss, *lpips, *vsd;
} DodLossTerms;
DodLossTerms dod_loss_terms(Tensor *out, Tensor *hq, DodLossWeights w, const DodVsdSample *vsd);
