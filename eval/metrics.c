// PSNR / SSIM / colour shift under the promptir (scikit-image) and basicsr protocols: cropping, conversion of
// 8-bit or float pixels into the planes each reference computes on, and the per-image numbers.
// The per-plane SSIM kernels are in eval/ssim.c.
#include "eval/metrics.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/base.h"
#include "eval/ssim.h"

int metrics_profile_parse(const char *name, MetricProfile *out) {
    if (!strcmp(name, "promptir")) *out = METRIC_PROFILE_PROMPTIR;
    else if (!strcmp(name, "basicsr")) *out = METRIC_PROFILE_BASICSR;
    else return -1;
    return 0;
}

const char *metrics_profile_name(MetricProfile p) {
    return p == METRIC_PROFILE_BASICSR ? "basicsr" : "promptir";
}

MetricOpts metrics_opts_default(MetricProfile p) {
    MetricOpts o = {p, 0, false, 0};
    return o;
}

void metrics_opts_describe(const MetricOpts *o, char *buf, size_t len) {
    snprintf(buf, len, "%s, %s, crop-border %d, crop-multiple %d", metrics_profile_name(o->profile),
             o->y_channel ? "Y channel" : "RGB", o->crop_border, o->crop_multiple);
}

void metrics_crop_multiple_rect(int w, int h, int m, int *x0, int *y0, int *w_out, int *h_out) {
    // PromptIR utils/image_utils.py crop_img: keep [rem / 2, size - rem + rem / 2)
    const int rem_w = m > 0 ? w % m : 0, rem_h = m > 0 ? h % m : 0;
    *x0 = rem_w / 2;
    *y0 = rem_h / 2;
    *w_out = w - rem_w;
    *h_out = h - rem_h;
}

// ---- pixel sources: 8-bit HWC or float HWC/CHW, read through one accessor --------------------
typedef struct {
    const uint8_t *u8;   // exactly one of u8 / f32 is set
    const float *f32;
    int w, h, c;
    MetricLayout layout;
    int x0, y0;          // the scored window after cropping
} Source;

static inline size_t src_index(const Source *s, int y, int x, int ch) {
    const int yy = s->y0 + y, xx = s->x0 + x;
    if (s->layout == METRIC_CHW) return ((size_t)ch * s->h + yy) * s->w + xx;
    return ((size_t)yy * s->w + xx) * s->c + ch;
}

// The value scikit-image sees under PromptIR: ToTensor's uint8 / 255 in float32 (correctly rounded,
// as numpy's float32 division is), or the float output clipped to [0, 1] (np.clip).
static inline float src_unit_f32(const Source *s, int y, int x, int ch) {
    if (s->u8) return (float)s->u8[src_index(s, y, x, ch)] / 255.0f;
    const float v = s->f32[src_index(s, y, x, ch)];
    return v < 0.0f ? 0.0f : (v > 1.0f ? 1.0f : v);
}

// The uint8 BasicSR sees: the byte itself, or tensor2img's clamp(0, 1), float32 x * 255, round
// half to even (numpy round), cast.
static inline uint8_t src_byte(const Source *s, int y, int x, int ch) {
    if (s->u8) return s->u8[src_index(s, y, x, ch)];
    float v = s->f32[src_index(s, y, x, ch)];
    v = v < 0.0f ? 0.0f : (v > 1.0f ? 1.0f : v);
    return (uint8_t)nearbyintf(v * 255.0f);
}

// BasicSR to_y_channel on one BGR pixel: uint8 -> float32 / 255, bgr2ycbcr(y_only) dot product in
// float64 (+16, / 255, stored float32), then * 255 in float32 -- never rounded.
static inline double basicsr_y(uint8_t r, uint8_t g, uint8_t b) {
    const float bf = (float)b / 255.0f, gf = (float)g / 255.0f, rf = (float)r / 255.0f;
    const double ycc = (double)bf * 24.966 + (double)gf * 128.553 + (double)rf * 65.481 + 16.0;
    const float y01 = (float)(ycc / 255.0);
    return (double)(y01 * 255.0f);
}

// ---- the two profiles on a prepared window ----------------------------------------------------
// promptir: float32 planes in channel order (R, G, B); PSNR over all of them; SSIM per channel,
// each channel's mean stored as float32 (skimage's mssim array), their float32 sum / nch, float32.
static void score_promptir(const Source *pred, const Source *gt, int h, int w, int nch, double *psnr,
                           double *ssim) {
    const size_t n = (size_t)h * w;
    float *p = dod_malloc(n * sizeof(float), "promptir pred plane");
    float *g = dod_malloc(n * sizeof(float), "promptir gt plane");
    double sq_sum = 0.0;
    float ch_sum = 0.0f;
    for (int ch = 0; ch < nch; ch++) {
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++) {
                p[(size_t)y * w + x] = src_unit_f32(pred, y, x, ch);
                g[(size_t)y * w + x] = src_unit_f32(gt, y, x, ch);
            }
        for (size_t i = 0; i < n; i++) {
            const float d = g[i] - p[i];   // skimage: (image_true - image_test) ** 2 in float32
            sq_sum += (double)(d * d);
        }
        if (ssim) {
            const float ch_mean = (float)ssim_plane_skimage_f32(g, p, h, w);
            ch_sum = ch == 0 ? ch_mean : ch_sum + ch_mean;
        }
    }
    free(p);
    free(g);
    const double mse = sq_sum / ((double)n * nch);
    *psnr = mse == 0.0 ? INFINITY : 10.0 * log10(1.0 / mse);
    if (ssim) *ssim = (double)(float)((double)ch_sum / nch);
}

// basicsr: float64 planes, channels in BGR order as cv2 loads them (only the order of the final
// mean depends on it), or the single Y plane.
static void score_basicsr(const Source *pred, const Source *gt, int h, int w, int nch, bool y_channel,
                          double *psnr, double *ssim) {
    const size_t n = (size_t)h * w;
    const int planes = y_channel ? 1 : nch;
    double *p = dod_malloc(n * sizeof(double), "basicsr pred plane");
    double *g = dod_malloc(n * sizeof(double), "basicsr gt plane");
    double sq_sum = 0.0, ssim_sum = 0.0;
    for (int k = 0; k < planes; k++) {
        const int ch = nch - 1 - k;  // B, G, R
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++) {
                const size_t i = (size_t)y * w + x;
                if (y_channel) {
                    p[i] = basicsr_y(src_byte(pred, y, x, 0), src_byte(pred, y, x, 1), src_byte(pred, y, x, 2));
                    g[i] = basicsr_y(src_byte(gt, y, x, 0), src_byte(gt, y, x, 1), src_byte(gt, y, x, 2));
                } else {
                    p[i] = src_byte(pred, y, x, ch);
                    g[i] = src_byte(gt, y, x, ch);
                }
            }
        for (size_t i = 0; i < n; i++) {
            const double d = p[i] - g[i];
            sq_sum += d * d;
        }
        if (ssim) ssim_sum += ssim_plane_basicsr_f64(p, g, h, w);
    }
    free(p);
    free(g);
    const double mse = sq_sum / ((double)n * planes);
    *psnr = mse == 0.0 ? INFINITY : 10. * log10(255. * 255. / mse);
    if (ssim) *ssim = ssim_sum / planes;
}

// Cropping and checks: sets pred/gt's x0/y0 to the scored window and writes (=) its size *w x *h.
// pred/gt have their full sizes set. min_side: the smallest window the metric accepts (its SSIM window;
// 1 for a metric without one).
static int score_window(Source *pred, Source *gt, const MetricOpts *o, int min_side, int *w_out, int *h_out,
                        char *err, size_t errlen) {
    if (o->crop_border < 0 || o->crop_multiple < 0) {
        snprintf(err, errlen, "crop-border (%d) and crop-multiple (%d) must be >= 0", o->crop_border,
                 o->crop_multiple);
        return METRICS_ERR;
    }
    if (pred->c != gt->c || (pred->c != 1 && pred->c != 3)) {
        snprintf(err, errlen, "channel counts: pred has %d, gt has %d (1 or 3 each, and equal)", pred->c, gt->c);
        return METRICS_ERR;
    }
    int pw = pred->w, ph = pred->h, gw = gt->w, gh = gt->h;
    pred->x0 = pred->y0 = gt->x0 = gt->y0 = 0;
    if (o->crop_multiple > 0) {
        metrics_crop_multiple_rect(pred->w, pred->h, o->crop_multiple, &pred->x0, &pred->y0, &pw, &ph);
        metrics_crop_multiple_rect(gt->w, gt->h, o->crop_multiple, &gt->x0, &gt->y0, &gw, &gh);
    }
    if (pw != gw || ph != gh) {
        if (o->crop_multiple > 0)
            snprintf(err, errlen, "size mismatch: pred %dx%d vs gt %dx%d (%dx%d vs %dx%d after crop-multiple %d)",
                     pred->w, pred->h, gt->w, gt->h, pw, ph, gw, gh, o->crop_multiple);
        else
            snprintf(err, errlen, "size mismatch: pred %dx%d vs gt %dx%d (WxH)", pred->w, pred->h, gt->w, gt->h);
        return METRICS_ERR_SIZE;
    }
    const int w = pw - 2 * o->crop_border, h = ph - 2 * o->crop_border;
    if (w < 1 || h < 1) {
        snprintf(err, errlen, "%dx%d image minus crop-border %d leaves nothing to score", pw, ph, o->crop_border);
        return METRICS_ERR;
    }
    if (w < min_side || h < min_side) {
        snprintf(err, errlen, "%dx%d image minus crop-border %d leaves %dx%d, smaller than the %dx%d SSIM window "
                 "of the %s profile", pw, ph, o->crop_border, w > 0 ? w : 0, h > 0 ? h : 0, min_side, min_side,
                 metrics_profile_name(o->profile));
        return METRICS_ERR;
    }
    pred->x0 += o->crop_border;
    pred->y0 += o->crop_border;
    gt->x0 += o->crop_border;
    gt->y0 += o->crop_border;
    *w_out = w;
    *h_out = h;
    return 0;
}

// Checks, window, dispatch. ssim may be NULL (PSNR only).
static int score_sources(Source *pred, Source *gt, const MetricOpts *o, double *psnr, double *ssim,
                         char *err, size_t errlen) {
    if (o->y_channel && o->profile != METRIC_PROFILE_BASICSR) {
        snprintf(err, errlen, "the Y channel is a basicsr-profile option (the promptir protocol scores RGB)");
        return METRICS_ERR;
    }
    if (o->y_channel && pred->c != 3) {
        snprintf(err, errlen, "the Y channel needs RGB images, these have %d channel(s)", pred->c);
        return METRICS_ERR;
    }
    int w, h;
    int rc = score_window(pred, gt, o, o->profile == METRIC_PROFILE_BASICSR ? 11 : 7, &w, &h, err, errlen);
    if (rc) return rc;
    if (o->profile == METRIC_PROFILE_BASICSR) score_basicsr(pred, gt, h, w, pred->c, o->y_channel, psnr, ssim);
    else score_promptir(pred, gt, h, w, pred->c, psnr, ssim);
    return 0;
}

int metrics_pair(const Image *pred, const Image *gt, const MetricOpts *o, double *psnr, double *ssim,
                 char *err, size_t errlen) {
    Source sp = {pred->pix, NULL, pred->w, pred->h, pred->c, METRIC_HWC, 0, 0};
    Source sg = {gt->pix, NULL, gt->w, gt->h, gt->c, METRIC_HWC, 0, 0};
    return score_sources(&sp, &sg, o, psnr, ssim, err, errlen);
}

int metrics_files(const char *pred_path, const char *gt_path, const MetricOpts *o, double *psnr,
                  double *ssim, char *err, size_t errlen) {
    Image pred, gt;
    if (image_load(pred_path, &pred, err, errlen)) return METRICS_ERR;
    if (image_load(gt_path, &gt, err, errlen)) {
        image_free(&pred);
        return METRICS_ERR;
    }
    char why[512];
    int rc = metrics_pair(&pred, &gt, o, psnr, ssim, why, sizeof why);
    if (rc) snprintf(err, errlen, "%s vs %s: %s", pred_path, gt_path, why);
    image_free(&pred);
    image_free(&gt);
    return rc;
}

// First non-finite value of a float image, as "(y, x, channel)"; 0 when all are finite.
static int find_non_finite(const float *v, int h, int w, int c, MetricLayout layout, char *where, size_t len) {
    const size_t n = (size_t)h * w * c;
    for (size_t i = 0; i < n; i++) {
        if (isfinite(v[i])) continue;
        int y, x, ch;
        if (layout == METRIC_CHW) { ch = (int)(i / ((size_t)h * w)); y = (int)(i / w % h); x = (int)(i % w); }
        else { ch = (int)(i % c); x = (int)(i / c % w); y = (int)(i / ((size_t)c * w)); }
        snprintf(where, len, "%g at (y %d, x %d, channel %d)", v[i], y, x, ch);
        return 1;
    }
    return 0;
}

// A float pair's sizes and values: 0, or METRICS_ERR naming the empty size or the first non-finite
// value and which image holds it.
static int check_f32_pair(const float *pred, const float *gt, int h, int w, int c, MetricLayout layout, char *err,
                          size_t errlen) {
    char where[96];
    if (h <= 0 || w <= 0) {
        snprintf(err, errlen, "empty image %dx%d (WxH)", w, h);
        return METRICS_ERR;
    }
    if (find_non_finite(pred, h, w, c, layout, where, sizeof where)) {
        snprintf(err, errlen, "pred %dx%dx%d holds a non-finite value %s", w, h, c, where);
        return METRICS_ERR;
    }
    if (find_non_finite(gt, h, w, c, layout, where, sizeof where)) {
        snprintf(err, errlen, "gt %dx%dx%d holds a non-finite value %s", w, h, c, where);
        return METRICS_ERR;
    }
    return 0;
}

int metrics_pair_f32(const float *pred, const float *gt, int h, int w, int c, MetricLayout layout,
                     const MetricOpts *o, double *psnr, double *ssim, char *err, size_t errlen) {
    if (check_f32_pair(pred, gt, h, w, c, layout, err, errlen)) return METRICS_ERR;
    Source sp = {NULL, pred, w, h, c, layout, 0, 0};
    Source sg = {NULL, gt, w, h, c, layout, 0, 0};
    return score_sources(&sp, &sg, o, psnr, ssim, err, errlen);
}

int metrics_colour_shift_f32(const float *pred, const float *gt, int h, int w, int c, MetricLayout layout,
                             const MetricOpts *o, double *shift, char *err, size_t errlen) {
    if (check_f32_pair(pred, gt, h, w, c, layout, err, errlen)) return METRICS_ERR;
    Source sp = {NULL, pred, w, h, c, layout, 0, 0};
    Source sg = {NULL, gt, w, h, c, layout, 0, 0};
    int ww, wh;
    int rc = score_window(&sp, &sg, o, 1, &ww, &wh, err, errlen);
    if (rc) return rc;
    const bool bytes = o->profile == METRIC_PROFILE_BASICSR;
    double sum_abs = 0.0;
    for (int ch = 0; ch < c; ch++) {
        double sp_sum = 0.0, sg_sum = 0.0;   // float64 sums: exact enough for any image size
        for (int y = 0; y < wh; y++)
            for (int x = 0; x < ww; x++) {
                sp_sum += bytes ? (double)src_byte(&sp, y, x, ch) : 255.0 * src_unit_f32(&sp, y, x, ch);
                sg_sum += bytes ? (double)src_byte(&sg, y, x, ch) : 255.0 * src_unit_f32(&sg, y, x, ch);
            }
        sum_abs += fabs(sp_sum - sg_sum) / ((double)ww * wh);
    }
    *shift = sum_abs / c;
    return 0;
}

static void promptir_f32_or_die(const char *what, const float *pred, const float *gt, int h, int w, int c,
                                double *psnr, double *ssim) {
    char err[512];
    MetricOpts o = metrics_opts_default(METRIC_PROFILE_PROMPTIR);
    if (metrics_pair_f32(pred, gt, h, w, c, METRIC_HWC, &o, psnr, ssim, err, sizeof err))
        dod_fatal(what, "%s", err);
}

double metrics_psnr_f32(const float *pred, const float *gt, int h, int w, int c) {
    double psnr;
    promptir_f32_or_die("metrics_psnr_f32", pred, gt, h, w, c, &psnr, NULL);
    return psnr;
}

double metrics_ssim_f32(const float *pred, const float *gt, int h, int w, int c) {
    double psnr, ssim;
    promptir_f32_or_die("metrics_ssim_f32", pred, gt, h, w, c, &psnr, &ssim);
    return ssim;
}
