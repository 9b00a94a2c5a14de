// The DOD training loss (see layers/dod_loss.h).
#include "layers/dod_loss.h"

#include <math.h>

#include "autograd/ops.h"

DodLossTerms dod_loss_terms(Tensor *out, Tensor *hq, DodLossWeights w) {
    DOD_CHECK(tensor_same_shape(out, hq), "dod_loss", "output %s and target %s differ in shape", shape_str(out),
              shape_str(hq));
    DOD_CHECK(w.lpips == 0.0f, "dod_loss", "lpips weight %g: the LPIPS loss is not implemented yet, the weight must be 0",
              w.lpips);
    DodLossTerms t = {0};
    t.mse = op_mse_loss(out, hq);
    t.total = op_scale(t.mse, w.mse);
    // Stage 1's LPIPS term (weight 5 in the paper) joins here once a VGG LPIPS exists.
    if (w.ssim > 0) {
        t.ssim = op_ssim(out, hq, 2.0f);
        t.ssim_loss = op_add_scalar(op_scale(t.ssim, -1.0f), 1.0f);
        t.total = op_add(t.total, op_scale(t.ssim_loss, w.ssim));
    }
    return t;
}

DodLoss dod_loss(Tensor *out, Tensor *hq, DodLossWeights w) {
    DodLossTerms t = dod_loss_terms(out, hq, w);
    DodLoss l = {.total = t.total, .mse = tensor_item(t.mse), .ssim = NAN, .lpips = NAN};
    if (t.ssim) {
        l.ssim = tensor_item(t.ssim);
        l.ssim_loss = tensor_item(t.ssim_loss);
    }
    return l;
}
