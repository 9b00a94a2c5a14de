// The colour term of dod_loss (layers/dod_loss.h, [loss] colour): colour_shift_loss against a closed
// form (per-image, per-channel tints read back exactly), against the evaluation metric
// metrics_colour_shift_f32 (the same quantity on the 0-255 scale), its gradient by finite differences,
// and how dod_loss composes it with the MSE term and reports it (NaN and no tensor when it is off).
// The other terms are checked elsewhere: MSE and SSIM against PyTorch in tests/test_dod_model.c, LPIPS
// in tests/test_lpips.c.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "autograd/ops.h"
#include "eval/metrics.h"
#include "layers/dod_loss.h"
#include "tests/check.h"

enum { N = 2, C = 3, H = 6, W = 5 };

// hq: smooth values well inside (-1, 1); out = hq + tint[n][c] + zero-mean detail (a checkerboard of
// amplitude 0.05), so each image and channel's mean differs from hq's by exactly tint[n][c].
static const float tint[N][C] = {{0.10f, -0.04f, 0.0f}, {-0.20f, 0.03f, 0.07f}};

static void fill_pair(Tensor *out, Tensor *hq) {
    float *o = tensor_data_f32(out), *q = tensor_data_f32(hq);
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++)
            for (int y = 0; y < H; y++)
                for (int x = 0; x < W; x++) {
                    int i = ((n * C + c) * H + y) * W + x;
                    q[i] = 0.5f * sinf(0.7f * (float)(i + 1));
                    // H is even: every column's checkerboard sums to 0, so the detail leaves the mean alone.
                    float detail = (x + y) % 2 ? 0.05f : -0.05f;
                    o[i] = q[i] + tint[n][c] + detail;
                }
}

static Tensor *colour_fn(void *ctx, Tensor *const *in) { (void)ctx; return colour_shift_loss(in[0], in[1]); }

int main(void) {
    int64_t shape[] = {N, C, H, W};
    Tensor *out = tensor_new_persistent("out", 4, shape, DT_F32), *hq = tensor_new_persistent("hq", 4, shape, DT_F32);
    fill_pair(out, hq);

    // Closed form: the mean over images and channels of |tint|.
    double expect = 0;
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++) expect += fabs(tint[n][c]) / (N * C);
    ag_step_reset();
    CHECK_NEAR(tensor_item(colour_shift_loss(out, hq)), expect, 2e-7, "colour_shift_loss of known tints");
    CHECK_NEAR(tensor_item(colour_shift_loss(hq, hq)), 0.0, 0, "colour_shift_loss(hq, hq) == 0");

    // The evaluation metric (promptir profile: [0, 1] values, times 255) on each image, averaged: the loss
    // is the same quantity in [-1, 1] units, i.e. metric / 127.5.
    MetricOpts mo = metrics_opts_default(METRIC_PROFILE_PROMPTIR);
    double metric = 0;
    const float *o = tensor_data_f32(out), *q = tensor_data_f32(hq);
    for (int n = 0; n < N; n++) {
        float a[C * H * W], b[C * H * W];
        for (int i = 0; i < C * H * W; i++) {
            a[i] = (o[n * C * H * W + i] + 1) / 2;
            b[i] = (q[n * C * H * W + i] + 1) / 2;
        }
        double shift = 0;
        char err[256];
        CHECK(metrics_colour_shift_f32(a, b, H, W, C, METRIC_CHW, &mo, &shift, err, sizeof err) == 0, "%s", err);
        metric += shift / N;
    }
    ag_step_reset();
    CHECK_NEAR(tensor_item(colour_shift_loss(out, hq)) * 127.5, metric, 1e-4, "loss x 127.5 == metrics_colour_shift_f32");

    // Gradient by finite differences, with respect to both images (d/d out = sign(tint) / (N C H W) per
    // pixel). Image 0's channel 2 has no tint, the kink of |.|: tint it by 0.01 first, far from where a
    // 1e-3 step of one pixel (1e-3 / (H W) on the mean) could cross it.
    out->requires_grad = true;
    hq->requires_grad = true;
    float *od = tensor_data_f32(out);
    for (int i = 0; i < H * W; i++) od[2 * H * W + i] += 0.01f;
    Tensor *in[2] = {out, hq};
    gradcheck("colour_shift_loss wrt out and hq", colour_fn, NULL, 2, in, 1e-3, 1e-3, 1e-6, 0);
    out->requires_grad = false;
    hq->requires_grad = false;
    fill_pair(out, hq);

    // dod_loss: total = mse * MSE + colour * colour term; the term read back; off: NaN and no tensor.
    ag_step_reset();
    DodLoss l = dod_loss(out, hq, (DodLossWeights){.mse = 2, .colour = 3});
    double mse = 0;
    for (int64_t i = 0; i < out->numel; i++) mse += (double)(o[i] - q[i]) * (o[i] - q[i]) / (double)out->numel;
    CHECK_NEAR(l.mse, mse, 1e-6, "dod_loss mse");
    CHECK_NEAR(l.colour, expect, 2e-7, "dod_loss colour term");
    CHECK_NEAR(tensor_item(l.total), 2 * mse + 3 * expect, 1e-6, "dod_loss total = 2 mse + 3 colour");
    CHECK(isnan(l.ssim) && isnan(l.lpips), "ssim and lpips off: NaN");
    ag_step_reset();
    l = dod_loss(out, hq, (DodLossWeights){.mse = 1});
    CHECK(isnan(l.colour), "colour off: NaN (got %g)", l.colour);
    CHECK_NEAR(tensor_item(l.total), mse, 1e-6, "colour off: total = mse");
    ag_step_reset();
    DodLossTerms t = dod_loss_terms(out, hq, (DodLossWeights){.mse = 1});
    CHECK(t.colour == NULL, "colour off: no term tensor");
    ag_step_reset();
    l = dod_loss(out, hq, (DodLossWeights){.colour = 1});   // the colour term alone
    CHECK_NEAR(tensor_item(l.total), expect, 2e-7, "colour alone: total = colour term");
    return check_summary();
}
