// op_conv2d: torch.nn.Conv2d (zero padding, dilation 1, groups 1) as im2col + GEMM.
//
// With P = Ho*Wo output pixels and Kc = Cin*kh*kw, one image is
//     forward   Y [Cout, P]  = W [Cout, Kc] @ col [Kc, P]        col = im2col(x)
//     dX        dcol [Kc, P] = W^T @ dY,  dX += col2im(dcol)
//     dW        dW [Cout, Kc] += dY [Cout, P] @ col^T            (col recomputed, never saved)
// The columns are processed in blocks ("tiles") whose col buffer stays within a budget:
//  - a full-resolution image is cut into blocks of output rows, so a VAE decoder conv at 512 x 512
//    (256 * 9 * 512 * 512 floats = 2.25 GiB of col) needs only a few MiB of scratch;
//  - small images are batched: `nb` whole images share one GEMM over [Kc, nb*P] columns, so 8x8
//    feature maps still give GEMMs wide enough for OpenBLAS to run near peak.
// The budget is about an L2 cache for thin convs (few channels: the GEMM is cheap and im2col,
// GEMM and col2im then pass the tile through cache instead of DRAM), and at least
// CONV_TILE_MIN_COLS columns for wide ones (GEMM efficiency), never above COL_MAX_FLOATS.
//
// Threads, two schedules:
//  - "images": each OpenMP thread takes whole images (or batches of them) and runs every tile of
//    them on its own: im2col, single-threaded GEMM, col2im, in its own scratch (dW accumulates in a
//    per-thread buffer, summed at the end). No fork-join per tile and the tile stays in that core's
//    cache; chosen when the images divide evenly over the threads (the batch-4 training convs).
//  - "shared": tiles in sequence, each GEMM split over the threads by gemm_f32, im2col/col2im as
//    OpenMP loops between GEMMs (never around them); chosen for batch 1 (SD, VAE inference).
// A 1x1 stride-1 unpadded conv needs no im2col at all: x itself is col. All scratch lives in the
// arena between a mark and its release.
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "autograd/cuda/cuda_ops.h"
#include "autograd/dense_tuning.h"
#include "autograd/gemm.h"
#include "autograd/ops_cpu_util.h"
#include "autograd/ops_fused.h"

// Columns of one batched GEMM (nb * P) are capped here; beyond this OpenBLAS gains nothing.
#define CONV_TARGET_COLS 4096
// Hard cap of one col tile (64 MiB), unless a single output row needs more.
#define COL_MAX_FLOATS ((int64_t)16 << 20)
// Automatic tile budget: at least this many floats (1 MiB, a share of L2 per core) ...
#define CONV_TILE_CACHE_FLOATS ((int64_t)256 << 10)
// ... and at least this many columns, so wide convs keep GEMMs efficient.
#define CONV_TILE_MIN_COLS 1024
// The "images" schedule keeps a dW accumulator per thread; above this size (floats) it is not worth it.
#define CONV_PRIVATE_DW_MAX_FLOATS ((int64_t)4 << 20)

typedef struct {
    int64_t N, Cin, H, W, Cout, kh, kw, Ho, Wo, P, Kc;
    int stride, pad;
} ConvGeom;

typedef struct {
    ConvGeom g;
    const float *w;  // f32 weight (NULL unless stored f32: a widened copy is released after forward)
    bool w_half;     // CUDA mixed precision: cuDNN reads the frozen bf16/f16 weight as-is
} ConvCtx;

// ---- tuning knobs (dense_tuning.h) -------------------------------------------------------------
static int64_t forced_tile_floats;  // 0: automatic
static int forced_schedule;         // 0: automatic, 1: images, 2: shared

void conv_set_tile_floats(int64_t floats) { forced_tile_floats = floats > 0 ? floats : 0; }

bool conv_set_schedule(const char *name) {
    int want = !strcmp(name, "auto") ? 0 : !strcmp(name, "images") ? 1 : !strcmp(name, "shared") ? 2 : -1;
    if (want < 0) return false;
    forced_schedule = want;
    return true;
}

// The cuDNN geometry vector: N, Cin, H, W, Cout, kh, kw, stride, pad.
static void conv_geom_vec(const ConvGeom *g, int64_t *v) {
    int64_t t[9] = {g->N, g->Cin, g->H, g->W, g->Cout, g->kh, g->kw, g->stride, g->pad};
    memcpy(v, t, sizeof t);
}

static bool conv_is_pointwise(const ConvGeom *g) { return g->kh == 1 && g->kw == 1 && g->stride == 1 && g->pad == 0; }

// ---- tiling ------------------------------------------------------------------------------------
// A tile is images [n0, n0 + nb) x output rows [oh0, oh0 + rows): nb > 1 only for whole images.
typedef struct {
    int64_t nb, rows;  // images per tile, output rows per tile
    int64_t cols;      // columns of the largest tile: nb * rows * Wo
} ConvTiling;

static ConvTiling conv_tiling(const ConvGeom *g) {
    int64_t budget = forced_tile_floats;
    if (budget == 0) {
        budget = g->Kc * CONV_TILE_MIN_COLS;
        if (budget < CONV_TILE_CACHE_FLOATS) budget = CONV_TILE_CACHE_FLOATS;
        if (budget > COL_MAX_FLOATS) budget = COL_MAX_FLOATS;
    }
    ConvTiling t = {.nb = 1, .rows = g->Ho};
    if (g->Kc * g->P <= budget) {  // whole images; batch small ones
        int64_t nb = CONV_TARGET_COLS / g->P, cap = budget / (g->Kc * g->P);
        if (cap < nb) nb = cap;
        if (nb > g->N) nb = g->N;
        t.nb = nb < 1 ? 1 : nb;
    } else {  // blocks of output rows (one row at least, whatever the budget)
        int64_t rows = budget / (g->Kc * g->Wo);
        t.rows = rows < 1 ? 1 : rows;
    }
    t.cols = t.nb * t.rows * g->Wo;
    return t;
}

static int conv_max_threads(void) {
#ifdef _OPENMP
    return omp_in_parallel() ? 1 : omp_get_max_threads();
#else
    return 1;
#endif
}

// Threads for the "images" schedule (each takes whole batches of nb images), or 0 for "shared".
static int conv_image_threads(const ConvGeom *g, const ConvTiling *t, bool private_dw) {
    int threads = conv_max_threads();
    int64_t groups = (g->N + t->nb - 1) / t->nb;
    if (forced_schedule == 1) return (int)(groups < threads ? groups : threads);
    if (forced_schedule == 2) return 0;
    if (threads == 1) return 1;  // the two schedules coincide; this one has no parallel regions
    if (private_dw && g->Cout * g->Kc > CONV_PRIVATE_DW_MAX_FLOATS) return 0;
    bool balanced = groups % threads == 0 || groups >= 3 * (int64_t)threads;
    return groups >= threads && balanced ? threads : 0;
}

// ---- im2col / col2im on a block of output rows ---------------------------------------------------
// Writes (=) col rows [Kc] x columns [(oh1-oh0)*Wo] at col (row stride ldc) from one image
// x [Cin, H, W], output rows [oh0, oh1). Rows are (c, ki, kj); out-of-image taps are zero.
static void im2col(const ConvGeom *g, const float *x, int64_t oh0, int64_t oh1, float *col, int64_t ldc, bool par) {
    (void)par;  // (unused without OpenMP)
#pragma omp parallel for schedule(static) if (par && g->Kc * (oh1 - oh0) * g->Wo > OPS_PARALLEL_MIN)
    for (int64_t r = 0; r < g->Kc; r++) {
        int64_t c = r / (g->kh * g->kw), ki = (r / g->kw) % g->kh, kj = r % g->kw;
        const float *xc = x + c * g->H * g->W;
        float *dst = col + r * ldc;
        // stride 1: the valid ow range is contiguous: zeros, one copy, zeros
        int64_t lo = g->pad - kj, hi = g->W + g->pad - kj;  // ow in [lo, hi) reads inside the row
        if (lo < 0) lo = 0;
        if (hi > g->Wo) hi = g->Wo;
        if (hi < lo) hi = lo;
        for (int64_t oh = oh0; oh < oh1; oh++) {
            int64_t ih = oh * g->stride - g->pad + ki;
            float *d = dst + (oh - oh0) * g->Wo;
            if (ih < 0 || ih >= g->H) {
                memset(d, 0, (size_t)g->Wo * sizeof(float));
                continue;
            }
            const float *src = xc + ih * g->W;
            if (g->stride == 1) {
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

// Accumulates (+=) into one image's dx [Cin, H, W] the columns dcol [Kc] x [(oh1-oh0)*Wo] (row
// stride ldc) of output rows [oh0, oh1): the adjoint of im2col. Parallel over channels, so no two
// threads touch the same dx plane.
static void col2im_add(const ConvGeom *g, const float *dcol, int64_t ldc, int64_t oh0, int64_t oh1, float *dx,
                       bool par) {
    (void)par;
#pragma omp parallel for schedule(static) if (par && g->Kc * (oh1 - oh0) * g->Wo > OPS_PARALLEL_MIN)
    for (int64_t c = 0; c < g->Cin; c++) {
        float *dxc = dx + c * g->H * g->W;
        for (int64_t ki = 0; ki < g->kh; ki++)
            for (int64_t kj = 0; kj < g->kw; kj++) {
                const float *src = dcol + ((c * g->kh + ki) * g->kw + kj) * ldc;
                int64_t lo = g->pad - kj, hi = g->W + g->pad - kj;  // as in im2col (stride 1)
                if (lo < 0) lo = 0;
                if (hi > g->Wo) hi = g->Wo;
                for (int64_t oh = oh0; oh < oh1; oh++) {
                    int64_t ih = oh * g->stride - g->pad + ki;
                    if (ih < 0 || ih >= g->H) continue;
                    float *drow = dxc + ih * g->W;
                    const float *s = src + (oh - oh0) * g->Wo;
                    if (g->stride == 1) {  // contiguous: a loop the compiler vectorises
                        int64_t off = kj - g->pad;
                        for (int64_t ow = lo; ow < hi; ow++) drow[ow + off] += s[ow];
                        continue;
                    }
                    for (int64_t ow = 0; ow < g->Wo; ow++) {
                        int64_t iw = ow * g->stride - g->pad + kj;
                        if (iw >= 0 && iw < g->W) drow[iw] += s[ow];
                    }
                }
            }
    }
}

// ---- one tile ----------------------------------------------------------------------------------
// Scratch of one worker: col [Kc, cols] and, for batched images, ycat [Cout, cols].
typedef struct {
    float *col, *cat;
} ConvScratch;

static ConvScratch conv_scratch(const ConvGeom *g, const ConvTiling *t) {
    ConvScratch s;
    s.col = arena_alloc((size_t)(g->Kc * t->cols) * sizeof(float), "conv2d im2col tile");
    s.cat = t->nb > 1 ? arena_alloc((size_t)(g->Cout * t->cols) * sizeof(float), "conv2d batched output") : NULL;
    return s;
}

// Writes (=) y of images [n0, n0+nb) x output rows [oh0, oh1): conv + bias. `par`: the loops may
// fork (the "shared" schedule); gemm_f32 splits itself unless called inside a parallel region.
static void forward_tile(const ConvGeom *g, const float *x, const float *w, const float *bias, float *y, int64_t n0,
                         int64_t nb, int64_t oh0, int64_t oh1, ConvScratch s, bool par) {
    (void)par;
    int64_t P = g->P, in_img = g->Cin * g->H * g->W, out_img = g->Cout * P;
    int64_t tp = (oh1 - oh0) * g->Wo, cols = nb * tp;  // pixels per image, columns of the tile
    for (int64_t i = 0; i < nb; i++) im2col(g, x + (n0 + i) * in_img, oh0, oh1, s.col + i * tp, cols, par);
    if (nb == 1) {  // Y tile [Cout, tp] lies in y with row stride P: GEMM on top of the bias
        float *yt = y + n0 * out_img + oh0 * g->Wo;
        if (bias) {
#pragma omp parallel for if (par && g->Cout * tp > OPS_PARALLEL_MIN)
            for (int64_t co = 0; co < g->Cout; co++)
                for (int64_t p = 0; p < tp; p++) yt[co * P + p] = bias[co];
        }
        gemm_f32(false, false, g->Cout, tp, g->Kc, 1.0f, w, g->Kc, s.col, tp, bias ? 1.0f : 0.0f, yt, P);
        return;
    }
    // batched whole images (tp == P): cat [Cout, nb*P], then scattered to y [nb, Cout, P] + bias
    gemm_f32(false, false, g->Cout, cols, g->Kc, 1.0f, w, g->Kc, s.col, cols, 0.0f, s.cat, cols);
#pragma omp parallel for collapse(2) if (par && nb * out_img > OPS_PARALLEL_MIN)
    for (int64_t i = 0; i < nb; i++)
        for (int64_t co = 0; co < g->Cout; co++) {
            float *dst = y + (n0 + i) * out_img + co * P;
            const float *src = s.cat + co * cols + i * P;
            float b = bias ? bias[co] : 0.0f;
            for (int64_t p = 0; p < P; p++) dst[p] = src[p] + b;
        }
}

// Accumulates (+=) dw_acc [Cout, Kc] and dx of images [n0, n0+nb) from dy over output rows
// [oh0, oh1); NULL skips one.
static void backward_tile(const ConvGeom *g, const float *x, const float *w, const float *dy, float *dx, float *dw_acc,
                          int64_t n0, int64_t nb, int64_t oh0, int64_t oh1, ConvScratch s, bool par) {
    (void)par;
    int64_t P = g->P, in_img = g->Cin * g->H * g->W, out_img = g->Cout * P;
    int64_t tp = (oh1 - oh0) * g->Wo, cols = nb * tp;
    const float *gy = dy + n0 * out_img + oh0 * g->Wo;  // dY tile [Cout, cols], row stride ldy
    int64_t ldy = P;
    if (nb > 1) {  // batched whole images: gather dY to [Cout, nb*P]
#pragma omp parallel for collapse(2) if (par && nb * out_img > OPS_PARALLEL_MIN)
        for (int64_t i = 0; i < nb; i++)
            for (int64_t co = 0; co < g->Cout; co++)
                memcpy(s.cat + co * cols + i * P, dy + (n0 + i) * out_img + co * P, (size_t)P * sizeof(float));
        gy = s.cat;
        ldy = cols;
    }
    if (dw_acc) {
        for (int64_t i = 0; i < nb; i++) im2col(g, x + (n0 + i) * in_img, oh0, oh1, s.col + i * tp, cols, par);
        gemm_f32(false, true, g->Cout, g->Kc, cols, 1.0f, gy, ldy, s.col, cols, 1.0f, dw_acc, g->Kc);
    }
    if (dx) {  // col is free again: reuse it for dcol
        gemm_f32(true, false, g->Kc, cols, g->Cout, 1.0f, w, g->Kc, gy, ldy, 0.0f, s.col, cols);
        for (int64_t i = 0; i < nb; i++) col2im_add(g, s.col + i * tp, cols, oh0, oh1, dx + (n0 + i) * in_img, par);
    }
}

// ---- the two schedules -------------------------------------------------------------------------
typedef struct {
    const ConvGeom *g;
    const float *x, *w, *bias, *dy;
    float *y, *dx;
} ConvIo;

// Runs every tile of images [n0, n0+nb): forward (y) or backward (dx, dw_acc).
static void run_images(const ConvIo *io, const ConvTiling *t, int64_t n0, float *dw_acc, ConvScratch s, bool par) {
    const ConvGeom *g = io->g;
    int64_t nb = g->N - n0 < t->nb ? g->N - n0 : t->nb;
    for (int64_t oh0 = 0; oh0 < g->Ho; oh0 += t->rows) {
        int64_t oh1 = oh0 + t->rows < g->Ho ? oh0 + t->rows : g->Ho;
        if (io->y) forward_tile(g, io->x, io->w, io->bias, io->y, n0, nb, oh0, oh1, s, par);
        else backward_tile(g, io->x, io->w, io->dy, io->dx, dw_acc, n0, nb, oh0, oh1, s, par);
    }
}

// Runs forward (io->y set) or backward (dx and/or dw += ) over all images, in tiles.
static void conv_run(const ConvIo *io, float *dw) {
    const ConvGeom *g = io->g;
    ConvTiling t = conv_tiling(g);
    int threads = conv_image_threads(g, &t, !io->y && dw);
    size_t mark = arena_mark();
    if (threads == 0) {  // "shared": tiles in sequence, each one split over the threads
        ConvScratch s = conv_scratch(g, &t);
        for (int64_t n0 = 0; n0 < g->N; n0 += t.nb) run_images(io, &t, n0, dw, s, true);
        arena_release(mark);
        return;
    }
    // "images": per-thread scratch (allocated here: the arena is not thread-safe) and dW buffers
    ConvScratch s[threads];
    float *dw_private[threads];
    for (int i = 0; i < threads; i++) {
        s[i] = conv_scratch(g, &t);
        dw_private[i] = dw && threads > 1 ? arena_calloc((size_t)(g->Cout * g->Kc) * sizeof(float), "conv2d dW")
                                          : dw;
    }
    int64_t groups = (g->N + t.nb - 1) / t.nb;
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
    for (int64_t gi = 0; gi < groups; gi++) {
        int me = ops_thread_id();
        run_images(io, &t, gi * t.nb, dw_private[me], s[me], false);
    }
    if (dw && threads > 1) {
        int64_t n = g->Cout * g->Kc;
#pragma omp parallel for if (n > OPS_PARALLEL_MIN)
        for (int64_t i = 0; i < n; i++) {
            float sum = 0.0f;
            for (int t2 = 0; t2 < threads; t2++) sum += dw_private[t2][i];
            dw[i] += sum;
        }
    }
    arena_release(mark);
}

// Writes (=) y [N, Cout, P] = conv(x, w) + bias.
static void op_conv2d_cpu_forward(const ConvGeom *g, const float *x, const float *w, const float *bias, float *y) {
    int64_t P = g->P, in_img = g->Cin * g->H * g->W, out_img = g->Cout * P;
    if (conv_is_pointwise(g)) {
        if (bias) {
#pragma omp parallel for if (g->N * out_img > OPS_PARALLEL_MIN)
            for (int64_t nc = 0; nc < g->N * g->Cout; nc++)
                for (int64_t p = 0; p < P; p++) y[nc * P + p] = bias[nc % g->Cout];
        }
        for (int64_t n = 0; n < g->N; n++)
            gemm_f32(false, false, g->Cout, P, g->Cin, 1.0f, w, g->Cin, x + n * in_img, P, bias ? 1.0f : 0.0f,
                     y + n * out_img, P);
        return;
    }
    ConvIo io = {.g = g, .x = x, .w = w, .bias = bias, .y = y};
    conv_run(&io, NULL);
}

// Accumulates (+=) dx [N, Cin, H, W], dw [Cout, Kc], db [Cout] from dy [N, Cout, P]; NULL skips one.
static void op_conv2d_cpu_backward(const ConvGeom *g, const float *x, const float *w, const float *dy, float *dx,
                                float *dw, float *db) {
    int64_t P = g->P, in_img = g->Cin * g->H * g->W, out_img = g->Cout * P;
    if (db) {  // per (image, channel) plane, so even Cout = 2 keeps every thread busy
        size_t mark = arena_mark();
        double *plane = arena_alloc((size_t)(g->N * g->Cout) * sizeof(double), "conv2d dbias planes");
#pragma omp parallel for if (g->N * out_img > OPS_PARALLEL_MIN)
        for (int64_t nc = 0; nc < g->N * g->Cout; nc++) {
            const float *d = dy + nc * P;
            double s = 0;
            for (int64_t p0 = 0; p0 < P; p0 += 1024) {  // 8 float lanes (vectorised) per 1024 pixels, then double
                int64_t p1 = p0 + 1024 < P ? p0 + 1024 : P, p = p0;
                float lane[8] = {0};
                for (; p + 8 <= p1; p += 8)
                    for (int l = 0; l < 8; l++) lane[l] += d[p + l];
                for (; p < p1; p++) s += d[p];
                for (int l = 0; l < 8; l++) s += lane[l];
            }
            plane[nc] = s;
        }
        for (int64_t co = 0; co < g->Cout; co++) {
            double s = 0;
            for (int64_t n = 0; n < g->N; n++) s += plane[n * g->Cout + co];
            db[co] += (float)s;
        }
        arena_release(mark);
    }
    if (!dx && !dw) return;
    if (conv_is_pointwise(g)) {  // x is read only for dw (it may be NULL otherwise)
        for (int64_t n = 0; n < g->N; n++) {
            const float *dyn = dy + n * out_img;
            if (dx) gemm_f32(true, false, g->Cin, P, g->Cout, 1.0f, w, g->Cin, dyn, P, 1.0f, dx + n * in_img, P);
            if (dw) gemm_f32(false, true, g->Cout, g->Cin, P, 1.0f, dyn, P, x + n * in_img, P, 1.0f, dw, g->Cin);
        }
        return;
    }
    ConvIo io = {.g = g, .x = x, .w = w, .dy = dy, .dx = dx};
    conv_run(&io, dw);
}

// dx, dw, db += (NULL skips one) from dy, on dev; x (the conv's input, f32) is read only for dw.
static void conv_backward_on(Device dev, const ConvCtx *c, const float *x, const Tensor *w, const float *dy, float *dx,
                             float *dw, float *db) {
    // A half-precision weight was widened in forward scratch: widen it again for this call only
    // (unless cuDNN reads it as-is).
    ScratchScope scratch = scratch_begin(dev);
    const float *w32 = c->w ? c->w : c->w_half ? NULL : tensor_f32(w);
    if (dev == DEV_CUDA) {
        int64_t gv[9];
        conv_geom_vec(&c->g, gv);
        if (c->w_half) cuda_conv2d_backward(gv, x, w->data, w->dtype, dy, dx, NULL, db);
        else cuda_conv2d_backward(gv, x, w32, DT_F32, dy, dx, dw, db);
    } else {
        op_conv2d_cpu_backward(&c->g, x, w32, dy, dx, dw, db);
    }
    scratch_end(scratch);
}

// The FLOPs of the convolution's forward product, and of each of its gradient products (dX, dW).
static double conv_flops(const ConvGeom *g) { return flops_gemm(g->N, g->Cout, g->P, g->Kc); }

static void conv2d_backward(AgNode *node) {
    ConvCtx *c = node->ctx;
    Tensor *x = node->inputs[0], *w = node->inputs[1], *b = node->n_inputs > 2 ? node->inputs[2] : NULL;
    ScratchScope scratch = scratch_begin(node->out->device);
    conv_backward_on(node->out->device, c, w->requires_grad ? tensor_f32(x) : NULL, w, node->out->grad,
                     x->requires_grad ? tensor_grad(x) : NULL, w->requires_grad ? tensor_grad(w) : NULL,
                     b && b->requires_grad ? tensor_grad(b) : NULL);
    scratch_end(scratch);
    op_flops_backward(node->op, FLOPS_CONV, (x->requires_grad + w->requires_grad) * conv_flops(&c->g), 0.0);
}

// Checks op's arguments (x: the conv's input shape) and returns the geometry.
static ConvGeom conv_setup(const char *op, const Tensor *x, const Tensor *w, const Tensor *bias, int stride, int padding) {
    DOD_CHECK(x->ndim == 4 && w->ndim == 4 && x->shape[1] == w->shape[1], op,
              "x %s and weight %s: need x [N, Cin, H, W] and weight [Cout, Cin, kh, kw]", shape_str(x), shape_str(w));
    DOD_CHECK(!bias || (bias->ndim == 1 && bias->shape[0] == w->shape[0]), op,
              "bias %s does not match weight %s (need [Cout])", shape_str(bias), shape_str(w));
    DOD_CHECK(stride >= 1 && padding >= 0, op, "x %s, weight %s: stride %d must be >= 1, padding %d >= 0",
              shape_str(x), shape_str(w), stride, padding);
    ConvGeom g = {.N = x->shape[0], .Cin = x->shape[1], .H = x->shape[2], .W = x->shape[3], .Cout = w->shape[0],
                  .kh = w->shape[2], .kw = w->shape[3], .stride = stride, .pad = padding};
    DOD_CHECK(g.H + 2 * padding >= g.kh && g.W + 2 * padding >= g.kw, op,
              "x %s padded by %d is smaller than the kernel of weight %s", shape_str(x), padding, shape_str(w));
    g.Ho = (g.H + 2 * padding - g.kh) / stride + 1;
    g.Wo = (g.W + 2 * padding - g.kw) / stride + 1;
    g.P = g.Ho * g.Wo;
    g.Kc = g.Cin * g.kh * g.kw;
    return g;
}

// y = conv(x32, w) + bias (=) on dev; fills c (geometry g set by the caller) for the backward.
static void conv_forward_on(Device dev, ConvCtx *c, const float *x32, const Tensor *w, const Tensor *bias, float *y) {
    // Mixed precision on CUDA: a frozen half weight goes to cuDNN as it is stored.
    bool w_half = dev == DEV_CUDA && (w->dtype == DT_BF16 || w->dtype == DT_F16) && !w->requires_grad &&
                  dod_cuda_precision() == DOD_PREC_MIXED && cuda_conv_reads_half_weights();
    ScratchScope scratch = scratch_begin(dev);
    const float *w32 = w_half ? NULL : tensor_f32(w), *b32 = bias ? tensor_f32(bias) : NULL;
    if (dev == DEV_CUDA) {
        int64_t gv[9];
        conv_geom_vec(&c->g, gv);
        if (w_half) cuda_conv2d_forward(gv, x32, w->data, w->dtype, b32, y);
        else cuda_conv2d_forward(gv, x32, w32, DT_F32, b32, y);
    } else {
        op_conv2d_cpu_forward(&c->g, x32, w32, b32, y);
    }
    scratch_end(scratch);
    c->w = w->dtype == DT_F32 ? w32 : NULL;  // NULL: widened copy released, backward widens again
    c->w_half = w_half;
}

Tensor *op_conv2d(Tensor *x, Tensor *w, Tensor *bias, int stride, int padding) {
    Tensor *in[3] = {x, w, bias};
    Device dev = ops_device("op_conv2d", 3, in);
    ConvCtx c = {.g = conv_setup("op_conv2d", x, w, bias, stride, padding)};
    int64_t y_shape[4] = {c.g.N, c.g.Cout, c.g.Ho, c.g.Wo};
    Tensor *y = tensor_new_activation(dev, 4, y_shape);
    ScratchScope scratch = scratch_begin(dev);
    float *y32 = tensor_out_f32(y);
    conv_forward_on(dev, &c, tensor_f32(x), w, bias, y32);
    tensor_store_f32(y, y32);
    scratch_end(scratch);
    op_flops_forward("op_conv2d", FLOPS_CONV, conv_flops(&c.g));
    if (ag_needs_grad(3, in)) *(ConvCtx *)ag_record("op_conv2d", conv2d_backward, y, bias ? 3 : 2, in, sizeof c) = c;
    return y;
}

// ---- convolutions of an input they never keep --------------------------------------------------------
// A cheap prologue makes the conv's input t from the op's first n inputs: in forward scratch (the
// output is allocated first, so the scratch can be given back), and again in backward scratch where
// the conv's dw needs it (dx needs only w). The conv's dt goes back through the prologue's backward.
typedef struct FusedConvCtx FusedConvCtx;
typedef struct {
    void (*make)(Device dev, FusedConvCtx *c, Tensor *const *in, float *t);                // t = prologue(in) (=)
    void (*backward)(Device dev, const FusedConvCtx *c, Tensor *const *in, const float *dt);  // in grads +=
} ConvPrologue;

struct FusedConvCtx {
    ConvCtx conv;
    const ConvPrologue *prologue;
    int n;            // prologue inputs: the weight is input n, the bias n + 1
    GroupNormCtx gn;  // the group-norm prologue's shapes and statistics
};

static void fused_conv_backward(AgNode *node) {
    FusedConvCtx c = *(const FusedConvCtx *)node->ctx;
    Tensor *const *in = node->inputs;
    Tensor *w = in[c.n], *b = in[c.n + 1];
    Device dev = node->out->device;
    bool want_dt = false;
    for (int i = 0; i < c.n; i++) want_dt = want_dt || (in[i] && in[i]->requires_grad);
    ScratchScope scratch = scratch_begin(dev);
    size_t bytes = (size_t)(c.conv.g.N * c.conv.g.Cin * c.conv.g.H * c.conv.g.W) * sizeof(float);
    float *t = NULL, *dt = want_dt ? arena_calloc_on(dev, bytes, "fused conv: dx") : NULL;
    float *dw = w->requires_grad ? tensor_grad(w) : NULL, *db = b && b->requires_grad ? tensor_grad(b) : NULL;
    // The remade input lives in its own inner scope: the prologue's backward below (its own
    // scratch, e.g. the norm remade once more) must not stack on top of it.
    ScratchScope remade = scratch_begin(dev);
    if (w->requires_grad) {
        t = arena_alloc_on(dev, bytes, "fused conv: input (remade)");
        c.prologue->make(dev, &c, in, t);
    }
    conv_backward_on(dev, &c.conv, t, w, node->out->grad, dt, dw, db);
    scratch_end(remade);
    if (want_dt) c.prologue->backward(dev, &c, in, dt);
    scratch_end(scratch);
    op_flops_backward(node->op, FLOPS_CONV, (want_dt + w->requires_grad) * conv_flops(&c.conv.g), 0.0);
}

// The fused op: in[0..n) the prologue's inputs, in[n] the weight, in[n + 1] the bias (or NULL); t_shape
// is the conv input's shape; c->prologue, c->n (and the prologue's own state) set by the caller.
static Tensor *fused_conv(const char *op, Device dev, FusedConvCtx *c, Tensor **in, const Tensor *t_shape, int stride,
                          int padding) {
    Tensor *w = in[c->n], *bias = in[c->n + 1];
    c->conv.g = conv_setup(op, t_shape, w, bias, stride, padding);
    int64_t y_shape[4] = {c->conv.g.N, c->conv.g.Cout, c->conv.g.Ho, c->conv.g.Wo};
    Tensor *y = tensor_new_activation(dev, 4, y_shape);
    ScratchScope scratch = scratch_begin(dev);
    float *t = arena_alloc_on(dev, (size_t)t_shape->numel * sizeof(float), "fused conv: input");
    c->prologue->make(dev, c, in, t);
    float *y32 = tensor_out_f32(y);
    conv_forward_on(dev, &c->conv, t, w, bias, y32);
    tensor_store_f32(y, y32);
    scratch_end(scratch);
    op_flops_forward(op, FLOPS_CONV, conv_flops(&c->conv.g));
    c->conv.w = NULL;  // a widened weight went with the scratch: backward widens again
    if (ag_needs_grad(c->n + 2, in)) *(FusedConvCtx *)ag_record(op, fused_conv_backward, y, c->n + 2, in, sizeof *c) = *c;
    return y;
}

// Group norm + SiLU: in = {x, gamma, beta}.
static void gn_silu_make(Device dev, FusedConvCtx *c, Tensor *const *in, float *t) {
    group_norm_silu_forward(dev, &c->gn, in[0], in[1], in[2], t);
}
static void gn_silu_backward(Device dev, const FusedConvCtx *c, Tensor *const *in, const float *dt) {
    group_norm_silu_backward_dy(dev, &c->gn, in[0], in[1], in[2], dt);
}
static const ConvPrologue gn_silu_prologue = {gn_silu_make, gn_silu_backward};

Tensor *op_group_norm_silu_conv2d(Tensor *x, int groups, Tensor *gamma, Tensor *beta, float eps, Tensor *w,
                                  Tensor *bias, int stride, int padding) {
    const char *op = "op_group_norm_silu_conv2d";
    Tensor *in[5] = {x, gamma, beta, w, bias};
    Device dev = ops_device(op, 5, in);
    FusedConvCtx c = {.prologue = &gn_silu_prologue, .n = 3};
    group_norm_setup(op, x, groups, gamma, beta, eps, &c.gn);
    return fused_conv(op, dev, &c, in, x, stride, padding);
}

// Concatenation along channels: in = xs[0..n).
static void concat_make(Device dev, FusedConvCtx *c, Tensor *const *in, float *t) { concat_forward_into(dev, in, c->n, 1, t); }
static void concat_backward(Device dev, const FusedConvCtx *c, Tensor *const *in, const float *dt) {
    (void)dev;
    concat_backward_dy(in, c->n, 1, dt);
}
static const ConvPrologue concat_prologue = {concat_make, concat_backward};

Tensor *op_concat_conv2d(Tensor *const *xs, int n, Tensor *w, Tensor *bias, int stride, int padding) {
    const char *op = "op_concat_conv2d";
    DOD_CHECK(n >= 1 && n <= AG_MAX_INPUTS - 2, op, "%d inputs: between 1 and %d", n, AG_MAX_INPUTS - 2);
    Tensor *in[AG_MAX_INPUTS] = {0};
    for (int i = 0; i < n; i++) in[i] = xs[i];
    in[n] = w;
    in[n + 1] = bias;
    Device dev = ops_device(op, n + 2, in);
    Tensor shape = *xs[0];  // the concatenation's shape, for the checks
    for (int i = 1; i < n; i++) {
        bool ok = xs[i]->ndim == 4 && xs[0]->ndim == 4 && xs[i]->shape[0] == xs[0]->shape[0] &&
                  xs[i]->shape[2] == xs[0]->shape[2] && xs[i]->shape[3] == xs[0]->shape[3];
        DOD_CHECK(ok, op, "input %d %s does not concatenate with input 0 %s along channels", i, shape_str(xs[i]),
                  shape_str(xs[0]));
        shape.shape[1] += xs[i]->shape[1];
        shape.numel += xs[i]->numel;
    }
    FusedConvCtx c = {.prologue = &concat_prologue, .n = n};
    return fused_conv(op, dev, &c, in, &shape, stride, padding);
}

// Nearest 2x upsampling: in = {x}.
static void upsample_make(Device dev, FusedConvCtx *c, Tensor *const *in, float *t) {
    (void)c;
    upsample2x_forward_into(dev, in[0], t);
}
static void upsample_backward(Device dev, const FusedConvCtx *c, Tensor *const *in, const float *dt) {
    (void)dev;
    (void)c;
    upsample2x_backward_dy(in[0], dt);
}
static const ConvPrologue upsample_prologue = {upsample_make, upsample_backward};

Tensor *op_upsample_nearest2x_conv2d(Tensor *x, Tensor *w, Tensor *bias, int stride, int padding) {
    const char *op = "op_upsample_nearest2x_conv2d";
    Tensor *in[3] = {x, w, bias};
    Device dev = ops_device(op, 3, in);
    DOD_CHECK(x->ndim == 4, op, "input %s must be [N, C, H, W]", shape_str(x));
    Tensor shape = *x;  // the upsampled shape
    shape.shape[2] *= 2;
    shape.shape[3] *= 2;
    shape.numel *= 4;
    FusedConvCtx c = {.prologue = &upsample_prologue, .n = 1};
    return fused_conv(op, dev, &c, in, &shape, stride, padding);
}
