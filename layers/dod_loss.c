// The DOD training loss (see layers/dod_loss.h).
#include "layers/dod_loss.h"

#include <math.h>

#include "autograd/ops.h"
#include "layers/dod_model_util.h"

DodLoss dod_loss(Tensor *out, Tensor *hq, DodLossWeights w) {
    DOD_CHECK(tensor_same_shape(out, hq), "dod_loss", "output %s and target %s differ in shape", shape_str(out),
              shape_str(hq));
    DOD_CHECK(w.lpips == 0.0f, "dod_loss", "lpips weight %g: the LPIPS loss is not implemented yet, the weight must be 0",
              w.lpips);
    DodLoss l = {.ssim = NAN, .lpips = NAN};
    Tensor *mse = op_mse_loss(out, hq);
    l.mse = dod_scalar_value(mse);
    l.total = op_scale(mse, w.mse);
    // Stage 1's LPIPS term (weight 5 in the paper) joins here once a VGG LPIPS exists.
    if (w.ssim > 0) {
        Tensor *ssim = op_ssim(out, hq, 2.0f);
        Tensor *one_minus = op_add_scalar(op_scale(ssim, -1.0f), 1.0f);
        l.ssim = dod_scalar_value(ssim);
        l.ssim_loss = dod_scalar_value(one_minus);
        l.total = op_add(l.total, op_scale(one_minus, w.ssim));
    }
    return l;
}
