// Elementwise arithmetic with NumPy/PyTorch broadcasting: op_add, op_sub, op_mul, op_div, plus the
// scalar forms op_scale and op_add_scalar, and the posterior sample op_posterior_sample.
//
// Broadcasting is planned once per call: both inputs are aligned from the right against the output
// shape, a broadcast (size-1) axis gets stride 0, then size-1 output axes are dropped and adjacent
// axes that are contiguous for both inputs are merged. [N, C, H, W] + [1, C, 1, 1] thus becomes a
// 2-d problem [N*C, H*W] with strides (1, 0) for the bias, and the kernels walk rows of the last
// merged axis. The backward of a broadcast input sums the output gradient over its broadcast axes.
#include "autograd/cuda/cuda_ops.h"
#include "autograd/ops_cpu_util.h"

#include <string.h>

// EwKind and ew_value: autograd/kernel_math.h (shared with elementwise.cu).

// A coalesced broadcast plan: output shape and per-input element strides (0 on broadcast axes).
typedef struct {
    int ndim;
    int64_t shape[TENSOR_MAX_DIMS];
    int64_t sa[TENSOR_MAX_DIMS], sb[TENSOR_MAX_DIMS], so[TENSOR_MAX_DIMS];  // a, b, output (contiguous)
    int64_t numel;
} Bcast;

// Output shape of broadcasting a with b (fatal naming op and both shapes when incompatible), and
// the coalesced plan.
static void bcast_plan(const char *op, const Tensor *a, const Tensor *b, int *out_ndim, int64_t *out_shape,
                       Bcast *p) {
    int nd = a->ndim > b->ndim ? a->ndim : b->ndim;
    int64_t as[TENSOR_MAX_DIMS], bs[TENSOR_MAX_DIMS];  // aligned shapes (leading 1s)
    for (int i = 0; i < nd; i++) {
        int ia = i - (nd - a->ndim), ib = i - (nd - b->ndim);
        as[i] = ia >= 0 ? a->shape[ia] : 1;
        bs[i] = ib >= 0 ? b->shape[ib] : 1;
        if (as[i] != bs[i] && as[i] != 1 && bs[i] != 1)
            dod_fatal(op, "shapes %s and %s do not broadcast (dim %d: %ld vs %ld)", shape_str(a), shape_str(b),
                      i - nd, (long)as[i], (long)bs[i]);
        out_shape[i] = as[i] == 1 ? bs[i] : as[i];
    }
    *out_ndim = nd;
    int64_t ast[TENSOR_MAX_DIMS], bst[TENSOR_MAX_DIMS];
    ops_strides(nd, as, ast);
    ops_strides(nd, bs, bst);
    // Drop size-1 output axes, then merge an axis into its outer neighbour when both inputs step
    // through them as one (stride_outer == stride_inner * size_inner; also true for 0 strides).
    memset(p, 0, sizeof *p);
    for (int i = 0; i < nd; i++) {
        if (out_shape[i] == 1) continue;
        int64_t sa = as[i] == 1 ? 0 : ast[i], sb = bs[i] == 1 ? 0 : bst[i];
        int k = p->ndim;
        if (k > 0 && p->sa[k - 1] == sa * out_shape[i] && p->sb[k - 1] == sb * out_shape[i]) {
            p->shape[k - 1] *= out_shape[i];
            p->sa[k - 1] = sa;
            p->sb[k - 1] = sb;
        } else {
            p->shape[k] = out_shape[i];
            p->sa[k] = sa;
            p->sb[k] = sb;
            p->ndim++;
        }
    }
    if (p->ndim == 0) {  // every axis has size 1: a single element
        p->ndim = 1;
        p->shape[0] = 1;
    }
    ops_strides(p->ndim, p->shape, p->so);
    p->numel = ops_prod(p->shape, 0, p->ndim);
}

// out = a (op) b under plan p, where a and b are addressed with strides sa/sb. Writes (=).
static void ew_cpu_forward(EwKind kind, const Bcast *p, const float *a, const int64_t *sa, const float *b,
                           const int64_t *sb, float *out) {
    int last = p->ndim - 1;
    int64_t inner = p->shape[last], rows = p->numel / (inner ? inner : 1);
    int64_t ia = sa[last], ib = sb[last];
#pragma omp parallel for if (p->numel > OPS_PARALLEL_MIN)
    for (int64_t r = 0; r < rows; r++) {
        int64_t rem = r, oa = 0, ob = 0;
        for (int d = last - 1; d >= 0; d--) {
            int64_t c = rem % p->shape[d];
            rem /= p->shape[d];
            oa += c * sa[d];
            ob += c * sb[d];
        }
        const float *pa = a + oa, *pb = b + ob;
        float *po = out + r * inner;
        switch (kind) {  // a loop per kind with the kind a constant: no branch inside
        case EW_ADD: for (int64_t k = 0; k < inner; k++) po[k] = ew_value(EW_ADD, pa[k * ia], pb[k * ib]); break;
        case EW_SUB: for (int64_t k = 0; k < inner; k++) po[k] = ew_value(EW_SUB, pa[k * ia], pb[k * ib]); break;
        case EW_MUL: for (int64_t k = 0; k < inner; k++) po[k] = ew_value(EW_MUL, pa[k * ia], pb[k * ib]); break;
        case EW_DIV: for (int64_t k = 0; k < inner; k++) po[k] = ew_value(EW_DIV, pa[k * ia], pb[k * ib]); break;
        }
    }
}

// grad_t += sign * (g summed over the axes where t is broadcast). g is output-shaped; st are t's
// strides in plan p (0 on broadcast axes). t is contiguous, so its element j enumerates the
// non-broadcast axes in order; each j sums its own disjoint set of g entries (no write races).
static void bcast_reduce_into(const Bcast *p, const float *g, const int64_t *st, float sign, float *grad_t,
                              int64_t t_numel) {
    int kept[TENSOR_MAX_DIMS], red[TENSOR_MAX_DIMS], nk = 0, nr = 0;
    for (int d = 0; d < p->ndim; d++) {
        if (st[d] != 0 || p->shape[d] == 1) kept[nk++] = d;
        else red[nr++] = d;
    }
    if (nr == 0) {  // t has the output's layout: plain accumulation
#pragma omp parallel for if (t_numel > OPS_PARALLEL_MIN)
        for (int64_t j = 0; j < t_numel; j++) grad_t[j] += sign * g[j];
        return;
    }
    int r_in = red[nr - 1];  // innermost reduced axis: the tight loop
    int64_t n_in = p->shape[r_in], s_in = p->so[r_in];
    int64_t n_outer = 1;
    for (int i = 0; i < nr - 1; i++) n_outer *= p->shape[red[i]];
#pragma omp parallel for if (p->numel > OPS_PARALLEL_MIN && t_numel > 1)
    for (int64_t j = 0; j < t_numel; j++) {
        int64_t rem = j, base = 0;
        for (int i = nk - 1; i >= 0; i--) {
            int d = kept[i];
            base += (rem % p->shape[d]) * p->so[d];
            rem /= p->shape[d];
        }
        double acc = 0;
        for (int64_t t = 0; t < n_outer; t++) {
            int64_t trem = t, off = base;
            for (int i = nr - 2; i >= 0; i--) {
                int d = red[i];
                off += (trem % p->shape[d]) * p->so[d];
                trem /= p->shape[d];
            }
            const float *pg = g + off;
            for (int64_t k = 0; k < n_in; k++) acc += pg[k * s_in];
        }
        grad_t[j] += sign * (float)acc;
    }
}

typedef struct {
    EwKind kind;
    Bcast plan;
    float scale_a;       // add / sub: the result is scale_a * a (op) b (1 but for op_scale_add_into)
} EwCtx;

// out = a (op) b under plan p on dev (=), the inputs addressed with strides sa / sb.
static void ew_forward_on(Device dev, EwKind kind, const Bcast *p, const float *a, const int64_t *sa, const float *b,
                          const int64_t *sb, float *out) {
    if (dev == DEV_CUDA) cuda_ew_binary(kind, p->ndim, p->shape, a, sa, b, sb, out);
    else ew_cpu_forward(kind, p, a, sa, b, sb, out);
}

// grad_t += sign * (g summed over t's broadcast axes) on dev.
static void bcast_reduce_on(Device dev, const Bcast *p, const float *g, const int64_t *st, float sign, float *grad_t,
                            int64_t t_numel) {
    if (dev == DEV_CUDA) cuda_bcast_reduce(p->ndim, p->shape, p->so, g, st, sign, grad_t, t_numel);
    else bcast_reduce_into(p, g, st, sign, grad_t, t_numel);
}

// Backward of a / b: grad_a += g / b; grad_b -= (g a / b) / b (each summed over its broadcast axes).
static void div_backward(Device dev, const Bcast *p, const float *g, Tensor *a, Tensor *b) {
    ScratchScope scratch = scratch_begin(dev);
    size_t bytes = (size_t)p->numel * sizeof(float);
    float *tmp = dev == DEV_CUDA ? cuda_arena_alloc(bytes, "op_div backward scratch")
                                 : arena_alloc(bytes, "op_div backward scratch");
    if (a->requires_grad) {
        ew_forward_on(dev, EW_DIV, p, g, p->so, tensor_f32(b), p->sb, tmp);
        bcast_reduce_on(dev, p, tmp, p->sa, 1.0f, tensor_grad(a), a->numel);
    }
    if (b->requires_grad) {
        ew_forward_on(dev, EW_MUL, p, g, p->so, tensor_f32(a), p->sa, tmp);
        ew_forward_on(dev, EW_DIV, p, tmp, p->so, tensor_f32(b), p->sb, tmp);
        ew_forward_on(dev, EW_DIV, p, tmp, p->so, tensor_f32(b), p->sb, tmp);
        bcast_reduce_on(dev, p, tmp, p->sb, -1.0f, tensor_grad(b), b->numel);
    }
    scratch_end(scratch);
}

// Backward of a (op) b: accumulates (+=) into the grads of the inputs that require grad.
static void ew_backward(AgNode *node) {
    EwCtx *c = node->ctx;
    Tensor *a = node->inputs[0], *b = node->inputs[1];
    const Bcast *p = &c->plan;
    const float *g = node->out->grad;
    if (c->kind == EW_DIV) {
        div_backward(node->out->device, p, g, a, b);
        return;
    }
    if (node->out->device == DEV_CUDA) {  // same structure, device kernels
        float sign_b = c->kind == EW_SUB ? -1.0f : 1.0f;
        if (c->kind != EW_MUL) {
            if (a->requires_grad)
                cuda_bcast_reduce(p->ndim, p->shape, p->so, g, p->sa, c->scale_a, tensor_grad(a), a->numel);
            if (b->requires_grad) cuda_bcast_reduce(p->ndim, p->shape, p->so, g, p->sb, sign_b, tensor_grad(b), b->numel);
            return;
        }
        float *ga = a->requires_grad ? tensor_grad(a) : NULL, *gb = b->requires_grad ? tensor_grad(b) : NULL;
        ScratchScope scratch = scratch_begin(DEV_CUDA);
        float *tmp = cuda_arena_alloc((size_t)p->numel * sizeof(float), "op_mul backward scratch");
        if (ga) {
            cuda_ew_binary(EW_MUL, p->ndim, p->shape, g, p->so, tensor_f32(b), p->sb, tmp);
            cuda_bcast_reduce(p->ndim, p->shape, p->so, tmp, p->sa, 1.0f, ga, a->numel);
        }
        if (gb) {
            cuda_ew_binary(EW_MUL, p->ndim, p->shape, g, p->so, tensor_f32(a), p->sa, tmp);
            cuda_bcast_reduce(p->ndim, p->shape, p->so, tmp, p->sb, 1.0f, gb, b->numel);
        }
        scratch_end(scratch);
        return;
    }
    if (c->kind == EW_MUL) {
        ScratchScope scratch = scratch_begin(DEV_CPU);
        float *tmp = arena_alloc((size_t)p->numel * sizeof(float), "op_mul backward scratch");
        if (a->requires_grad) {  // d/da = g * b, summed over a's broadcast axes
            ew_cpu_forward(EW_MUL, p, g, p->so, tensor_f32(b), p->sb, tmp);
            bcast_reduce_into(p, tmp, p->sa, 1.0f, tensor_grad(a), a->numel);
        }
        if (b->requires_grad) {
            ew_cpu_forward(EW_MUL, p, g, p->so, tensor_f32(a), p->sa, tmp);
            bcast_reduce_into(p, tmp, p->sb, 1.0f, tensor_grad(b), b->numel);
        }
        scratch_end(scratch);
        return;
    }
    if (a->requires_grad) bcast_reduce_into(p, g, p->sa, c->scale_a, tensor_grad(a), a->numel);
    if (b->requires_grad) bcast_reduce_into(p, g, p->sb, c->kind == EW_SUB ? -1.0f : 1.0f, tensor_grad(b), b->numel);
}

// y = s * x (=) over n elements on dev; y may be x.
static void scale_on(Device dev, const float *x, float s, float *y, int64_t n) {
    if (dev == DEV_CUDA) {
        cuda_affine(x, s, 0.0f, y, n);
        return;
    }
#pragma omp parallel for if (n > OPS_PARALLEL_MIN)
    for (int64_t i = 0; i < n; i++) y[i] = s * x[i];
}

// a (op) b into a new tensor, or, when into_a, scale_a * a (op) b into a's storage (a must have the
// result's shape; scale_a is 1 otherwise).
static Tensor *ew_binary(const char *op, EwKind kind, Tensor *a, Tensor *b, bool into_a, float scale_a) {
    Tensor *in[2] = {a, b};
    Device dev = ops_device(op, 2, in);
    int nd;
    int64_t shape[TENSOR_MAX_DIMS];
    Bcast plan;
    bcast_plan(op, a, b, &nd, shape, &plan);
    Tensor *out;
    if (into_a) {
        bool same = nd == a->ndim;
        for (int d = 0; same && d < nd; d++) same = shape[d] == a->shape[d];
        DOD_CHECK(same, op, "y %s + %s broadcasts to a larger shape than y's", shape_str(a), shape_str(b));
        out = ops_overwrite_alias(op, a);  // elementwise in place: out[i] reads only a[i]
    } else {
        out = tensor_new_activation_of(dev, nd, shape, 2, in);
    }
    ScratchScope scratch = scratch_begin(dev);
    float *o = into_a ? ops_inplace_f32(out) : tensor_out_f32(out);
    const float *af = into_a ? o : tensor_f32(a), *bf = tensor_f32(b);
    if (scale_a != 1.0f) scale_on(dev, o, scale_a, o, a->numel);  // into_a only: a's values, scaled in place first
    if (out->numel > 0 && dev == DEV_CUDA)
        cuda_ew_binary(kind, plan.ndim, plan.shape, af, plan.sa, bf, plan.sb, o);
    else if (out->numel > 0)
        ew_cpu_forward(kind, &plan, af, plan.sa, bf, plan.sb, o);
    tensor_store_f32(out, o);
    scratch_end(scratch);
    if (ag_needs_grad(2, in)) {
        EwCtx *c = ag_record(op, ew_backward, out, 2, in, sizeof(EwCtx));
        c->kind = kind;
        c->plan = plan;
        c->scale_a = scale_a;
    }
    return out;
}

Tensor *op_add(Tensor *a, Tensor *b) { return ew_binary("op_add", EW_ADD, a, b, false, 1.0f); }
Tensor *op_sub(Tensor *a, Tensor *b) { return ew_binary("op_sub", EW_SUB, a, b, false, 1.0f); }
Tensor *op_mul(Tensor *a, Tensor *b) { return ew_binary("op_mul", EW_MUL, a, b, false, 1.0f); }
Tensor *op_div(Tensor *a, Tensor *b) { return ew_binary("op_div", EW_DIV, a, b, false, 1.0f); }
Tensor *op_add_into(Tensor *y, Tensor *b) { return ew_binary("op_add_into", EW_ADD, y, b, true, 1.0f); }
Tensor *op_scale_add_into(Tensor *y, float s, Tensor *b) { return ew_binary("op_scale_add_into", EW_ADD, y, b, true, s); }

// ---- scalar forms ---------------------------------------------------------------------------------
typedef struct {
    float s;
} ScaleCtx;

// grad_x += s * g (op_scale) ...
static void scale_backward(AgNode *node) {
    ops_accumulate_scaled_grad(node->inputs[0], node->out->grad, ((ScaleCtx *)node->ctx)->s);
}

// ... and grad_x += g (op_add_scalar: the constant has no gradient; 1 * g is exact).
static void add_scalar_backward(AgNode *node) { ops_accumulate_scaled_grad(node->inputs[0], node->out->grad, 1.0f); }

static Tensor *scalar_op(const char *op, Tensor *x, float s, bool multiply) {
    Device dev = ops_device(op, 1, &x);
    Tensor *out = tensor_new_activation_of(dev, x->ndim, x->shape, 1, &x);
    ScratchScope scratch = scratch_begin(dev);
    const float *xf = tensor_f32(x);
    float *o = tensor_out_f32(out);
    if (multiply) {
        scale_on(dev, xf, s, o, x->numel);
    } else if (dev == DEV_CUDA) {
        cuda_affine(xf, 1.0f, s, o, x->numel);
    } else {
#pragma omp parallel for if (x->numel > OPS_PARALLEL_MIN)
        for (int64_t i = 0; i < x->numel; i++) o[i] = xf[i] + s;
    }
    tensor_store_f32(out, o);
    scratch_end(scratch);
    if (ag_needs_grad(1, &x)) {
        ScaleCtx *c = ag_record(op, multiply ? scale_backward : add_scalar_backward, out, 1, &x,
                                sizeof(ScaleCtx));
        c->s = s;
    }
    return out;
}

Tensor *op_scale(Tensor *x, float s) { return scalar_op("op_scale", x, s, true); }
Tensor *op_add_scalar(Tensor *x, float s) { return scalar_op("op_add_scalar", x, s, false); }

// ---- posterior sample ---------------------------------------------------------------------------------
// mean + exp(0.5 logvar) eps, per element (autograd/kernel_math.h's posterior_sample_*; CUDA:
// elementwise.cu). The backward reads logvar and eps again (widened in scratch when half).

// grad_mean += g; grad_logvar += g eps 0.5 exp(0.5 logvar); grad_eps += g exp(0.5 logvar) (each when
// that input requires grad).
static void posterior_backward(AgNode *node) {
    Tensor *mean = node->inputs[0], *logvar = node->inputs[1], *eps = node->inputs[2];
    const float *g = node->out->grad;
    int64_t n = node->out->numel;
    Device dev = node->out->device;
    float *gm = mean->requires_grad ? tensor_grad(mean) : NULL;
    float *gl = logvar->requires_grad ? tensor_grad(logvar) : NULL, *ge = eps->requires_grad ? tensor_grad(eps) : NULL;
    if (gm) {
        if (dev == DEV_CUDA) cuda_axpy(gm, g, 1.0f, n);
        else ops_accumulate(gm, g, n);
    }
    if (!gl && !ge) return;
    ScratchScope scratch = scratch_begin(dev);
    const float *lv = tensor_f32(logvar), *e = tensor_f32(eps);
    if (dev == DEV_CUDA) {
        cuda_posterior_sample_backward(g, lv, e, gl, ge, n);
    } else {
#pragma omp parallel for if (n > OPS_PARALLEL_MIN)
        for (int64_t i = 0; i < n; i++) {
            if (gl) gl[i] += posterior_sample_grad_logvar(g[i], lv[i], e[i]);
            if (ge) ge[i] += posterior_sample_grad_eps(g[i], lv[i]);
        }
    }
    scratch_end(scratch);
}

Tensor *op_posterior_sample(Tensor *mean, Tensor *logvar, Tensor *eps) {
    const char *op = "op_posterior_sample";
    Tensor *in[3] = {mean, logvar, eps};
    Device dev = ops_device(op, 3, in);
    DOD_CHECK(tensor_same_shape(mean, logvar) && tensor_same_shape(mean, eps), op,
              "mean %s, logvar %s and eps %s must have the same shape", shape_str(mean), shape_str(logvar),
              shape_str(eps));
    Tensor *out = tensor_new_activation_of(dev, mean->ndim, mean->shape, 3, in);
    int64_t n = out->numel;
    ScratchScope scratch = scratch_begin(dev);
    const float *m = tensor_f32(mean), *lv = tensor_f32(logvar), *e = tensor_f32(eps);
    float *z = tensor_out_f32(out);
    if (dev == DEV_CUDA) {
        cuda_posterior_sample_forward(m, lv, e, z, n);
    } else {
#pragma omp parallel for if (n > OPS_PARALLEL_MIN)
        for (int64_t i = 0; i < n; i++) z[i] = posterior_sample_value(m[i], lv[i], e[i]);
    }
    tensor_store_f32(out, z);
    scratch_end(scratch);
    if (ag_needs_grad(3, in)) ag_record(op, posterior_backward, out, 3, in, 0);
    return out;
}
