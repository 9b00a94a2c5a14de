// op_conv2d: torch.nn.Conv2d (zero padding, dilation 1, groups 1) as im2col + GEMM.
//
// With P = Ho*Wo output pixels and Kc = Cin*kh*kw, one image is
//     forward   Y [Cout, P]  = W [Cout, Kc] @ col [Kc, P]        col = im2col(x)
//     dX        dcol [Kc, P] = W^T @ dY,  dX += col2im(dcol)
//     dW        dW [Cout, Kc] += dY [Cout, P] @ col^T            (col recomputed, never saved)
// Small images are batched: `nb` images share one GEMM over [Kc, nb*P] columns, so 8x8 feature
// maps still give GEMMs wide enough for OpenBLAS to run near peak. A 1x1 stride-1 unpadded
// conv needs no im2col at all: x itself is col. im2col/col2im run as OpenMP loops between GEMMs
// (never around them), and all scratch lives in the arena between a mark and its release.
#include <string.h>

#include "autograd/cuda/cuda_ops.h"
#include "autograd/gemm.h"
#include "autograd/ops.h"

// Columns of one batched GEMM (nb * P) are capped here; beyond this OpenBLAS gains nothing and the
// col buffer only grows. Also caps the col buffer at COL_MAX_FLOATS (unless one image needs more).
#define CONV_TARGET_COLS 4096
#define COL_MAX_FLOATS ((int64_t)16 << 20)

typedef struct {
    int64_t N, Cin, H, W, Cout, kh, kw, Ho, Wo, P, Kc;
    int stride, pad;
} ConvGeom;

typedef struct {
    ConvGeom g;
    const float *x, *w;  // f32 views (widened copies for half storage)
} ConvCtx;

// The cuDNN geometry vector: N, Cin, H, W, Cout, kh, kw, stride, pad.
static void conv_geom_vec(const ConvGeom *g, int64_t *v) {
    int64_t t[9] = {g->N, g->Cin, g->H, g->W, g->Cout, g->kh, g->kw, g->stride, g->pad};
    memcpy(v, t, sizeof t);
}

static bool conv_is_pointwise(const ConvGeom *g) { return g->kh == 1 && g->kw == 1 && g->stride == 1 && g->pad == 0; }

// Images per batched GEMM.
static int64_t conv_images_per_gemm(const ConvGeom *g) {
    int64_t nb = CONV_TARGET_COLS / g->P;
    int64_t cap = COL_MAX_FLOATS / (g->Kc * g->P);
    if (cap < nb) nb = cap;
    if (nb > g->N) nb = g->N;
    return nb < 1 ? 1 : nb;
}

// Writes (=) col rows [Kc] x columns [P] at col + column offset, row stride ldc, from one image
// x [Cin, H, W]. Rows are (c, ki, kj); out-of-image taps are zero.
static void im2col(const ConvGeom *g, const float *x, float *col, int64_t ldc) {
#pragma omp parallel for schedule(static) if (g->Kc * g->P > 32768)
    for (int64_t r = 0; r < g->Kc; r++) {
        int64_t c = r / (g->kh * g->kw), ki = (r / g->kw) % g->kh, kj = r % g->kw;
        const float *xc = x + c * g->H * g->W;
        float *dst = col + r * ldc;
        for (int64_t oh = 0; oh < g->Ho; oh++) {
            int64_t ih = oh * g->stride - g->pad + ki;
            float *d = dst + oh * g->Wo;
            if (ih < 0 || ih >= g->H) {
                memset(d, 0, (size_t)g->Wo * sizeof(float));
                continue;
            }
            const float *src = xc + ih * g->W;
            if (g->stride == 1) {  // valid ow range is contiguous: zeros, one copy, zeros
                int64_t lo = g->pad - kj, hi = g->W + g->pad - kj;  // ow in [lo, hi) reads inside the row
                if (lo < 0) lo = 0;
                if (hi > g->Wo) hi = g->Wo;
                if (hi < lo) hi = lo;
                for (int64_t ow = 0; ow < lo; ow++) d[ow] = 0.0f;
                memcpy(d + lo, src + lo - g->pad + kj, (size_t)(hi - lo) * sizeof(float));
                for (int64_t ow = hi; ow < g->Wo; ow++) d[ow] = 0.0f;
            } else {
                for (int64_t ow = 0; ow < g->Wo; ow++) {
                    int64_t iw = ow * g->stride - g->pad + kj;
                    d[ow] = (iw >= 0 && iw < g->W) ? src[iw] : 0.0f;
                }
            }
        }
    }
}

// Accumulates (+=) into one image's dx [Cin, H, W] the columns dcol [Kc] x [P] (row stride ldc):
// the adjoint of im2col. Parallel over channels, so no two threads touch the same dx plane.
static void col2im_add(const ConvGeom *g, const float *dcol, int64_t ldc, float *dx) {
#pragma omp parallel for schedule(static) if (g->Kc * g->P > 32768)
    for (int64_t c = 0; c < g->Cin; c++) {
        float *dxc = dx + c * g->H * g->W;
        for (int64_t ki = 0; ki < g->kh; ki++)
            for (int64_t kj = 0; kj < g->kw; kj++) {
                const float *src = dcol + ((c * g->kh + ki) * g->kw + kj) * ldc;
                for (int64_t oh = 0; oh < g->Ho; oh++) {
                    int64_t ih = oh * g->stride - g->pad + ki;
                    if (ih < 0 || ih >= g->H) continue;
                    float *drow = dxc + ih * g->W;
                    const float *s = src + oh * g->Wo;
                    for (int64_t ow = 0; ow < g->Wo; ow++) {
                        int64_t iw = ow * g->stride - g->pad + kj;
                        if (iw >= 0 && iw < g->W) drow[iw] += s[ow];
                    }
                }
            }
    }
}

// Writes (=) y [N, Cout, P] = conv(x, w) + bias.
static void op_conv2d_cpu_forward(const ConvGeom *g, const float *x, const float *w, const float *bias, float *y) {
    int64_t P = g->P, in_img = g->Cin * g->H * g->W, out_img = g->Cout * P;
    bool pointwise = conv_is_pointwise(g);
    int64_t nb_max = pointwise ? 1 : conv_images_per_gemm(g);
    if (nb_max == 1 && bias) {  // per-image GEMMs write into y directly, on top of the bias (beta = 1)
#pragma omp parallel for if (g->N * out_img > 65536)
        for (int64_t nc = 0; nc < g->N * g->Cout; nc++)
            for (int64_t p = 0; p < P; p++) y[nc * P + p] = bias[nc % g->Cout];
    }
    float beta = bias ? 1.0f : 0.0f;
    if (pointwise) {
        for (int64_t n = 0; n < g->N; n++)
            gemm_f32(false, false, g->Cout, P, g->Cin, 1.0f, w, g->Cin, x + n * in_img, P, beta, y + n * out_img, P);
        return;
    }
    size_t mark = arena_mark();
    float *col = arena_alloc((size_t)(g->Kc * nb_max * P) * sizeof(float), "conv2d im2col");
    float *ycat = nb_max > 1 ? arena_alloc((size_t)(g->Cout * nb_max * P) * sizeof(float), "conv2d output") : NULL;
    for (int64_t n0 = 0; n0 < g->N; n0 += nb_max) {
        int64_t nb = g->N - n0 < nb_max ? g->N - n0 : nb_max, cols = nb * P;
        for (int64_t i = 0; i < nb; i++) im2col(g, x + (n0 + i) * in_img, col + i * P, cols);
        if (nb_max == 1) {
            gemm_f32(false, false, g->Cout, P, g->Kc, 1.0f, w, g->Kc, col, P, beta, y + n0 * out_img, P);
            continue;
        }
        // batched: ycat [Cout, nb*P], then scattered to y [nb, Cout, P] with the bias added
        gemm_f32(false, false, g->Cout, cols, g->Kc, 1.0f, w, g->Kc, col, cols, 0.0f, ycat, cols);
#pragma omp parallel for collapse(2) if (nb * out_img > 65536)
        for (int64_t i = 0; i < nb; i++)
            for (int64_t co = 0; co < g->Cout; co++) {
                float *dst = y + (n0 + i) * out_img + co * P;
                const float *src = ycat + co * cols + i * P;
                float b = bias ? bias[co] : 0.0f;
                for (int64_t p = 0; p < P; p++) dst[p] = src[p] + b;
            }
    }
    arena_release(mark);
}

// Accumulates (+=) dx [N, Cin, H, W], dw [Cout, Kc], db [Cout] from dy [N, Cout, P]; NULL skips one.
static void op_conv2d_cpu_backward(const ConvGeom *g, const float *x, const float *w, const float *dy, float *dx,
                                float *dw, float *db) {
    int64_t P = g->P, in_img = g->Cin * g->H * g->W, out_img = g->Cout * P;
    if (db) {
#pragma omp parallel for if (g->N * out_img > 65536)
        for (int64_t co = 0; co < g->Cout; co++) {
            double s = 0;
            for (int64_t n = 0; n < g->N; n++)
                for (int64_t p = 0; p < P; p++) s += dy[n * out_img + co * P + p];
            db[co] += (float)s;
        }
    }
    if (!dx && !dw) return;
    if (conv_is_pointwise(g)) {
        for (int64_t n = 0; n < g->N; n++) {
            const float *dyn = dy + n * out_img, *xn = x + n * in_img;
            if (dx) gemm_f32(true, false, g->Cin, P, g->Cout, 1.0f, w, g->Cin, dyn, P, 1.0f, dx + n * in_img, P);
            if (dw) gemm_f32(false, true, g->Cout, g->Cin, P, 1.0f, dyn, P, xn, P, 1.0f, dw, g->Cin);
        }
        return;
    }
    size_t mark = arena_mark();
    int64_t nb_max = conv_images_per_gemm(g);
    float *col = arena_alloc((size_t)(g->Kc * nb_max * P) * sizeof(float), "conv2d im2col");
    float *dycat = nb_max > 1 ? arena_alloc((size_t)(g->Cout * nb_max * P) * sizeof(float), "conv2d dY") : NULL;
    for (int64_t n0 = 0; n0 < g->N; n0 += nb_max) {
        int64_t nb = g->N - n0 < nb_max ? g->N - n0 : nb_max, cols = nb * P;
        const float *gy = dy + n0 * out_img;  // [Cout, cols] view of dY for this chunk
        if (nb > 1) {
#pragma omp parallel for collapse(2) if (nb * out_img > 65536)
            for (int64_t i = 0; i < nb; i++)
                for (int64_t co = 0; co < g->Cout; co++)
                    memcpy(dycat + co * cols + i * P, dy + (n0 + i) * out_img + co * P, (size_t)P * sizeof(float));
            gy = dycat;
        }
        if (dw) {
            for (int64_t i = 0; i < nb; i++) im2col(g, x + (n0 + i) * in_img, col + i * P, cols);
            gemm_f32(false, true, g->Cout, g->Kc, cols, 1.0f, gy, cols, col, cols, 1.0f, dw, g->Kc);
        }
        if (dx) {  // col is free again: reuse it for dcol
            gemm_f32(true, false, g->Kc, cols, g->Cout, 1.0f, w, g->Kc, gy, cols, 0.0f, col, cols);
            for (int64_t i = 0; i < nb; i++) col2im_add(g, col + i * P, cols, dx + (n0 + i) * in_img);
        }
    }
    arena_release(mark);
}

static void conv2d_backward(AgNode *node) {
    ConvCtx *c = node->ctx;
    Tensor *x = node->inputs[0], *w = node->inputs[1], *b = node->n_inputs > 2 ? node->inputs[2] : NULL;
    // Gradient buffers first: arena ones must be allocated before the scratch mark.
    float *dx = x->requires_grad ? tensor_grad(x) : NULL;
    float *dw = w->requires_grad ? tensor_grad(w) : NULL;
    float *db = b && b->requires_grad ? tensor_grad(b) : NULL;
    if (node->out->device == DEV_CUDA) {
        int64_t gv[9];
        conv_geom_vec(&c->g, gv);
        cuda_conv2d_backward(gv, c->x, c->w, node->out->grad, dx, dw, db);
    } else {
        op_conv2d_cpu_backward(&c->g, c->x, c->w, node->out->grad, dx, dw, db);
    }
}

Tensor *op_conv2d(Tensor *x, Tensor *w, Tensor *bias, int stride, int padding) {
    Tensor *in[3] = {x, w, bias};
    Device dev = ops_device("op_conv2d", 3, in);
    DOD_CHECK(x->ndim == 4 && w->ndim == 4 && x->shape[1] == w->shape[1], "op_conv2d",
              "x %s and weight %s: need x [N, Cin, H, W] and weight [Cout, Cin, kh, kw]", shape_str(x), shape_str(w));
    DOD_CHECK(!bias || (bias->ndim == 1 && bias->shape[0] == w->shape[0]), "op_conv2d",
              "bias %s does not match weight %s (need [Cout])", shape_str(bias), shape_str(w));
    DOD_CHECK(stride >= 1 && padding >= 0, "op_conv2d", "x %s, weight %s: stride %d must be >= 1, padding %d >= 0",
              shape_str(x), shape_str(w), stride, padding);
    ConvGeom g = {.N = x->shape[0], .Cin = x->shape[1], .H = x->shape[2], .W = x->shape[3], .Cout = w->shape[0],
                  .kh = w->shape[2], .kw = w->shape[3], .stride = stride, .pad = padding};
    DOD_CHECK(g.H + 2 * padding >= g.kh && g.W + 2 * padding >= g.kw, "op_conv2d",
              "x %s padded by %d is smaller than the kernel of weight %s", shape_str(x), padding, shape_str(w));
    g.Ho = (g.H + 2 * padding - g.kh) / stride + 1;
    g.Wo = (g.W + 2 * padding - g.kw) / stride + 1;
    g.P = g.Ho * g.Wo;
    g.Kc = g.Cin * g.kh * g.kw;
    int64_t y_shape[4] = {g.N, g.Cout, g.Ho, g.Wo};
    Tensor *y = tensor_new_on(dev, 4, y_shape, DT_F32);
    const float *x32 = tensor_f32(x), *w32 = tensor_f32(w);
    if (dev == DEV_CUDA) {
        int64_t gv[9];
        conv_geom_vec(&g, gv);
        cuda_conv2d_forward(gv, x32, w32, bias ? tensor_f32(bias) : NULL, tensor_data_f32(y));
    } else {
        op_conv2d_cpu_forward(&g, x32, w32, bias ? tensor_f32(bias) : NULL, tensor_data_f32(y));
    }
    if (ag_needs_grad(3, in)) {
        ConvCtx *c = ag_record("op_conv2d", conv2d_backward, y, bias ? 3 : 2, in, sizeof(ConvCtx));
        c->g = g;
        c->x = x32;
        c->w = w32;
    }
    return y;
}
