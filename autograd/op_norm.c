// Normalisation: op_group_norm (torch.nn.GroupNorm) and op_layer_norm (torch.nn.LayerNorm over the
// last dim). Both use the biased variance with eps inside the square root:
//     y = (x - mean) / sqrt(var + eps) * gamma + beta
// Statistics are two-pass (mean, then mean squared deviation) with double accumulators, so large
// means (e.g. un-normalised latents) do not cancel the variance. mean and 1/std are saved per
// group/row for the backward:
//     dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)),  dxhat = dy * gamma
// The per-element formulas (group_norm_value, norm_xhat, norm_dx) are autograd/kernel_math.h's, shared
// with the CUDA kernels (autograd/cuda/norm.cu).
#include "autograd/cuda/cuda_ops.h"
#include "autograd/ops_cpu_util.h"
#include "autograd/ops_fused.h"

#include <math.h>
#include <string.h>

// mean and 1/sqrt(var + eps) of n contiguous floats, two-pass in double. Writes (=).
static void row_stats(const float *x, int64_t n, float eps, float *mean_out, float *rstd_out) {
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += x[i];
    double mean = s / (double)n, v = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = x[i] - mean;
        v += d * d;
    }
    *mean_out = (float)mean;
    *rstd_out = (float)(1.0 / sqrt(v / (double)n + eps));
}

static void check_affine(const char *op, const Tensor *x, const Tensor *p, const char *which, int64_t C) {
    if (p && (p->ndim != 1 || p->shape[0] != C))
        dod_fatal(op, "%s %s does not match the %ld channels of input %s", which, shape_str(p), (long)C,
                  shape_str(x));
}

// ---- group norm -------------------------------------------------------------------------------------
// GroupNormCtx: autograd/ops_fused.h (shared with the fused ops).

// y = groupnorm(x) and the per-(n, group) mean/rstd. Writes (=). x, gamma, beta: f32 views (gamma, beta may be NULL).
static void group_norm_cpu_forward(GroupNormCtx *c, const float *x, const float *gamma, const float *beta, float *y) {
    int64_t cpg = c->C / c->G, gsize = cpg * c->S;
#pragma omp parallel for if (c->N * c->C * c->S > OPS_PARALLEL_MIN)
    for (int64_t ng = 0; ng < c->N * c->G; ng++) {
        const float *xg = x + ng * gsize;
        float *yg = y + ng * gsize;
        row_stats(xg, gsize, c->eps, &c->mean[ng], &c->rstd[ng]);
        float m = c->mean[ng], r = c->rstd[ng];
        int64_t c0 = (ng % c->G) * cpg;
        for (int64_t k = 0; k < cpg; k++) {
            float ga = gamma ? gamma[c0 + k] : 1.0f, be = beta ? beta[c0 + k] : 0.0f;
            const float *xs = xg + k * c->S;
            float *ys = yg + k * c->S;
            for (int64_t s = 0; s < c->S; s++) ys[s] = group_norm_value(xs[s], m, r, ga, be);
        }
    }
}

// Accumulates (+=) into dx, dgamma, dbeta of x, gamma, beta (gamma/beta may be NULL) for the inputs
// that require grad, given dy.
static void group_norm_backward_dy(const GroupNormCtx *c, Tensor *xt, Tensor *gt, Tensor *bt, const float *dy) {
    int64_t cpg = c->C / c->G, gsize = cpg * c->S;
    bool want_dx = xt->requires_grad, want_dg = gt && gt->requires_grad, want_db = bt && bt->requires_grad;
    float *dx = want_dx ? tensor_grad(xt) : NULL;
    ScratchScope scratch = scratch_begin(xt->device);
    const float *x = tensor_f32(xt), *gamma = gt ? tensor_f32(gt) : NULL;
    if (xt->device == DEV_CUDA) {
        cuda_group_norm_backward(x, gamma, c->mean, c->rstd, dy, dx, want_dg ? tensor_grad(gt) : NULL,
                                 want_db ? tensor_grad(bt) : NULL, c->N, c->C, c->S, c->G);
        scratch_end(scratch);
        return;
    }
    // Per-(n, c) sums of dy * xhat and dy; each (n, group) task owns its own channels' entries.
    double *part_g = arena_alloc((size_t)(c->N * c->C) * sizeof(double), "op_group_norm dgamma partials");
    double *part_b = arena_alloc((size_t)(c->N * c->C) * sizeof(double), "op_group_norm dbeta partials");
#pragma omp parallel for if (c->N * c->C * c->S > OPS_PARALLEL_MIN)
    for (int64_t ng = 0; ng < c->N * c->G; ng++) {
        const float *xg = x + ng * gsize, *dyg = dy + ng * gsize;
        float m = c->mean[ng], r = c->rstd[ng];
        int64_t n = ng / c->G, c0 = (ng % c->G) * cpg;
        double sum_dxh = 0, sum_dxh_xh = 0;
        for (int64_t k = 0; k < cpg; k++) {
            float ga = gamma ? gamma[c0 + k] : 1.0f;
            double sg = 0, sb = 0;
            for (int64_t s = 0; s < c->S; s++) {
                float xh = norm_xhat(xg[k * c->S + s], m, r), d = dyg[k * c->S + s];
                sg += (double)d * xh;
                sb += d;
            }
            part_g[n * c->C + c0 + k] = sg;
            part_b[n * c->C + c0 + k] = sb;
            sum_dxh += ga * sb;
            sum_dxh_xh += ga * sg;
        }
        if (!dx) continue;
        float mean_dxh = (float)(sum_dxh / gsize), mean_dxh_xh = (float)(sum_dxh_xh / gsize);
        float *dxg = dx + ng * gsize;
        for (int64_t k = 0; k < cpg; k++) {
            float ga = gamma ? gamma[c0 + k] : 1.0f;
            for (int64_t s = 0; s < c->S; s++) {
                int64_t i = k * c->S + s;
                dxg[i] += norm_dx(r, dyg[i] * ga, norm_xhat(xg[i], m, r), mean_dxh, mean_dxh_xh);
            }
        }
    }
    float *dg = want_dg ? tensor_grad(gt) : NULL, *db = want_db ? tensor_grad(bt) : NULL;
    for (int64_t ch = 0; ch < c->C; ch++) {
        double sg = 0, sb = 0;
        for (int64_t n = 0; n < c->N; n++) {
            sg += part_g[n * c->C + ch];
            sb += part_b[n * c->C + ch];
        }
        if (dg) dg[ch] += (float)sg;
        if (db) db[ch] += (float)sb;
    }
    scratch_end(scratch);
}

static void group_norm_backward(AgNode *node) {
    group_norm_backward_dy(node->ctx, node->inputs[0], node->inputs[1], node->inputs[2], node->out->grad);
}

void group_norm_setup(const char *op, Tensor *x, int groups, Tensor *gamma, Tensor *beta, float eps,
                      GroupNormCtx *c) {
    if (x->ndim < 2) dod_fatal(op, "input %s must be [N, C, ...]", shape_str(x));
    int64_t C = x->shape[1];
    if (groups <= 0 || C % groups != 0)
        dod_fatal(op, "%d groups do not divide the %ld channels of input %s", groups, (long)C, shape_str(x));
    check_affine(op, x, gamma, "gamma", C);
    check_affine(op, x, beta, "beta", C);
    *c = (GroupNormCtx){x->shape[0], C, ops_prod(x->shape, 2, x->ndim), groups, NULL, NULL, eps};
    size_t stat_bytes = (size_t)(c->N * c->G) * sizeof(float);
    c->mean = arena_alloc_on(x->device, stat_bytes, "group norm mean");
    c->rstd = arena_alloc_on(x->device, stat_bytes, "group norm rstd");
}

// y = groupnorm(x) (=) on dev, writing c's mean/rstd.
static void group_norm_forward_on(Device dev, GroupNormCtx *c, const Tensor *xt, const Tensor *gt, const Tensor *bt,
                                  float *y) {
    ScratchScope scratch = scratch_begin(dev);
    const float *x = tensor_f32(xt), *gamma = gt ? tensor_f32(gt) : NULL, *beta = bt ? tensor_f32(bt) : NULL;
    if (dev == DEV_CUDA)
        cuda_group_norm_forward(x, gamma, beta, y, c->mean, c->rstd, c->N, c->C, c->S, c->G, c->eps);
    else if (c->S > 0 && c->C > 0)
        group_norm_cpu_forward(c, x, gamma, beta, y);
    scratch_end(scratch);
}

// ---- group norm + SiLU ----------------------------------------------------------------------------------
// Saves x and the statistics only: backward recomputes the normalised tensor n = groupnorm(x) in scratch
// (bitwise the forward's: same kernel, same inputs), takes dn = silu'(n) * dy, then group norm's backward.
void group_norm_silu_forward(Device dev, GroupNormCtx *c, const Tensor *x, const Tensor *gamma, const Tensor *beta,
                             float *y) {
    group_norm_forward_on(dev, c, x, gamma, beta, y);
    int64_t n = c->N * c->C * c->S;
    if (dev == DEV_CUDA) cuda_act_forward(ACT_SILU, 0, 0, y, y, n);  // in place: elementwise
    else act_cpu_apply(ACT_SILU, 0, 0, y, y, n);
}

void group_norm_silu_backward_dy(Device dev, const GroupNormCtx *c, Tensor *x, Tensor *gamma, Tensor *beta,
                                 const float *dy) {
    GroupNormCtx gn = *c;
    int64_t n = x->numel;
    ScratchScope scratch = scratch_begin(dev);
    float *norm = arena_alloc_on(dev, (size_t)n * sizeof(float), "group norm + silu: recomputed norm");
    float *dn = arena_calloc_on(dev, (size_t)n * sizeof(float), "group norm + silu: dnorm");
    group_norm_forward_on(dev, &gn, x, gamma, beta, norm);
    if (dev == DEV_CUDA) cuda_act_backward(ACT_SILU, 0, 0, norm, dy, dn, n);
    else act_cpu_grad(ACT_SILU, 0, 0, norm, dy, dn, n);
    group_norm_backward_dy(&gn, x, gamma, beta, dn);
    scratch_end(scratch);
}

static void group_norm_silu_backward(AgNode *node) {
    group_norm_silu_backward_dy(node->out->device, node->ctx, node->inputs[0], node->inputs[1], node->inputs[2],
                                node->out->grad);
}

// op_group_norm, and op_group_norm_silu when silu.
static Tensor *group_norm_op(const char *op, Tensor *x, int groups, Tensor *gamma, Tensor *beta, float eps, bool silu) {
    Tensor *in[3] = {x, gamma, beta};
    Device dev = ops_device(op, 3, in);
    GroupNormCtx c;
    group_norm_setup(op, x, groups, gamma, beta, eps, &c);
    Tensor *out = tensor_new_activation_of(dev, x->ndim, x->shape, 1, &x);
    ScratchScope scratch = scratch_begin(dev);
    float *y = tensor_out_f32(out);
    if (silu) group_norm_silu_forward(dev, &c, x, gamma, beta, y);
    else group_norm_forward_on(dev, &c, x, gamma, beta, y);
    tensor_store_f32(out, y);
    scratch_end(scratch);
    if (ag_needs_grad(3, in))
        *(GroupNormCtx *)ag_record(op, silu ? group_norm_silu_backward : group_norm_backward, out, 3, in, sizeof c) = c;
    return out;
}

Tensor *op_group_norm(Tensor *x, int groups, Tensor *gamma, Tensor *beta, float eps) {
    return group_norm_op("op_group_norm", x, groups, gamma, beta, eps, false);
}

Tensor *op_group_norm_silu(Tensor *x, int groups, Tensor *gamma, Tensor *beta, float eps) {
    return group_norm_op("op_group_norm_silu", x, groups, gamma, beta, eps, true);
}

// ---- layer norm -------------------------------------------------------------------------------------
typedef struct {
    int64_t rows, C;
    float *mean, *rstd;  // [rows]
} LayerNormCtx;

// y = layernorm(x) over the last dim, and per-row mean/rstd. Writes (=). x, gamma, beta: f32 views
// (gamma, beta may be NULL).
static void layer_norm_cpu_forward(LayerNormCtx *c, float eps, const float *x, const float *gamma, const float *beta,
                                   float *y) {
    int64_t C = c->C;
#pragma omp parallel for if (c->rows * C > OPS_PARALLEL_MIN)
    for (int64_t r = 0; r < c->rows; r++) {
        const float *xr = x + r * C;
        float *yr = y + r * C;
        row_stats(xr, C, eps, &c->mean[r], &c->rstd[r]);
        float m = c->mean[r], rs = c->rstd[r];
        for (int64_t k = 0; k < C; k++) {
            float v = (xr[k] - m) * rs;
            if (gamma) v *= gamma[k];
            if (beta) v += beta[k];
            yr[k] = v;
        }
    }
}

// Accumulates (+=) into dx, dgamma, dbeta. dgamma/dbeta are summed over rows in per-thread
// double buffers, then reduced, so threads never write the same channel.
static void layer_norm_backward(AgNode *node) {
    LayerNormCtx *c = node->ctx;
    Tensor *xt = node->inputs[0], *gt = node->inputs[1], *bt = node->inputs[2];
    const float *dy = node->out->grad;
    int64_t C = c->C;
    float *dx = xt->requires_grad ? tensor_grad(xt) : NULL;
    ScratchScope scratch = scratch_begin(xt->device);
    const float *x = tensor_f32(xt), *gamma = gt ? tensor_f32(gt) : NULL;
    if (xt->device == DEV_CUDA) {  // layer norm = group norm with N = rows, G = 1, S = 1
        cuda_group_norm_backward(x, gamma, c->mean, c->rstd, dy, dx, (gt && gt->requires_grad) ? tensor_grad(gt) : NULL,
                                 (bt && bt->requires_grad) ? tensor_grad(bt) : NULL, c->rows, C, 1, 1);
        scratch_end(scratch);
        return;
    }
    bool want_affine = (gt && gt->requires_grad) || (bt && bt->requires_grad);
    int nt = ops_max_threads();
    double *part = want_affine ? arena_calloc((size_t)nt * 2 * C * sizeof(double), "op_layer_norm partials") : NULL;
#pragma omp parallel if (c->rows * C > OPS_PARALLEL_MIN)
    {
        double *pg = part ? part + (size_t)ops_thread_id() * 2 * C : NULL, *pb = pg ? pg + C : NULL;
#pragma omp for
        for (int64_t r = 0; r < c->rows; r++) {
            const float *xr = x + r * C, *dyr = dy + r * C;
            float m = c->mean[r], rs = c->rstd[r];
            double s1 = 0, s2 = 0;
            for (int64_t k = 0; k < C; k++) {
                float xh = norm_xhat(xr[k], m, rs), d = dyr[k];
                float dxh = gamma ? d * gamma[k] : d;
                s1 += dxh;
                s2 += (double)dxh * xh;
                if (pg) {
                    pg[k] += (double)d * xh;
                    pb[k] += d;
                }
            }
            if (!dx) continue;
            float mean1 = (float)(s1 / C), mean2 = (float)(s2 / C);
            for (int64_t k = 0; k < C; k++) {
                float dxh = gamma ? dyr[k] * gamma[k] : dyr[k];
                dx[r * C + k] += norm_dx(rs, dxh, norm_xhat(xr[k], m, rs), mean1, mean2);
            }
        }
    }
    if (part) {
        float *dg = (gt && gt->requires_grad) ? tensor_grad(gt) : NULL;
        float *db = (bt && bt->requires_grad) ? tensor_grad(bt) : NULL;
        for (int64_t k = 0; k < C; k++) {
            double sg = 0, sb = 0;
            for (int t = 0; t < nt; t++) {
                sg += part[(size_t)t * 2 * C + k];
                sb += part[(size_t)t * 2 * C + C + k];
            }
            if (dg) dg[k] += (float)sg;
            if (db) db[k] += (float)sb;
        }
    }
    scratch_end(scratch);
}

Tensor *op_layer_norm(Tensor *x, Tensor *gamma, Tensor *beta, float eps) {
    const char *op = "op_layer_norm";
    Tensor *in[3] = {x, gamma, beta};
    Device dev = ops_device(op, 3, in);
    if (x->ndim < 1 || x->shape[x->ndim - 1] == 0) dod_fatal(op, "input %s has no (non-empty) last dim", shape_str(x));
    int64_t C = x->shape[x->ndim - 1];
    check_affine(op, x, gamma, "gamma", C);
    check_affine(op, x, beta, "beta", C);
    Tensor *out = tensor_new_activation_of(dev, x->ndim, x->shape, 1, &x);
    LayerNormCtx c = {x->numel / C, C, NULL, NULL};
    c.mean = arena_alloc_on(dev, (size_t)c.rows * sizeof(float), "op_layer_norm mean");
    c.rstd = arena_alloc_on(dev, (size_t)c.rows * sizeof(float), "op_layer_norm rstd");
    ScratchScope scratch = scratch_begin(dev);
    const float *x32 = tensor_f32(x), *g32 = gamma ? tensor_f32(gamma) : NULL, *b32 = beta ? tensor_f32(beta) : NULL;
    float *y = tensor_out_f32(out);
    if (dev == DEV_CUDA)  // layer norm = group norm with N = rows, G = 1, S = 1
        cuda_group_norm_forward(x32, g32, b32, y, c.mean, c.rstd, c.rows, C, 1, 1, eps);
    else
        layer_norm_cpu_forward(&c, eps, x32, g32, b32, y);
    tensor_store_f32(out, y);
    scratch_end(scratch);
    if (ag_needs_grad(3, in)) *(LayerNormCtx *)ag_record(op, layer_norm_backward, out, 3, in, sizeof c) = c;
    return out;
}
