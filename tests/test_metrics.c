// eval/metrics: every case in tests/fixtures/metrics/expected.json (scikit-image 0.19.3 and the
// BasicSR port, scripts/make_metric_fixtures.py) to 1e-6, through the file, 8-bit and float APIs;
// then closed-form values (PSNR, SSIM, colour shift), cropping geometry, thread-count independence and
// the error paths. Colour shifts: numpy in the same script, to 1e-9.
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "data/image.h"
#include "eval/metrics.h"
#include "eval/ssim.h"
#include "tests/check.h"

#define FIXTURES DOD_SOURCE_DIR "/tests/fixtures/metrics/"
#define TOL 1e-6

static char *read_text(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) { fprintf(stderr, "cannot open %s\n", path); exit(1); }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc(n + 1);
    if (fread(buf, 1, n, f) != (size_t)n) { fprintf(stderr, "cannot read %s\n", path); exit(1); }
    buf[n] = 0;
    fclose(f);
    return buf;
}

static double max_dev_psnr, max_dev_ssim, max_dev_shift;  // largest deviation from the references seen

static void check_value(double got, const cJSON *want, const char *what) {
    if (cJSON_IsString(want)) {  // "inf": identical images
        CHECK(isinf(got) && got > 0, "%s: got %.9g, want +inf", what, got);
    } else {
        CHECK_NEAR(got, want->valuedouble, TOL, what);
        double *m = strstr(what, "PSNR") ? &max_dev_psnr : &max_dev_ssim;
        if (fabs(got - want->valuedouble) > *m) *m = fabs(got - want->valuedouble);
    }
}

// u8 HWC -> float k / 255 (HWC, and CHW when chw)
static float *to_float(const Image *im, int chw) {
    float *f = malloc(sizeof(float) * im->w * im->h * im->c);
    for (int y = 0; y < im->h; y++)
        for (int x = 0; x < im->w; x++)
            for (int c = 0; c < im->c; c++) {
                const float v = (float)im->pix[((size_t)y * im->w + x) * im->c + c] / 255.0f;
                if (chw) f[((size_t)c * im->h + y) * im->w + x] = v;
                else f[((size_t)y * im->w + x) * im->c + c] = v;
            }
    return f;
}

static void check_fixture_cases(void) {
    char *text = read_text(FIXTURES "expected.json");
    cJSON *doc = cJSON_Parse(text);
    CHECK(doc != NULL, "expected.json does not parse");
    const cJSON *cases = cJSON_GetObjectItemCaseSensitive(doc, "cases");
    int n = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, cases) {
        const char *pred_rel = cJSON_GetObjectItemCaseSensitive(c, "pred")->valuestring;
        const char *gt_rel = cJSON_GetObjectItemCaseSensitive(c, "gt")->valuestring;
        MetricOpts o;
        CHECK(metrics_profile_parse(cJSON_GetObjectItemCaseSensitive(c, "profile")->valuestring, &o.profile) == 0,
              "profile");
        o.y_channel = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(c, "y_channel"));
        o.crop_border = cJSON_GetObjectItemCaseSensitive(c, "crop_border")->valueint;
        o.crop_multiple = cJSON_GetObjectItemCaseSensitive(c, "crop_multiple")->valueint;
        const cJSON *want_psnr = cJSON_GetObjectItemCaseSensitive(c, "psnr");
        const cJSON *want_ssim = cJSON_GetObjectItemCaseSensitive(c, "ssim");
        const cJSON *want_shift = cJSON_GetObjectItemCaseSensitive(c, "colour_shift");
        CHECK(cJSON_IsNumber(want_shift), "case %d has no colour_shift (regenerate the fixture)", n);
        char pred_path[1024], gt_path[1024], what[1400], desc[128], err[1024];
        snprintf(pred_path, sizeof pred_path, FIXTURES "%s", pred_rel);
        snprintf(gt_path, sizeof gt_path, FIXTURES "%s", gt_rel);
        metrics_opts_describe(&o, desc, sizeof desc);

        double psnr = NAN, ssim = NAN;
        int rc = metrics_files(pred_path, gt_path, &o, &psnr, &ssim, err, sizeof err);
        CHECK(rc == 0, "%s", err);
        snprintf(what, sizeof what, "%s vs %s [%s] PSNR", pred_rel, gt_rel, desc);
        check_value(psnr, want_psnr, what);
        snprintf(what, sizeof what, "%s vs %s [%s] SSIM", pred_rel, gt_rel, desc);
        check_value(ssim, want_ssim, what);

        // The float API (what validation calls on model outputs) must agree on the same values: for
        // promptir the floats are the k / 255 skimage saw, for basicsr they quantise back to k.
        Image pi, gi;
        if (image_load(pred_path, &pi, err, sizeof err) || image_load(gt_path, &gi, err, sizeof err)) {
            CHECK(0, "%s", err);
            continue;
        }
        if (pi.w == gi.w && pi.h == gi.h) {
            for (int chw = 0; chw < 2; chw++) {
                float *pf = to_float(&pi, chw), *gf = to_float(&gi, chw);
                double fp = NAN, fs = NAN;
                rc = metrics_pair_f32(pf, gf, pi.h, pi.w, 3, chw ? METRIC_CHW : METRIC_HWC, &o, &fp, &fs, err,
                                      sizeof err);
                CHECK(rc == 0, "%s", err);
                snprintf(what, sizeof what, "%s [%s] float %s PSNR", pred_rel, desc, chw ? "CHW" : "HWC");
                check_value(fp, want_psnr, what);
                snprintf(what, sizeof what, "%s [%s] float %s SSIM", pred_rel, desc, chw ? "CHW" : "HWC");
                check_value(fs, want_ssim, what);
                double shift = NAN;
                rc = metrics_colour_shift_f32(pf, gf, pi.h, pi.w, 3, chw ? METRIC_CHW : METRIC_HWC, &o, &shift, err,
                                              sizeof err);
                CHECK(rc == 0, "%s", err);
                CHECK_NEAR(shift, want_shift ? want_shift->valuedouble : NAN, 1e-9, "colour shift");
                if (want_shift && fabs(shift - want_shift->valuedouble) > max_dev_shift)
                    max_dev_shift = fabs(shift - want_shift->valuedouble);
                if (!chw && o.profile == METRIC_PROFILE_PROMPTIR && !o.crop_border && !o.crop_multiple) {
                    check_value(metrics_psnr_f32(pf, gf, pi.h, pi.w, 3), want_psnr, "metrics_psnr_f32");
                    check_value(metrics_ssim_f32(pf, gf, pi.h, pi.w, 3), want_ssim, "metrics_ssim_f32");
                }
                free(pf);
                free(gf);
            }
        }
        image_free(&pi);
        image_free(&gi);
        n++;
    }
    CHECK(n >= 150, "only %d fixture cases (regenerate with scripts/make_metric_fixtures.py)", n);
    printf("ok %d fixture cases (file, float HWC and CHW APIs); max |deviation| PSNR %.3g dB, SSIM %.3g, colour "
           "shift %.3g\n", n, max_dev_psnr, max_dev_ssim, max_dev_shift);
    cJSON_Delete(doc);
    free(text);
}

// Flat images: every window has zero variance, so SSIM = (2 a b + C1) / (a^2 + b^2 + C1) exactly
// and PSNR = 10 log10(1 / (a - b)^2) -- values the reference code need not be run for.
static void check_closed_form(void) {
    const int w = 20, h = 15;
    float *a = malloc(sizeof(float) * w * h * 3), *b = malloc(sizeof(float) * w * h * 3);
    for (int i = 0; i < w * h * 3; i++) { a[i] = 0.5f; b[i] = 0.25f; }
    MetricOpts o = metrics_opts_default(METRIC_PROFILE_PROMPTIR);
    double psnr, ssim;
    char err[512];
    CHECK(metrics_pair_f32(a, b, h, w, 3, METRIC_HWC, &o, &psnr, &ssim, err, sizeof err) == 0, "%s", err);
    CHECK_NEAR(psnr, 10 * log10(1 / 0.0625), 1e-9, "flat promptir PSNR");
    CHECK_NEAR(ssim, (2 * 0.5 * 0.25 + 1e-4) / (0.25 + 0.0625 + 1e-4), 1e-6, "flat promptir SSIM");
    // basicsr: 0.5 -> round(127.5) = 128 (half to even), 0.25 -> round(63.75) = 64
    o = metrics_opts_default(METRIC_PROFILE_BASICSR);
    CHECK(metrics_pair_f32(a, b, h, w, 3, METRIC_HWC, &o, &psnr, &ssim, err, sizeof err) == 0, "%s", err);
    const double c1 = 6.5025;
    CHECK_NEAR(psnr, 10 * log10(255.0 * 255.0 / (64.0 * 64.0)), 1e-9, "flat basicsr PSNR");
    CHECK_NEAR(ssim, (2 * 128.0 * 64 + c1) / (128.0 * 128 + 64 * 64 + c1), 1e-9, "flat basicsr SSIM");
    // clipping: values outside [0, 1] score as their clipped selves
    for (int i = 0; i < w * h * 3; i++) a[i] = 1.7f;
    for (int i = 0; i < w * h * 3; i++) b[i] = 1.0f;
    o = metrics_opts_default(METRIC_PROFILE_PROMPTIR);
    CHECK(metrics_pair_f32(a, b, h, w, 3, METRIC_HWC, &o, &psnr, &ssim, err, sizeof err) == 0, "%s", err);
    CHECK(isinf(psnr) && ssim == 1.0, "clipped 1.7 vs 1.0: psnr %g ssim %.9g", psnr, ssim);
    // the Gaussian window sums to 1 and peaks in the middle
    double g[11], s = 0;
    ssim_gaussian_kernel(11, 1.5, g);
    for (int i = 0; i < 11; i++) s += g[i];
    CHECK_NEAR(s, 1.0, 1e-15, "gaussian kernel sum");
    CHECK(g[5] > g[4] && g[4] == g[6], "gaussian kernel shape");
    CHECK_NEAR(g[5], 0.26601172486179436, 1e-15, "gaussian kernel centre (cv2.getGaussianKernel(11, 1.5)[5])");
    free(a);
    free(b);
}

// Colour shift: a tint of d on one channel of three reads d / 3 whatever the detail; opposite tints
// on two channels do not cancel; clipping and the byte quantisation of basicsr; cropping; errors.
static void check_colour_shift(void) {
    const int w = 24, h = 18;
    const size_t n = (size_t)w * h * 3;
    float *a = malloc(sizeof(float) * n), *b = malloc(sizeof(float) * n);
    for (size_t i = 0; i < n; i++) a[i] = (float)((i * 37 % 101) / 101.0 * 0.8 + 0.1);   // textured, in [0.1, 0.9]
    MetricOpts o = metrics_opts_default(METRIC_PROFILE_PROMPTIR);
    double shift;
    char err[512];
    memcpy(b, a, sizeof(float) * n);
    CHECK(metrics_colour_shift_f32(a, b, h, w, 3, METRIC_HWC, &o, &shift, err, sizeof err) == 0 && shift == 0.0,
          "identical images: %g (%s)", shift, err);
    for (int y = 0; y < h; y++)   // CHW: green plane + 6/255, blue plane - 3/255
        for (int x = 0; x < w; x++) {
            b[((size_t)1 * h + y) * w + x] = a[((size_t)1 * h + y) * w + x] + 6.0f / 255.0f;
            b[((size_t)2 * h + y) * w + x] = a[((size_t)2 * h + y) * w + x] - 3.0f / 255.0f;
        }
    CHECK(metrics_colour_shift_f32(b, a, h, w, 3, METRIC_CHW, &o, &shift, err, sizeof err) == 0, "%s", err);
    CHECK_NEAR(shift, (6.0 + 3.0) / 3.0, 1e-4, "tints +6 G, -3 B");
    // a detail change with the same means: a swap of two pixels of one channel
    memcpy(b, a, sizeof(float) * n);
    b[0] = a[3];
    b[3] = a[0];
    CHECK(metrics_colour_shift_f32(b, a, h, w, 3, METRIC_HWC, &o, &shift, err, sizeof err) == 0 && shift < 1e-12,
          "same means, other detail: %g", shift);
    // clipping (promptir): 1.7 scores as 1.0
    for (size_t i = 0; i < n; i++) a[i] = 1.7f, b[i] = 0.9f;
    CHECK(metrics_colour_shift_f32(a, b, h, w, 3, METRIC_HWC, &o, &shift, err, sizeof err) == 0, "%s", err);
    CHECK_NEAR(shift, 0.1 * 255.0, 1e-4, "clipped 1.7 vs 0.9");
    // basicsr: the bytes, round(0.5 * 255) = 128 (half to even), round(0.25 * 255) = 64
    for (size_t i = 0; i < n; i++) a[i] = 0.5f, b[i] = 0.25f;
    o = metrics_opts_default(METRIC_PROFILE_BASICSR);
    CHECK(metrics_colour_shift_f32(a, b, h, w, 3, METRIC_HWC, &o, &shift, err, sizeof err) == 0 && shift == 64.0,
          "basicsr bytes 128 vs 64: %g", shift);
    // the scored window: a crop-border of 2 leaves out a frame that differs
    o = metrics_opts_default(METRIC_PROFILE_PROMPTIR);
    o.crop_border = 2;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int c = 0; c < 3; c++) {
                const bool frame = y < 2 || x < 2 || y >= h - 2 || x >= w - 2;
                a[((size_t)y * w + x) * 3 + c] = 0.5f;
                b[((size_t)y * w + x) * 3 + c] = frame ? 0.0f : 0.5f;
            }
    CHECK(metrics_colour_shift_f32(a, b, h, w, 3, METRIC_HWC, &o, &shift, err, sizeof err) == 0 && shift == 0.0,
          "frame outside the window: %g", shift);
    o.crop_border = 0;
    CHECK(metrics_colour_shift_f32(a, b, h, w, 3, METRIC_HWC, &o, &shift, err, sizeof err) == 0 && shift > 10,
          "frame inside the window: %g", shift);
    // errors name what is wrong
    o.crop_border = 12;
    CHECK(metrics_colour_shift_f32(a, b, h, w, 3, METRIC_HWC, &o, &shift, err, sizeof err) == METRICS_ERR &&
              strstr(err, "crop-border 12"), "window too small: %s", err);
    o.crop_border = 0;
    b[7] = INFINITY;
    CHECK(metrics_colour_shift_f32(a, b, h, w, 3, METRIC_HWC, &o, &shift, err, sizeof err) == METRICS_ERR &&
              strstr(err, "gt") && strstr(err, "y 0, x 2, channel 1"), "non-finite gt: %s", err);
    free(a);
    free(b);
}

static void check_crop_geometry(void) {
    int x0, y0, w, h;
    metrics_crop_multiple_rect(481, 321, 16, &x0, &y0, &w, &h);
    CHECK(x0 == 0 && y0 == 0 && w == 480 && h == 320, "481x321 -> %dx%d at (%d, %d)", w, h, x0, y0);
    metrics_crop_multiple_rect(105, 90, 16, &x0, &y0, &w, &h);
    CHECK(x0 == 4 && y0 == 5 && w == 96 && h == 80, "105x90 -> %dx%d at (%d, %d)", w, h, x0, y0);
    metrics_crop_multiple_rect(96, 80, 16, &x0, &y0, &w, &h);
    CHECK(x0 == 0 && y0 == 0 && w == 96 && h == 80, "96x80 unchanged");
    metrics_crop_multiple_rect(50, 40, 0, &x0, &y0, &w, &h);
    CHECK(x0 == 0 && y0 == 0 && w == 50 && h == 40, "multiple 0 is off");
}

#ifdef _OPENMP
static void check_threads(void) {
    Image p, g;
    char err[512];
    if (image_load(FIXTURES "pred_noise/coffee.png", &p, err, sizeof err) ||
        image_load(FIXTURES "gt/coffee.png", &g, err, sizeof err)) {
        CHECK(0, "%s", err);
        return;
    }
    for (int prof = 0; prof < 2; prof++) {
        MetricOpts o = metrics_opts_default((MetricProfile)prof);
        double p1, s1, p2, s2;
        omp_set_num_threads(1);
        metrics_pair(&p, &g, &o, &p1, &s1, err, sizeof err);
        omp_set_num_threads(2);
        metrics_pair(&p, &g, &o, &p2, &s2, err, sizeof err);
        CHECK(p1 == p2 && s1 == s2, "%s: 1 thread %.17g %.17g vs 2 threads %.17g %.17g",
              metrics_profile_name(o.profile), p1, s1, p2, s2);
    }
    image_free(&p);
    image_free(&g);
}
#endif

static void check_errors(void) {
    char err[1024];
    double psnr, ssim;
    MetricOpts o = metrics_opts_default(METRIC_PROFILE_PROMPTIR);
    // size mismatch names both files and both sizes
    int rc = metrics_files(FIXTURES "pred_cropped/chelsea.png", FIXTURES "gt/chelsea.png", &o, &psnr, &ssim,
                           err, sizeof err);
    CHECK(rc == METRICS_ERR_SIZE && strstr(err, "pred_cropped/chelsea.png") && strstr(err, "gt/chelsea.png") &&
              strstr(err, "96x80") && strstr(err, "97x81"),
          "size mismatch message: %s", err);
    // ... and crop-multiple 16 reconciles them
    o.crop_multiple = 16;
    rc = metrics_files(FIXTURES "pred_cropped/chelsea.png", FIXTURES "gt/chelsea.png", &o, &psnr, &ssim, err,
                       sizeof err);
    CHECK(rc == 0, "crop-multiple 16: %s", err);
    o.crop_multiple = 0;
    // unreadable file: named
    rc = metrics_files(FIXTURES "no_such_dir/x.png", FIXTURES "gt/chelsea.png", &o, &psnr, &ssim, err, sizeof err);
    CHECK(rc == METRICS_ERR && strstr(err, "no_such_dir/x.png"), "missing file message: %s", err);
    rc = metrics_files(FIXTURES "expected.json", FIXTURES "gt/chelsea.png", &o, &psnr, &ssim, err, sizeof err);
    CHECK(rc == METRICS_ERR && strstr(err, "expected.json"), "undecodable file message: %s", err);

    // crop-border bigger than the image
    Image a = image_alloc(20, 16, 3), b = image_alloc(20, 16, 3);
    o.crop_border = 10;
    rc = metrics_pair(&a, &b, &o, &psnr, &ssim, err, sizeof err);
    CHECK(rc == METRICS_ERR && strstr(err, "crop-border 10"), "crop-border too big: %s", err);
    o.crop_border = -1;
    rc = metrics_pair(&a, &b, &o, &psnr, &ssim, err, sizeof err);
    CHECK(rc == METRICS_ERR && strstr(err, "crop-border"), "negative crop-border: %s", err);
    // smallest sizes: 7 for promptir, 11 for basicsr
    o.crop_border = 4;  // 20x16 -> 12x8 fits 7x7, not 11x11
    rc = metrics_pair(&a, &b, &o, &psnr, &ssim, err, sizeof err);
    CHECK(rc == 0, "12x8 promptir: %s", err);
    CHECK(isinf(psnr) && ssim == 1.0, "identical zeros: psnr %g ssim %.9g", psnr, ssim);
    o.profile = METRIC_PROFILE_BASICSR;
    rc = metrics_pair(&a, &b, &o, &psnr, &ssim, err, sizeof err);
    CHECK(rc == METRICS_ERR && strstr(err, "11x11") && strstr(err, "12x8"), "12x8 basicsr: %s", err);
    o.crop_border = 0;
    CHECK(metrics_pair(&a, &b, &o, &psnr, NULL, err, sizeof err) == 0 && isinf(psnr), "PSNR only: %s", err);
    // Y channel is basicsr only
    o = metrics_opts_default(METRIC_PROFILE_PROMPTIR);
    o.y_channel = true;
    rc = metrics_pair(&a, &b, &o, &psnr, &ssim, err, sizeof err);
    CHECK(rc == METRICS_ERR && strstr(err, "basicsr"), "promptir + Y: %s", err);
    image_free(&a);
    image_free(&b);

    // non-finite floats are named with their position
    float *f = calloc(16 * 16 * 3, sizeof(float)), *z = calloc(16 * 16 * 3, sizeof(float));
    f[(5 * 16 + 7) * 3 + 2] = NAN;
    o = metrics_opts_default(METRIC_PROFILE_PROMPTIR);
    rc = metrics_pair_f32(f, z, 16, 16, 3, METRIC_HWC, &o, &psnr, &ssim, err, sizeof err);
    CHECK(rc == METRICS_ERR && strstr(err, "pred") && strstr(err, "y 5, x 7, channel 2"), "NaN message: %s", err);
    free(f);
    free(z);
    CHECK(metrics_profile_parse("skimage", &o.profile) == -1, "unknown profile accepted");
}

int main(void) {
    check_fixture_cases();
    check_closed_form();
    check_colour_shift();
    check_crop_geometry();
#ifdef _OPENMP
    check_threads();
#endif
    check_errors();
    return check_summary();
}
