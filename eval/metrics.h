// Image-quality metrics (PSNR, SSIM, colour shift) under the two protocols the all-in-one restoration papers use.
// docs/metrics.md says exactly what each profile computes and which papers use it.
//
//  METRIC_PROFILE_PROMPTIR  AirNet / PromptIR / AdaIR `compute_psnr_ssim` (scikit-image 0.19):
//      float32 RGB in [0, 1] (clipped, never rounded), PSNR = 10 log10(1 / MSE) over H x W x 3,
//      SSIM = skimage structural_similarity(data_range=1, channel_axis=-1): per channel, 7x7 uniform
//      window, sample covariance (49/48), K1 0.01, K2 0.03, map cropped by 3 px, mean, mean of the
//      channels -- with skimage's float32 arithmetic reproduced step by step.
//  METRIC_PROFILE_BASICSR   BasicSR calculate_psnr / calculate_ssim: uint8 values as float64,
//      crop_border removed, optionally BasicSR's Y channel (to_y_channel, not rounded), PSNR =
//      10 log10(255^2 / MSE) (inf when identical), SSIM with an 11x11 Gaussian (sigma 1.5) over the
//      'valid' region, population statistics, C1 = (0.01*255)^2, C2 = (0.03*255)^2, mean of channels.
//
// Order of operations (both profiles): centre crop each image to a multiple of crop_multiple
// (PromptIR's crop_img: offset (size % m) / 2), then the size check, then crop_border, then the
// metric. Functions return 0, or METRICS_ERR / METRICS_ERR_SIZE with a message in err naming what
// is wrong.
#pragma once
#include <stdbool.h>
#include <stddef.h>

#include "data/image.h"

typedef enum { METRIC_PROFILE_PROMPTIR = 0, METRIC_PROFILE_BASICSR = 1 } MetricProfile;

enum {
    METRICS_ERR = -1,       // bad options, unreadable file, image too small for the SSIM window, ...
    METRICS_ERR_SIZE = -2,  // pred and gt sizes differ (after crop-multiple)
};

typedef struct {
    MetricProfile profile;
    int crop_border;    // pixels removed on every side before scoring (BasicSR's crop_border)
    bool y_channel;     // basicsr only: score BasicSR's Y (BT.601, [16, 235], unrounded)
    int crop_multiple;  // 0: off; m > 0: centre crop each image to a multiple of m first (AiO: 16)
} MetricOpts;

// Pixel layout of float buffers: interleaved HWC, or planar CHW (a tensor's NCHW slice).
typedef enum { METRIC_HWC = 0, METRIC_CHW = 1 } MetricLayout;

// "promptir" / "basicsr" -> profile. Returns 0, or -1 for anything else.
int metrics_profile_parse(const char *name, MetricProfile *out);
const char *metrics_profile_name(MetricProfile p);
// profile with no cropping and RGB scoring.
MetricOpts metrics_opts_default(MetricProfile p);
// One line describing the options, e.g. "basicsr, Y channel, crop-border 4, crop-multiple 16" (=).
void metrics_opts_describe(const MetricOpts *o, char *buf, size_t len);

// Centre-crop offsets and size for crop_img(base=m): writes (=) *x0, *y0, *w_out, *h_out.
void metrics_crop_multiple_rect(int w, int h, int m, int *x0, int *y0, int *w_out, int *h_out);

// Score one 8-bit pair (= *psnr, = *ssim; ssim may be NULL to skip SSIM). psnr is +inf for identical
// images (after cropping).
int metrics_pair(const Image *pred, const Image *gt, const MetricOpts *o, double *psnr, double *ssim,
                 char *err, size_t errlen);
// Load both files and score them; every message names the file(s) at fault and their sizes.
int metrics_files(const char *pred_path, const char *gt_path, const MetricOpts *o, double *psnr,
                  double *ssim, char *err, size_t errlen);

// Score float images (both h x w x c, c = 1 or 3) without rounding them first, e.g. model outputs
// in validation. promptir: values clipped to [0, 1] as compute_psnr_ssim does. basicsr: each image
// is first quantised as BasicSR's tensor2img does (clamp to [0, 1], round(x * 255) half-to-even).
int metrics_pair_f32(const float *pred, const float *gt, int h, int w, int c, MetricLayout layout,
                     const MetricOpts *o, double *psnr, double *ssim, char *err, size_t errlen);
// Mean colour shift of one pair (= *shift): (1/C) sum_c |mean_c(pred) - mean_c(gt)| on the 0-255
// scale, over the window the profile scores (after crop-multiple and crop-border), with the values the
// profile scores (promptir: clipped to [0, 1], times 255; basicsr: the bytes; the Y-channel option is
// ignored: this is a colour metric). 0 for images with the same channel means whatever their detail;
// a global tint of +d on one channel of three reads d / 3. docs/metrics.md "Colour shift".
int metrics_colour_shift_f32(const float *pred, const float *gt, int h, int w, int c, MetricLayout layout,
                             const MetricOpts *o, double *shift, char *err, size_t errlen);
// Convenience for the promptir protocol on HWC buffers in [0, 1]; exit with a message on bad sizes.
double metrics_psnr_f32(const float *pred, const float *gt, int h, int w, int c);
double metrics_ssim_f32(const float *pred, const float *gt, int h, int w, int c);
