// LPIPS as an image metric (see eval/lpips_metric.h).
#include "eval/lpips_metric.h"

#include <stdio.h>
#include <stdlib.h>

#include "autograd/tape.h"

typedef struct {
    Lpips *m;
} DistanceCtx;

static Tensor *distance_block(void *ctx, Tensor *const *in) { return lpips_distance(((DistanceCtx *)ctx)->m, in[0], in[1]); }

// LPIPS of two [1, 3, h, w] host tensors in [-1, 1] (=), on the weights' device, the arena given back.
static double distance(Lpips *m, Tensor *a, Tensor *b) {
    Device dev = m->w[0]->device;
    bool prev = ag_set_grad_enabled(false);
    if (dev != DEV_CPU) a = tensor_to_device(a, dev), b = tensor_to_device(b, dev);
    DistanceCtx c = {m};
    Tensor *d = ag_run_keeping_output(distance_block, &c, 2, (Tensor *[]){a, b});
    double v = tensor_item(d);
    ag_set_grad_enabled(prev);
    ag_step_reset();
    return v;
}

int lpips_metric_f32(Lpips *m, const float *pred, const float *gt, int h, int w, MetricLayout layout, double *out,
                     char *err, size_t errlen) {
    if (h < 16 || w < 16) {
        snprintf(err, errlen, "LPIPS needs images of at least 16 x 16 pixels, got %dx%d (WxH)", w, h);
        return -1;
    }
    Tensor *t[2] = {tensor_new4(1, 3, h, w), tensor_new4(1, 3, h, w)};
    const float *src[2] = {pred, gt};
    int64_t plane = (int64_t)h * w;
    for (int k = 0; k < 2; k++) {
        float *d = tensor_data_f32(t[k]);
        for (int c = 0; c < 3; c++)
            for (int64_t p = 0; p < plane; p++)
                d[c * plane + p] = 2.0f * (layout == METRIC_CHW ? src[k][c * plane + p] : src[k][p * 3 + c]) - 1.0f;
    }
    *out = distance(m, t[0], t[1]);
    return 0;
}

int lpips_metric_images(Lpips *m, const Image *pred, const Image *gt, int crop_multiple, double *out, char *err,
                        size_t errlen) {
    const Image *img[2] = {pred, gt};
    int x0[2], y0[2], w[2], h[2];
    for (int k = 0; k < 2; k++) {
        if (img[k]->c != 3) {
            snprintf(err, errlen, "LPIPS needs RGB images, got %d channels", img[k]->c);
            return -1;
        }
        if (crop_multiple > 0) metrics_crop_multiple_rect(img[k]->w, img[k]->h, crop_multiple, &x0[k], &y0[k], &w[k], &h[k]);
        else x0[k] = y0[k] = 0, w[k] = img[k]->w, h[k] = img[k]->h;
    }
    if (w[0] != w[1] || h[0] != h[1]) {
        snprintf(err, errlen, "LPIPS: sizes differ, %dx%d vs %dx%d (WxH)", w[0], h[0], w[1], h[1]);
        return -1;
    }
    if (h[0] < 16 || w[0] < 16) {
        snprintf(err, errlen, "LPIPS needs images of at least 16 x 16 pixels, got %dx%d (WxH)", w[0], h[0]);
        return -1;
    }
    Tensor *t[2] = {tensor_new4(1, 3, h[0], w[0]), tensor_new4(1, 3, h[0], w[0])};
    int64_t plane = (int64_t)h[0] * w[0];
    for (int k = 0; k < 2; k++) {
        const Image *im = img[k];
        float *d = tensor_data_f32(t[k]);
        for (int c = 0; c < 3; c++)
            for (int y = 0; y < h[0]; y++)
                for (int x = 0; x < w[0]; x++) {
                    uint8_t v = im->pix[((size_t)(y0[k] + y) * im->w + x0[k] + x) * 3 + c];
                    d[c * plane + (int64_t)y * w[0] + x] = (float)(v / 127.5 - 1.0);
                }
    }
    *out = distance(m, t[0], t[1]);
    return 0;
}
