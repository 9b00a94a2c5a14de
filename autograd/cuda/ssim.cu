// op_ssim on CUDA: autograd/op_loss.c's algorithm (valid 11 x 11 Gaussian window, separable, statistics
// in double) as element-parallel kernels over all planes at once. Forward: filter the five signals
// x, y, x^2, y^2, xy along W then H, form the SSIM map, reduce its mean. Backward: the per-pixel
// derivatives with respect to the four statistics (mu1, mu2, e11 = e22, e12), the adjoint filters
// along H then W, and the chain rule into x and y.
#include "autograd/cuda/device.h"

#define SSIM_WIN 11

typedef struct {
    double w[SSIM_WIN];
} SsimWin;

// t[p][q][i][j] (H x Wo) = sum_a w[a] signal_q(p, i, j + a) (=).
__global__ void ssim_filter_w_kernel(const float *x, const float *y, int64_t planes, int64_t H, int64_t W, SsimWin win,
                                     double *t) {
    int64_t Wo = W - SSIM_WIN + 1, n = planes * 5 * H * Wo;
    DOD_GRID_STRIDE(idx, n) {
        int64_t j = idx % Wo, i = (idx / Wo) % H, q = (idx / (Wo * H)) % 5, p = idx / (Wo * H * 5);
        const float *xr = x + (p * H + i) * W + j, *yr = y + (p * H + i) * W + j;
        double s = 0;
        for (int a = 0; a < SSIM_WIN; a++) s += win.w[a] * ssim_signal((int)q, xr[a], yr[a]);  // kernel_math.h
        t[idx] = s;
    }
}

// f[p][q][i][j] (Ho x Wo) = sum_a w[a] t[p][q][i + a][j] (=).
__global__ void ssim_filter_h_kernel(const double *t, int64_t planes, int64_t H, int64_t Wo, SsimWin win, double *f) {
    int64_t Ho = H - SSIM_WIN + 1, n = planes * 5 * Ho * Wo;
    DOD_GRID_STRIDE(idx, n) {
        int64_t j = idx % Wo, i = (idx / Wo) % Ho, pq = idx / (Wo * Ho);
        const double *col = t + (pq * H + i) * Wo + j;
        double s = 0;
        for (int a = 0; a < SSIM_WIN; a++) s += win.w[a] * col[a * Wo];
        f[idx] = s;
    }
}

// The statistics of map pixel k of plane p from f (slots mu1, mu2, e11, e22, e12): mu1, mu2 and SSIM's
// factors (autograd/kernel_math.h's ssim_factors) written (=).
__device__ __forceinline__ void ssim_terms(const double *f, int64_t p, int64_t k, int64_t m, double C1, double C2,
                                           double *u1, double *u2, double *a1, double *b1, double *a2, double *b2) {
    const double *s = f + p * 5 * m + k;
    *u1 = s[0];
    *u2 = s[m];
    ssim_factors(*u1, *u2, s[2 * m], s[3 * m], s[4 * m], C1, C2, a1, b1, a2, b2);
}

// map[p][k] = SSIM at map pixel k of plane p (=, f32: the mean is reduced in double by cuda_reduce_sum).
__global__ void ssim_map_kernel(const double *f, int64_t planes, int64_t m, double C1, double C2, float *map) {
    DOD_GRID_STRIDE(idx, planes * m) {
        double u1, u2, a1, b1, a2, b2;
        ssim_terms(f, idx / m, idx % m, m, C1, C2, &u1, &u2, &a1, &b1, &a2, &b2);
        map[idx] = (float)(a1 * a2 / (b1 * b2));
    }
}

// d[p][s][k] = g[0] / (planes m) * d SSIM(k) / d statistic s, s = mu1, mu2, e11 (= e22), e12 (=).
__global__ void ssim_dstats_kernel(const double *f, int64_t planes, int64_t m, double C1, double C2, const float *g,
                                   double *d) {
    double gs = (double)g[0] / (double)(planes * m);
    DOD_GRID_STRIDE(idx, planes * m) {
        int64_t p = idx / m, k = idx % m;
        double u1, u2, a1, b1, a2, b2;
        ssim_terms(f, p, k, m, C1, C2, &u1, &u2, &a1, &b1, &a2, &b2);
        double ds[4];
        ssim_dstats(u1, u2, a1, b1, a2, b2, gs, ds);
        double *o = d + p * 4 * m + k;
        for (int s = 0; s < 4; s++) o[s * m] = ds[s];
    }
}

// Adjoint of the H filter: a[p][s][i][j] (H x Wo) = sum_{a: 0 <= i - a < Ho} w[a] d[p][s][i - a][j] (=).
__global__ void ssim_adj_h_kernel(const double *d, int64_t planes, int64_t H, int64_t Wo, SsimWin win, double *out) {
    int64_t Ho = H - SSIM_WIN + 1, n = planes * 4 * H * Wo;
    DOD_GRID_STRIDE(idx, n) {
        int64_t j = idx % Wo, i = (idx / Wo) % H, ps = idx / (Wo * H);
        double s = 0;
        for (int a = 0; a < SSIM_WIN; a++) {
            int64_t r = i - a;
            if (r >= 0 && r < Ho) s += win.w[a] * d[(ps * Ho + r) * Wo + j];
        }
        out[idx] = s;
    }
}

// Adjoint of the W filter, then the chain rule through the signals (+= into gx, gy; NULL skips one).
__global__ void ssim_adj_w_kernel(const double *a, const float *x, const float *y, int64_t planes, int64_t H,
                                  int64_t W, SsimWin win, float *gx, float *gy) {
    int64_t Wo = W - SSIM_WIN + 1, n = planes * H * W;
    DOD_GRID_STRIDE(idx, n) {
        int64_t j = idx % W, i = (idx / W) % H, p = idx / (W * H);
        double b[4] = {0, 0, 0, 0};
        for (int t = 0; t < SSIM_WIN; t++) {
            int64_t c = j - t;
            if (c < 0 || c >= Wo) continue;
            for (int s = 0; s < 4; s++) b[s] += win.w[t] * a[((p * 4 + s) * H + i) * Wo + c];
        }
        double xv = x[idx], yv = y[idx];
        if (gx) gx[idx] += (float)(b[0] + 2 * xv * b[2] + yv * b[3]);
        if (gy) gy[idx] += (float)(b[1] + 2 * yv * b[2] + xv * b[3]);
    }
}

static SsimWin ssim_win(const double *win) {
    SsimWin w;
    for (int a = 0; a < SSIM_WIN; a++) w.w[a] = win[a];
    return w;
}

// The five filtered statistics of every plane (arena scratch, [planes][5][Ho][Wo] doubles).
static double *ssim_stats(const float *x, const float *y, int64_t planes, int64_t H, int64_t W, SsimWin w) {
    int64_t Ho = H - SSIM_WIN + 1, Wo = W - SSIM_WIN + 1;
    double *t = (double *)cuda_arena_alloc(sizeof(double) * (size_t)(planes * 5 * H * Wo), "op_ssim W-filtered");
    double *f = (double *)cuda_arena_alloc(sizeof(double) * (size_t)(planes * 5 * Ho * Wo), "op_ssim statistics");
    ssim_filter_w_kernel<<<dod_grid(planes * 5 * H * Wo, 256), 256>>>(x, y, planes, H, W, w, t);
    CUDA_CHECK_LAUNCH("ssim_filter_w_kernel");
    ssim_filter_h_kernel<<<dod_grid(planes * 5 * Ho * Wo, 256), 256>>>(t, planes, H, Wo, w, f);
    CUDA_CHECK_LAUNCH("ssim_filter_h_kernel");
    return f;
}

void cuda_ssim_forward(const float *x, const float *y, int64_t planes, int64_t H, int64_t W, const double *win,
                       double C1, double C2, float *out) {
    SsimWin w = ssim_win(win);
    int64_t m = (H - SSIM_WIN + 1) * (W - SSIM_WIN + 1);
    size_t mark = cuda_arena_mark();
    double *f = ssim_stats(x, y, planes, H, W, w);
    float *map = (float *)cuda_arena_alloc(sizeof(float) * (size_t)(planes * m), "op_ssim map");
    ssim_map_kernel<<<dod_grid(planes * m, 256), 256>>>(f, planes, m, C1, C2, map);
    CUDA_CHECK_LAUNCH("ssim_map_kernel");
    cuda_reduce_sum(REDUCE_SUM, map, NULL, planes * m, (float)(1.0 / (double)(planes * m)), out);
    cuda_arena_release(mark);  // stream order keeps the scratch alive until the kernels ran
}

void cuda_ssim_backward(const float *x, const float *y, int64_t planes, int64_t H, int64_t W, const double *win,
                        double C1, double C2, const float *g, float *gx, float *gy) {
    SsimWin w = ssim_win(win);
    int64_t Ho = H - SSIM_WIN + 1, Wo = W - SSIM_WIN + 1, m = Ho * Wo;
    size_t mark = cuda_arena_mark();
    double *f = ssim_stats(x, y, planes, H, W, w);
    double *d = (double *)cuda_arena_alloc(sizeof(double) * (size_t)(planes * 4 * m), "op_ssim statistic grads");
    double *a = (double *)cuda_arena_alloc(sizeof(double) * (size_t)(planes * 4 * H * Wo), "op_ssim adjoint");
    ssim_dstats_kernel<<<dod_grid(planes * m, 256), 256>>>(f, planes, m, C1, C2, g, d);
    CUDA_CHECK_LAUNCH("ssim_dstats_kernel");
    ssim_adj_h_kernel<<<dod_grid(planes * 4 * H * Wo, 256), 256>>>(d, planes, H, Wo, w, a);
    CUDA_CHECK_LAUNCH("ssim_adj_h_kernel");
    ssim_adj_w_kernel<<<dod_grid(planes * H * W, 256), 256>>>(a, x, y, planes, H, W, w, gx, gy);
    CUDA_CHECK_LAUNCH("ssim_adj_w_kernel");
    cuda_arena_release(mark);
}
