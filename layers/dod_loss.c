// The DOD training loss (see layers/dod_loss.h).
#include "layers/dod_loss.h"

#include <math.h>

#include "autograd/ops.h"

DodLossTerms dod_loss_terms(Tensor *out, Tensor *hq, DodLossWeights w) {
    DOD_CHECK(tensor_same_shape(out, hq), "dod_loss", "output %s and target %s differ in shape", shape_str(out),
              shape_str(hq));
    DOD_CHECK(w.lpips == 0.0f || w.lpips_net, "dod_loss",
              "lpips weight %g without an LPIPS network (DodLossWeights.lpips_net, layers/lpips.h)", w.lpips);
    DodLossTerms t = {0};
    t.mse = op_mse_loss(out, hq);
    t.total = op_scale(t.mse, w.mse);
    if (w.ssim > 0) {
        t.ssim = op_ssim(out, hq, 2.0f);
        t.ssim_loss = op_add_scalar(op_scale(t.ssim, -1.0f), 1.0f);
        t.total = op_add(t.total, op_scale(t.ssim_loss, w.ssim));
    }
    if (w.lpips > 0) {   // stage 1's perceptual term (weight 5 in the paper); hq is a constant to the network
        t.lpips = op_mean(lpips_distance(w.lpips_net, out, hq));
        t.total = op_add(t.total, op_scale(t.lpips, w.lpips));
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
    if (t.lpips) l.lpips = tensor_item(t.lpips);
    return l;
}
