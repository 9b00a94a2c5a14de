// Single-channel SSIM kernels: scikit-image's default (float32) and BasicSR's Gaussian (float64).
//
// Both work one output row at a time: a vertical pass sums the window's rows for the five
// statistics (x, y, x^2, y^2, xy) over every column into per-thread row buffers, a horizontal pass
// finishes the window, and the SSIM map row is summed in double into row_sum[r]. The rows are
// added in order at the end, so threads never change the answer.
#include "eval/ssim.h"

#include <math.h>
#include <stdlib.h>

#include "autograd/base.h"

// ---- scikit-image 0.19, float32 -----------------------------------------------------------------
// What skimage computes for float32 input (see docs/metrics.md): ux = uniform_filter(x) etc., where
// scipy's uniform_filter1d sums each window in double, divides by 7 and stores float32, first along
// rows (axis 0), then along columns (axis 1) of that float32 result. Everything after the filters
// is float32 numpy arithmetic, reproduced operation by operation below (C evaluates float
// expressions in float on x86-64: FLT_EVAL_METHOD == 0).
#define SK_WIN 7
#define SK_PAD 3

double ssim_plane_skimage_f32(const float *x, const float *y, int h, int w) {
    const int out_h = h - 2 * SK_PAD;
    const size_t n = (size_t)h * w;
    float *xx = dod_malloc(n * sizeof(float) * 3, "ssim x*x, y*y, x*y planes");
    float *yy = xx + n, *xy = yy + n;
    // numpy: im1 * im1 etc., each product rounded to float32
    for (size_t i = 0; i < n; i++) {
        xx[i] = x[i] * x[i];
        yy[i] = y[i] * y[i];
        xy[i] = x[i] * y[i];
    }
    double *row_sum = dod_malloc((size_t)out_h * sizeof(double), "ssim row sums");
    // skimage casts its Python-float constants to float32 when they meet float32 arrays
    const float cov_norm = (float)(49.0 / 48.0);
    const float c1 = (float)((0.01 * 1.0) * (0.01 * 1.0));
    const float c2 = (float)((0.03 * 1.0) * (0.03 * 1.0));
    const float *planes[5] = {x, y, xx, yy, xy};

#pragma omp parallel
    {
        const int out_w = w - 2 * SK_PAD;
        double *acc = dod_malloc((size_t)w * 5 * sizeof(double), "ssim row accumulators");
        float *vert = dod_malloc((size_t)w * 5 * sizeof(float), "ssim vertical pass");
        float *u = dod_malloc((size_t)out_w * 5 * sizeof(float), "ssim window means");
#pragma omp for schedule(static)
        for (int r = 0; r < out_h; r++) {
            // Vertical pass for centre row r + 3 (window rows r .. r + 6), every column; then the
            // horizontal pass over the valid columns. Loops run along the row so they vectorise;
            // each window is still summed in order t = 0 .. 6.
            for (int k = 0; k < 5; k++) {
                double *a = acc + (size_t)k * w;
                for (int j = 0; j < w; j++) a[j] = 0.0;
                for (int t = 0; t < SK_WIN; t++) {
                    const float *src = planes[k] + (size_t)(r + t) * w;
                    for (int j = 0; j < w; j++) a[j] += (double)src[j];
                }
                float *v = vert + (size_t)k * w;
                for (int j = 0; j < w; j++) v[j] = (float)(a[j] / SK_WIN);
                for (int j = 0; j < out_w; j++) a[j] = 0.0;
                for (int t = 0; t < SK_WIN; t++)
                    for (int j = 0; j < out_w; j++) a[j] += (double)v[j + t];
                float *uk = u + (size_t)k * out_w;
                for (int j = 0; j < out_w; j++) uk[j] = (float)(a[j] / SK_WIN);
            }
            const float *mx = u, *my = u + out_w, *mxx = u + 2 * out_w, *myy = u + 3 * out_w, *mxy = u + 4 * out_w;
            float *s_map = vert;  // reuse: the vertical sums are done with
            for (int j = 0; j < out_w; j++) {
                const float ux = mx[j], uy = my[j], uxx = mxx[j], uyy = myy[j], uxy = mxy[j];
                const float vx = cov_norm * (uxx - ux * ux);
                const float vy = cov_norm * (uyy - uy * uy);
                const float vxy = cov_norm * (uxy - ux * uy);
                const float a1 = 2.0f * ux * uy + c1;
                const float a2 = 2.0f * vxy + c2;
                const float b1 = ux * ux + uy * uy + c1;
                const float b2 = vx + vy + c2;
                const float d = b1 * b2;
                s_map[j] = (a1 * a2) / d;
            }
            double sum = 0.0;
            for (int j = 0; j < out_w; j++) sum += (double)s_map[j];
            row_sum[r] = sum;
        }
        free(acc);
        free(vert);
        free(u);
    }
    double total = 0.0;
    for (int r = 0; r < out_h; r++) total += row_sum[r];
    free(row_sum);
    free(xx);
    return total / ((double)out_h * (double)(w - 2 * SK_PAD));
}

// ---- BasicSR, float64 ---------------------------------------------------------------------------
#define BS_WIN 11

void ssim_gaussian_kernel(int n, double sigma, double *out) {
    const double scale2x = -0.5 / (sigma * sigma);
    double sum = 0.0;
    for (int i = 0; i < n; i++) {
        const double t = i - (n - 1) * 0.5;
        out[i] = exp(scale2x * t * t);
        sum += out[i];
    }
    const double inv = 1.0 / sum;
    for (int i = 0; i < n; i++) out[i] *= inv;
}

double ssim_plane_basicsr_f64(const double *x, const double *y, int h, int w) {
    const int out_h = h - (BS_WIN - 1), out_w = w - (BS_WIN - 1);
    const size_t n = (size_t)h * w;
    double g[BS_WIN];
    ssim_gaussian_kernel(BS_WIN, 1.5, g);
    double *xx = dod_malloc(n * sizeof(double) * 3, "ssim x^2, y^2, x*y planes");
    double *yy = xx + n, *xy = yy + n;
    for (size_t i = 0; i < n; i++) {
        xx[i] = x[i] * x[i];
        yy[i] = y[i] * y[i];
        xy[i] = x[i] * y[i];
    }
    double *row_sum = dod_malloc((size_t)out_h * sizeof(double), "ssim row sums");
    const double c1 = (0.01 * 255) * (0.01 * 255), c2 = (0.03 * 255) * (0.03 * 255);
    const double *planes[5] = {x, y, xx, yy, xy};

#pragma omp parallel
    {
        double *vert = dod_malloc((size_t)w * 5 * sizeof(double), "ssim vertical pass");
        double *m = dod_malloc((size_t)out_w * 5 * sizeof(double), "ssim window means");
#pragma omp for schedule(static)
        for (int r = 0; r < out_h; r++) {
            // The 2-D window is the outer product g g^T, so filtering is a vertical then a
            // horizontal 11-tap pass (cv2.filter2D computes the same sum, via a DFT at this size).
            for (int k = 0; k < 5; k++) {
                double *v = vert + (size_t)k * w;
                for (int j = 0; j < w; j++) v[j] = 0.0;
                for (int t = 0; t < BS_WIN; t++) {
                    const double *src = planes[k] + (size_t)(r + t) * w;
                    const double gt = g[t];
                    for (int j = 0; j < w; j++) v[j] += gt * src[j];
                }
                double *mk = m + (size_t)k * out_w;
                for (int j = 0; j < out_w; j++) mk[j] = 0.0;
                for (int t = 0; t < BS_WIN; t++) {
                    const double gt = g[t];
                    for (int j = 0; j < out_w; j++) mk[j] += gt * v[j + t];
                }
            }
            double *s_map = vert;  // reuse: the vertical sums are done with
            for (int j = 0; j < out_w; j++) {
                const double mu1 = m[j], mu2 = m[out_w + j];
                const double mu1_sq = mu1 * mu1, mu2_sq = mu2 * mu2, mu1_mu2 = mu1 * mu2;
                const double sigma1_sq = m[2 * out_w + j] - mu1_sq;
                const double sigma2_sq = m[3 * out_w + j] - mu2_sq;
                const double sigma12 = m[4 * out_w + j] - mu1_mu2;
                s_map[j] = ((2 * mu1_mu2 + c1) * (2 * sigma12 + c2)) /
                           ((mu1_sq + mu2_sq + c1) * (sigma1_sq + sigma2_sq + c2));
            }
            double sum = 0.0;
            for (int j = 0; j < out_w; j++) sum += s_map[j];
            row_sum[r] = sum;
        }
        free(vert);
        free(m);
    }
    double total = 0.0;
    for (int r = 0; r < out_h; r++) total += row_sum[r];
    free(row_sum);
    free(xx);
    return total / ((double)out_h * (double)out_w);
}
