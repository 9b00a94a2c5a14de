// Losses to a scalar [1]: op_mse_loss, op_l1_loss (torch 'mean' reduction) and op_ssim
// (pytorch_msssim.ssim: per-channel separable 11-tap Gaussian, sigma 1.5, 'valid' region,
// population statistics E[x^2] - E[x]^2, mean of the SSIM map over everything).
//
// SSIM backward, per pixel of the map with mu1 = G*x, mu2 = G*y, e11 = G*x^2, e22 = G*y^2,
// e12 = G*xy (G: the valid Gaussian filter):
//   A1 = 2 mu1 mu2 + C1, B1 = mu1^2 + mu2^2 + C1, A2 = 2 (e12 - mu1 mu2) + C2,
//   B2 = (e11 - mu1^2) + (e22 - mu2^2) + C2, S = A1 A2 / (B1 B2)
//   dS/dmu1 = 2 mu2 (A2 - A1) / (B1 B2) + 2 mu1 S (1/B2 - 1/B1)   (mu2: swap mu1 <-> mu2)
//   dS/de11 = dS/de22 = -S / B2,  dS/de12 = 2 A1 / (B1 B2)
// and back through the filters with G's adjoint G^T:
//   dx = G^T dmu1 + 2 x G^T de11 + y G^T de12,  dy = G^T dmu2 + 2 y G^T de22 + x G^T de12.
#include "autograd/cuda/cuda_ops.h"
#include "autograd/ops_cpu_util.h"

#include <math.h>
#include <string.h>

static void check_same(const char *op, const Tensor *a, const Tensor *b) {
    if (!tensor_same_shape(a, b)) dod_fatal(op, "pred %s and target %s differ in shape", shape_str(a), shape_str(b));
}

// ---- MSE and L1 -------------------------------------------------------------------------------------
typedef struct {
    const float *p, *t;
    bool l1;
} PointLossCtx;

// d/dp = g * 2 (p - t) / n (MSE) or g * sign(p - t) / n (L1, sign(0) = 0); d/dt = -d/dp. (+=)
static void point_loss_backward(AgNode *node) {
    const PointLossCtx *c = node->ctx;
    Tensor *pt = node->inputs[0], *tt = node->inputs[1];
    int64_t n = pt->numel;
    float *gp = pt->requires_grad ? tensor_grad(pt) : NULL, *gt = tt->requires_grad ? tensor_grad(tt) : NULL;
    if (pt->device == DEV_CUDA) {
        cuda_point_loss_backward(c->l1, c->p, c->t, node->out->grad, gp, gt, n);
        return;
    }
    float k = node->out->grad[0] / (float)n;
#pragma omp parallel for if (n > OPS_PARALLEL_MIN)
    for (int64_t i = 0; i < n; i++) {
        float v = point_loss_grad(c->l1, c->p[i] - c->t[i], k);
        if (gp) gp[i] += v;
        if (gt) gt[i] -= v;
    }
}

static Tensor *point_loss(const char *op, Tensor *pred, Tensor *target, bool l1) {
    Tensor *in[2] = {pred, target};
    Device dev = ops_device(op, 2, in);
    check_same(op, pred, target);
    if (pred->numel == 0) dod_fatal(op, "empty inputs %s", shape_str(pred));
    PointLossCtx c = {tensor_f32(pred), tensor_f32(target), l1};
    int64_t one = 1;
    Tensor *out = tensor_new_on(dev, 1, &one, DT_F32);
    ReduceKind kind = l1 ? REDUCE_ABS_DIFF : REDUCE_SQUARED_DIFF;
    if (dev == DEV_CUDA) cuda_reduce_sum(kind, c.p, c.t, pred->numel, 1.0f / (float)pred->numel, tensor_data_f32(out));
    else tensor_data_f32(out)[0] = (float)(ops_reduce_cpu(kind, c.p, c.t, pred->numel) / (double)pred->numel);
    if (ag_needs_grad(2, in)) *(PointLossCtx *)ag_record(op, point_loss_backward, out, 2, in, sizeof c) = c;
    return out;
}

Tensor *op_mse_loss(Tensor *pred, Tensor *target) { return point_loss("op_mse_loss", pred, target, false); }
Tensor *op_l1_loss(Tensor *pred, Tensor *target) { return point_loss("op_l1_loss", pred, target, true); }

// ---- SSIM ---------------------------------------------------------------------------------------------
#define SSIM_WIN 11
#define SSIM_SIGMA 1.5f

typedef struct {
    int64_t planes, H, W;
    const float *x, *y;
    double C1, C2;
    double win[SSIM_WIN];
} SsimCtx;

// The 1-d window exp(-k^2 / (2 sigma^2)), k = -5..5, normalised to sum 1 -- pytorch_msssim's
// _fspecial_gauss_1d, but in double: its f32 window sums to 1 - 3e-8, and E[x^2] - E[x]^2 turns
// that into a bias of ~1e-5 in SSIM on flat image regions (where variances are ~C2).
static void ssim_window(double *win) {
    double sum = 0;
    for (int a = 0; a < SSIM_WIN; a++) {
        double c = a - SSIM_WIN / 2;
        win[a] = exp(-(c * c) / (2.0 * SSIM_SIGMA * SSIM_SIGMA));
        sum += win[a];
    }
    for (int a = 0; a < SSIM_WIN; a++) win[a] /= sum;
}

// Valid filtering along W: out[i][j] = sum_a w[a] in[i][j + a], out is H x (W - 10). Writes (=).
static void filt_w(const double *w, const double *in, int64_t H, int64_t W, double *out) {
    int64_t Wo = W - SSIM_WIN + 1;
    for (int64_t i = 0; i < H; i++)
        for (int64_t j = 0; j < Wo; j++) {
            double s = 0;
            for (int a = 0; a < SSIM_WIN; a++) s += w[a] * in[i * W + j + a];
            out[i * Wo + j] = s;
        }
}

// Valid filtering along H: out[i][j] = sum_a w[a] in[i + a][j], out is (H - 10) x W. Writes (=).
static void filt_h(const double *w, const double *in, int64_t H, int64_t W, double *out) {
    int64_t Ho = H - SSIM_WIN + 1;
    for (int64_t i = 0; i < Ho; i++) {
        double *o = out + i * W;
        for (int64_t j = 0; j < W; j++) o[j] = 0;
        for (int a = 0; a < SSIM_WIN; a++) {
            const double *r = in + (i + a) * W;
            for (int64_t j = 0; j < W; j++) o[j] += w[a] * r[j];
        }
    }
}

// Adjoint of filt_w: in is H x Wo, out is H x W, out[i][j + a] += w[a] in[i][j]. Writes (=).
static void filt_w_adj(const double *w, const double *in, int64_t H, int64_t W, double *out) {
    int64_t Wo = W - SSIM_WIN + 1;
    memset(out, 0, sizeof(double) * H * W);
    for (int64_t i = 0; i < H; i++)
        for (int64_t j = 0; j < Wo; j++) {
            double v = in[i * Wo + j];
            for (int a = 0; a < SSIM_WIN; a++) out[i * W + j + a] += w[a] * v;
        }
}

// Adjoint of filt_h: in is Ho x W, out is H x W, out[i + a][j] += w[a] in[i][j]. Writes (=).
static void filt_h_adj(const double *w, const double *in, int64_t H, int64_t W, double *out) {
    int64_t Ho = H - SSIM_WIN + 1;
    memset(out, 0, sizeof(double) * H * W);
    for (int64_t i = 0; i < Ho; i++)
        for (int a = 0; a < SSIM_WIN; a++) {
            double *o = out + (i + a) * W;
            const double *r = in + i * W;
            for (int64_t j = 0; j < W; j++) o[j] += w[a] * r[j];
        }
}

// Per-thread scratch for one plane: a full-size signal, five W-filtered maps, five SSIM-region maps.
typedef struct {
    double *sig, *hmap, *map;
} SsimScratch;

static SsimScratch *ssim_scratch(const SsimCtx *c, int nt) {
    int64_t H = c->H, W = c->W, Ho = H - SSIM_WIN + 1, Wo = W - SSIM_WIN + 1;
    SsimScratch *s = arena_alloc(sizeof(SsimScratch) * nt, "op_ssim scratch");
    for (int t = 0; t < nt; t++) {
        s[t].sig = arena_alloc(sizeof(double) * H * W, "op_ssim scratch");
        s[t].hmap = arena_alloc(sizeof(double) * 5 * H * Wo, "op_ssim scratch");
        s[t].map = arena_alloc(sizeof(double) * 5 * Ho * Wo, "op_ssim scratch");
    }
    return s;
}

// Filters the five signals x, y, x^2, y^2, xy of plane p into s->map[0..4] (each Ho x Wo).
static void ssim_plane_stats(const SsimCtx *c, int64_t p, SsimScratch *s) {
    int64_t H = c->H, W = c->W, Ho = H - SSIM_WIN + 1, Wo = W - SSIM_WIN + 1, n = H * W;
    const float *x = c->x + p * n, *y = c->y + p * n;
    for (int q = 0; q < 5; q++) {
        for (int64_t i = 0; i < n; i++) {
            s->sig[i] = ssim_signal(q, x[i], y[i]);
        }
        filt_w(c->win, s->sig, H, W, s->hmap + q * H * Wo);
        filt_h(c->win, s->hmap + q * H * Wo, H, Wo, s->map + q * Ho * Wo);
    }
}

// Sum of the SSIM map of every plane; returns the mean over all planes and pixels.
static double ssim_cpu_forward(const SsimCtx *c) {
    int nt = ops_max_threads();
    SsimScratch *scr = ssim_scratch(c, nt);
    int64_t m = (c->H - SSIM_WIN + 1) * (c->W - SSIM_WIN + 1);
    double total = 0;
#pragma omp parallel for reduction(+ : total) schedule(dynamic, 1) if (c->planes > 1)
    for (int64_t p = 0; p < c->planes; p++) {
        SsimScratch *s = &scr[ops_thread_id()];
        ssim_plane_stats(c, p, s);
        const double *mu1 = s->map, *mu2 = mu1 + m, *e11 = mu2 + m, *e22 = e11 + m, *e12 = e22 + m;
        for (int64_t k = 0; k < m; k++) {
            double a1, b1, a2, b2;
            ssim_factors(mu1[k], mu2[k], e11[k], e22[k], e12[k], c->C1, c->C2, &a1, &b1, &a2, &b2);
            total += (a1 * a2) / (b1 * b2);
        }
    }
    return total / (double)(c->planes * m);
}

// Accumulates (+=) d(mean SSIM)/dx and /dy, scaled by the output gradient (CUDA: ssim.cu).
static void ssim_backward(AgNode *node) {
    const SsimCtx *c = node->ctx;
    Tensor *xt = node->inputs[0], *yt = node->inputs[1];
    float *gx = xt->requires_grad ? tensor_grad(xt) : NULL, *gy = yt->requires_grad ? tensor_grad(yt) : NULL;
    if (node->out->device == DEV_CUDA) {
        cuda_ssim_backward(c->x, c->y, c->planes, c->H, c->W, c->win, c->C1, c->C2, node->out->grad, gx, gy);
        return;
    }
    int64_t H = c->H, W = c->W, Ho = H - SSIM_WIN + 1, Wo = W - SSIM_WIN + 1, m = Ho * Wo, n = H * W;
    double gs = node->out->grad[0] / (double)(c->planes * m);
    int nt = ops_max_threads();
    SsimScratch *scr = ssim_scratch(c, nt);
#pragma omp parallel for schedule(dynamic, 1) if (c->planes > 1)
    for (int64_t p = 0; p < c->planes; p++) {
        SsimScratch *s = &scr[ops_thread_id()];
        ssim_plane_stats(c, p, s);
        // Overwrite the statistics in place with dL/d(statistic): slots 0 mu1, 1 mu2, 2 e11 (= e22), 3 e12.
        double *mu1 = s->map, *mu2 = mu1 + m, *e11 = mu2 + m, *e22 = e11 + m, *e12 = e22 + m;
        for (int64_t k = 0; k < m; k++) {
            double a1, b1, a2, b2, d[4];
            ssim_factors(mu1[k], mu2[k], e11[k], e22[k], e12[k], c->C1, c->C2, &a1, &b1, &a2, &b2);
            ssim_dstats(mu1[k], mu2[k], a1, b1, a2, b2, gs, d);
            mu1[k] = d[0];
            mu2[k] = d[1];
            e11[k] = d[2];
            e22[k] = d[3];  // slot 3 now holds d/de12
        }
        const float *x = c->x + p * n, *y = c->y + p * n;
        float *gxp = gx ? gx + p * n : NULL, *gyp = gy ? gy + p * n : NULL;
        for (int q = 0; q < 4; q++) {
            filt_h_adj(c->win, s->map + q * m, H, Wo, s->hmap);
            filt_w_adj(c->win, s->hmap, H, W, s->sig);
            const double *d = s->sig;  // G^T of slot q, H x W
            for (int64_t i = 0; i < n; i++) {
                double a = x[i], b = y[i];
                switch (q) {
                case 0: if (gxp) gxp[i] += (float)d[i]; break;
                case 1: if (gyp) gyp[i] += (float)d[i]; break;
                case 2:
                    if (gxp) gxp[i] += (float)(2 * a * d[i]);
                    if (gyp) gyp[i] += (float)(2 * b * d[i]);
                    break;
                case 3:
                    if (gxp) gxp[i] += (float)(b * d[i]);
                    if (gyp) gyp[i] += (float)(a * d[i]);
                    break;
                }
            }
        }
    }
}

Tensor *op_ssim(Tensor *x, Tensor *y, float data_range) {
    const char *op = "op_ssim";
    Tensor *in[2] = {x, y};
    Device dev = ops_device(op, 2, in);
    if (x->ndim != 4 || !tensor_same_shape(x, y))
        dod_fatal(op, "x %s and y %s must be the same [N, C, H, W] shape", shape_str(x), shape_str(y));
    if (x->shape[2] < SSIM_WIN || x->shape[3] < SSIM_WIN)
        dod_fatal(op, "images %s are smaller than the %d x %d Gaussian window", shape_str(x), SSIM_WIN, SSIM_WIN);
    if (!(data_range > 0)) dod_fatal(op, "data_range %g must be > 0 (images %s)", data_range, shape_str(x));
    if (x->shape[0] * x->shape[1] == 0) dod_fatal(op, "empty images %s", shape_str(x));
    SsimCtx c = {x->shape[0] * x->shape[1], x->shape[2], x->shape[3], tensor_f32(x), tensor_f32(y),
                 pow(0.01 * data_range, 2), pow(0.03 * data_range, 2), {0}};
    ssim_window(c.win);
    int64_t one = 1;
    Tensor *out = tensor_new_on(dev, 1, &one, DT_F32);
    if (dev == DEV_CUDA) cuda_ssim_forward(c.x, c.y, c.planes, c.H, c.W, c.win, c.C1, c.C2, tensor_data_f32(out));
    else tensor_data_f32(out)[0] = (float)ssim_cpu_forward(&c);
    if (ag_needs_grad(2, in)) *(SsimCtx *)ag_record(op, ssim_backward, out, 2, in, sizeof c) = c;
    return out;
}
