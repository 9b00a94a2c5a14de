// LPIPS (layers/lpips.h) as an image-quality metric for `dod-eval metrics` and `dod-eval run`: one
// distance per image pair, computed without gradients wherever the network's weights live. Images
// enter as the lpips package's tools feed them (lpips.im2tensor): RGB in [-1, 1], x / 127.5 - 1 for
// 8-bit pixels, 2 x - 1 for [0, 1] floats; the whole image is scored (no border crop, no Y channel:
// those options are PSNR/SSIM's). Lower is more similar.
#pragma once
#include <stddef.h>

#include "data/image.h"
#include "eval/metrics.h"
#include "layers/lpips.h"

// 3-channel float images in [0, 1] (layout CHW or HWC), h x w, at least 16 x 16: = *out. 0, or -1 with
// err saying why.
int lpips_metric_f32(Lpips *m, const float *pred, const float *gt, int h, int w, MetricLayout layout, double *out,
                     char *err, size_t errlen);
// 8-bit RGB images (Image.c == 3) of the same size after centre-cropping both to a multiple of crop_multiple (0: off),
// as PSNR/SSIM see them: = *out. 0, or -1 with err naming the sizes.
int lpips_metric_images(Lpips *m, const Image *pred, const Image *gt, int crop_multiple, double *out, char *err,
                        size_t errlen);
