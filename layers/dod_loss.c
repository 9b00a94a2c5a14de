// The DOD training loss (see layers/dod_loss.h).
#include "layers/dod_loss.h"

#include <math.h>

#include "autograd/ops.h"

DodLoss dod_loss(Tensor *out, Tensor *hq, DodLossWeights w) {
    DOD_CHECK(tensor_same_shape(out, hq), "dod_loss", "output %s and target %s differ in shape", shape_str(out),
              shape_str(hq));
    DOD_CHECK(w.lpips == 0.0f || w.lpips_net, "dod_loss",
              "lpips weight %g without an LPIPS network (DodLossWeights.lpips_net, layers/lpips.h)", w.lpips);
    DodLoss l = {.ssim = NAN, .lpips = NAN};
    Tensor *mse = op_mse_loss(out, hq);
    l.mse = tensor_item(mse);
    l.total = op_scale(mse, w.mse);
    if (w.ssim > 0) {
        Tensor *ssim = op_ssim(out, hq, 2.0f);
        Tensor *one_minus = op_add_scalar(op_scale(ssim, -1.0f), 1.0f);
        l.ssim = tensor_item(ssim);
        l.ssim_loss = tensor_item(one_minus);
        l.total = op_add(l.total, op_scale(one_minus, w.ssim));
    }
    if (w.lpips > 0) {   // stage 1's perceptual term (weight 5 in the paper); hq is a constant to the network
        Tensor *lpips = op_mean(lpips_distance(w.lpips_net, out, hq));
        l.lpips = tensor_item(lpips);
        l.total = op_add(l.total, op_scale(lpips, w.lpips));
    }
    return l;
}
