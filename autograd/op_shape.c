// Shape and indexing ops: op_concat, op_split, op_chunk, op_reshape, op_permute, op_pad2d,
// op_upsample_nearest2x, op_gather_hw, op_global_avg_pool, op_embedding, op_timestep_embedding.
//
// A tensor seen along axis d is [outer, size_d, inner] with outer = prod(shape[:d]) and
// inner = prod(shape[d+1:]); concat and split move contiguous blocks of size_d * inner per outer
// index. Every backward here is a pure gather/scatter of the output gradient (+=).
#include "autograd/cuda/cuda_ops.h"
#include "autograd/ops_cpu_util.h"
#include "autograd/ops_fused.h"

#include <math.h>
#include <string.h>

// ---- concat -------------------------------------------------------------------------------------
typedef struct {
    int64_t outer, inner, total;  // total: the output's size along the concat axis
    int dim;
} ConcatCtx;

// Copy block rows of each input into out (=). offsets along the axis are cumulative sizes.
static void concat_cpu_forward(const float *const *xs, const int64_t *sizes, int n, const ConcatCtx *c, float *out) {
    int64_t row = c->total * c->inner;
#pragma omp parallel for if (c->outer * row > OPS_PARALLEL_MIN)
    for (int64_t o = 0; o < c->outer; o++) {
        int64_t off = 0;
        for (int i = 0; i < n; i++) {
            int64_t len = sizes[i] * c->inner;
            memcpy(out + o * row + off, xs[i] + o * len, (size_t)len * sizeof(float));
            off += len;
        }
    }
}

// The ConcatCtx of xs (already checked to concatenate) along axis d.
static ConcatCtx concat_ctx(Tensor *const *xs, int n, int d) {
    ConcatCtx c = {ops_prod(xs[0]->shape, 0, d), ops_prod(xs[0]->shape, d + 1, xs[0]->ndim), 0, d};
    for (int i = 0; i < n; i++) c.total += xs[i]->shape[d];
    return c;
}

void concat_forward_into(Device dev, Tensor *const *xs, int n, int d, float *out) {
    ConcatCtx c = concat_ctx(xs, n, d);
    const float **views = arena_alloc(sizeof(float *) * n, "op_concat views");
    int64_t *sizes = arena_alloc(sizeof(int64_t) * n, "op_concat sizes");
    for (int i = 0; i < n; i++) {
        views[i] = tensor_f32(xs[i]);
        sizes[i] = xs[i]->shape[d];
    }
    if (dev == DEV_CUDA) {
        int64_t row = c.total * c.inner, off = 0;
        for (int i = 0; i < n; i++) {
            int64_t len = sizes[i] * c.inner;
            cuda_strided_copy(2, (int64_t[]){c.outer, len}, out + off, (int64_t[]){row, 1}, views[i],
                              (int64_t[]){len, 1}, 1.0f, false);
            off += len;
        }
    } else {
        concat_cpu_forward(views, sizes, n, &c, out);
    }
}

void concat_backward_dy(Tensor *const *xs, int n, int d, const float *g) {
    ConcatCtx c = concat_ctx(xs, n, d);
    int64_t row = c.total * c.inner, off = 0;
    for (int i = 0; i < n; i++) {
        Tensor *x = xs[i];
        int64_t len = x->shape[d] * c.inner;
        if (x->requires_grad && x->device == DEV_CUDA) {
            cuda_strided_copy(2, (int64_t[]){c.outer, len}, tensor_grad(x), (int64_t[]){len, 1}, g + off,
                              (int64_t[]){row, 1}, 1.0f, true);
        } else if (x->requires_grad) {
            float *gx = tensor_grad(x);
#pragma omp parallel for if (x->numel > OPS_PARALLEL_MIN)
            for (int64_t o = 0; o < c.outer; o++)
                for (int64_t k = 0; k < len; k++) gx[o * len + k] += g[o * row + off + k];
        }
        off += len;
    }
}

static void concat_backward(AgNode *node) {
    concat_backward_dy(node->inputs, node->n_inputs, *(const int *)node->ctx, node->out->grad);
}

Tensor *op_concat(Tensor *const *xs, int n, int dim) {
    const char *op = "op_concat";
    if (n < 1) dod_fatal(op, "needs at least one tensor, got %d", n);
    Device dev = ops_device(op, n, xs);
    // The tape records at most AG_MAX_INPUTS inputs per node: concatenate longer lists in stages.
    if (n > AG_MAX_INPUTS && ag_needs_grad(n, xs)) {
        Tensor *rest[1 + 64];
        DOD_CHECK(n - AG_MAX_INPUTS + 1 <= 65, op, "%d tensors is more than this op supports (72)", n);
        rest[0] = op_concat(xs, AG_MAX_INPUTS, dim);
        for (int i = AG_MAX_INPUTS; i < n; i++) rest[1 + i - AG_MAX_INPUTS] = xs[i];
        return op_concat(rest, n - AG_MAX_INPUTS + 1, dim);
    }
    const Tensor *x0 = xs[0];
    int d = ops_axis(op, dim, x0);
    int64_t total = 0;
    for (int i = 0; i < n; i++) {
        const Tensor *x = xs[i];
        bool ok = x->ndim == x0->ndim;
        for (int k = 0; ok && k < x0->ndim; k++)
            if (k != d && x->shape[k] != x0->shape[k]) ok = false;
        if (!ok)
            dod_fatal(op, "tensor %d has shape %s, incompatible with tensor 0's %s along dim %d", i, shape_str(x),
                      shape_str(x0), d);
        total += x->shape[d];
    }
    int64_t shape[TENSOR_MAX_DIMS];
    memcpy(shape, x0->shape, sizeof shape);
    shape[d] = total;
    Tensor *out = tensor_new_activation_of(dev, x0->ndim, shape, n, xs);
    ScratchScope scratch = scratch_begin(dev);
    float *y = tensor_out_f32(out);
    concat_forward_into(dev, xs, n, d, y);
    tensor_store_f32(out, y);
    scratch_end(scratch);
    if (ag_needs_grad(n, xs)) *(int *)ag_record(op, concat_backward, out, n, xs, sizeof d) = d;  // the axis
    return out;
}

// ---- split / chunk --------------------------------------------------------------------------------
typedef struct {
    int64_t outer, inner, total, start, size;  // this piece covers [start, start + size) of total
} SplitCtx;

// piece = x[..., start:start+size, ...] along the axis. Writes (=).
static void split_cpu_forward(const float *x, const SplitCtx *c, float *out) {
    int64_t len = c->size * c->inner, row = c->total * c->inner;
#pragma omp parallel for if (c->outer * len > OPS_PARALLEL_MIN)
    for (int64_t o = 0; o < c->outer; o++)
        memcpy(out + o * len, x + o * row + c->start * c->inner, (size_t)len * sizeof(float));
}

// grad_x[slice] += grad_piece.
static void split_backward(AgNode *node) {
    const SplitCtx *c = node->ctx;
    float *gx = tensor_grad(node->inputs[0]);
    const float *g = node->out->grad;
    int64_t len = c->size * c->inner, row = c->total * c->inner;
    if (node->out->device == DEV_CUDA) {
        cuda_strided_copy(2, (int64_t[]){c->outer, len}, gx + c->start * c->inner, (int64_t[]){row, 1}, g,
                          (int64_t[]){len, 1}, 1.0f, true);
        return;
    }
#pragma omp parallel for if (c->outer * len > OPS_PARALLEL_MIN)
    for (int64_t o = 0; o < c->outer; o++)
        for (int64_t k = 0; k < len; k++) gx[o * row + c->start * c->inner + k] += g[o * len + k];
}

void op_split(Tensor *x, int dim, int n, const int64_t *sizes, Tensor **out) {
    const char *op = "op_split";
    Device dev = ops_device(op, 1, &x);
    int d = ops_axis(op, dim, x);
    int64_t sum = 0;
    for (int i = 0; i < n; i++) {
        if (sizes[i] < 0) dod_fatal(op, "piece %d has negative size %ld (input %s)", i, (long)sizes[i], shape_str(x));
        sum += sizes[i];
    }
    if (n < 1 || sum != x->shape[d])
        dod_fatal(op, "%d pieces summing to %ld do not split dim %d of input %s", n, (long)sum, d, shape_str(x));
    for (int i = 0; i < n; i++) {  // every piece before the scratch scope
        int64_t shape[TENSOR_MAX_DIMS];
        memcpy(shape, x->shape, sizeof shape);
        shape[d] = sizes[i];
        out[i] = tensor_new_activation_of(dev, x->ndim, shape, 1, &x);
    }
    SplitCtx c = {ops_prod(x->shape, 0, d), ops_prod(x->shape, d + 1, x->ndim), x->shape[d], 0, 0};
    ScratchScope scratch = scratch_begin(dev);
    const float *xf = tensor_f32(x);
    for (int i = 0; i < n; i++) {
        c.size = sizes[i];
        float *y = tensor_out_f32(out[i]);
        if (dev == DEV_CUDA) {
            int64_t len = c.size * c.inner;
            cuda_strided_copy(2, (int64_t[]){c.outer, len}, y, (int64_t[]){len, 1}, xf + c.start * c.inner,
                              (int64_t[]){c.total * c.inner, 1}, 1.0f, false);
        } else {
            split_cpu_forward(xf, &c, y);
        }
        tensor_store_f32(out[i], y);
        c.start += sizes[i];
    }
    scratch_end(scratch);
    if (!ag_needs_grad(1, &x)) return;
    c.start = 0;
    for (int i = 0; i < n; i++) {
        c.size = sizes[i];
        *(SplitCtx *)ag_record(op, split_backward, out[i], 1, &x, sizeof c) = c;
        c.start += sizes[i];
    }
}

void op_chunk(Tensor *x, int n, int dim, Tensor **out) {
    int d = ops_axis("op_chunk", dim, x);
    if (n < 1 || x->shape[d] % n != 0)
        dod_fatal("op_chunk", "dim %d of input %s does not split into %d equal pieces", d, shape_str(x), n);
    int64_t sizes[256];
    DOD_CHECK(n <= 256, "op_chunk", "%d pieces is more than 256 (input %s)", n, shape_str(x));
    for (int i = 0; i < n; i++) sizes[i] = x->shape[d] / n;
    op_split(x, d, n, sizes, out);
}

// ---- reshape --------------------------------------------------------------------------------------
// grad_x += grad_out (same element order).
static void reshape_backward(AgNode *node) {
    Tensor *x = node->inputs[0];
    if (x->device == DEV_CUDA) cuda_axpy(tensor_grad(x), node->out->grad, 1.0f, x->numel);
    else ops_accumulate(tensor_grad(x), node->out->grad, x->numel);
}

Tensor *op_reshape(Tensor *x, int ndim, const int64_t *shape) {
    const char *op = "op_reshape";  // any device: the output shares x's storage
    if (x->overwritten)  // as ops_device refuses it for every other op
        dod_fatal(op, "input %s was overwritten by an in-place op (op_add_into, op_add_projection_into, ...): "
                  "use the tensor that op returned", shape_str(x));
    if (ndim < 0 || ndim > TENSOR_MAX_DIMS) dod_fatal(op, "ndim %d outside 0..%d (input %s)", ndim, TENSOR_MAX_DIMS, shape_str(x));
    int64_t s[TENSOR_MAX_DIMS], known = 1;
    int infer = -1;
    for (int i = 0; i < ndim; i++) {
        s[i] = shape[i];
        if (s[i] == -1 && infer < 0) infer = i;
        else if (s[i] < 0) dod_fatal(op, "bad size %ld at dim %d (one -1 allowed; input %s)", (long)s[i], i, shape_str(x));
        else known *= s[i];
    }
    if (infer >= 0) {
        if (known == 0 || x->numel % known != 0)
            dod_fatal(op, "cannot infer dim %d: %ld elements of input %s are not a multiple of %ld", infer,
                      (long)x->numel, shape_str(x), (long)known);
        s[infer] = x->numel / known;
        known *= s[infer];
    }
    if (known != x->numel) {
        Tensor tmp = {.ndim = ndim};
        memcpy(tmp.shape, s, sizeof(int64_t) * ndim);
        dod_fatal(op, "input %s has %ld elements, target shape %s has %ld", shape_str(x), (long)x->numel,
                  shape_str(&tmp), (long)known);
    }
    // A new header over the same storage (dtype kept: a half-precision input stays half here).
    Tensor *out = arena_calloc(sizeof(Tensor), "op_reshape header");
    out->ndim = ndim;
    memcpy(out->shape, s, sizeof(int64_t) * ndim);
    out->numel = x->numel;
    out->dtype = x->dtype;
    out->device = x->device;
    out->data = x->data;
    out->view_of = tensor_storage_owner(x);
    if (ag_needs_grad(1, &x)) ag_record(op, reshape_backward, out, 1, &x, 0);
    return out;
}

// ---- permute --------------------------------------------------------------------------------------
typedef struct {
    int ndim;
    int64_t shape[TENSOR_MAX_DIMS];     // output shape
    int64_t in_stride[TENSOR_MAX_DIMS]; // input stride of each output axis
} PermuteCtx;

// Visits every output element with its input offset; forward gathers, backward scatters (+=).
// Each output element maps to a distinct input element, so both directions are race-free.
static void permute_cpu_apply(const PermuteCtx *c, float *xbuf, float *ybuf, bool backward) {
    int last = c->ndim - 1;
    int64_t inner = c->shape[last], numel = ops_prod(c->shape, 0, c->ndim);
    int64_t rows = inner ? numel / inner : 0, is = c->in_stride[last];
#pragma omp parallel for if (numel > OPS_PARALLEL_MIN)
    for (int64_t r = 0; r < rows; r++) {
        int64_t rem = r, off = 0;
        for (int d = last - 1; d >= 0; d--) {
            off += (rem % c->shape[d]) * c->in_stride[d];
            rem /= c->shape[d];
        }
        float *y = ybuf + r * inner, *x = xbuf + off;
        if (backward) for (int64_t k = 0; k < inner; k++) x[k * is] += y[k];
        else for (int64_t k = 0; k < inner; k++) y[k] = x[k * is];
    }
}

static void permute_backward(AgNode *node) {
    const PermuteCtx *c = node->ctx;
    if (node->out->device == DEV_CUDA) {
        int64_t os[TENSOR_MAX_DIMS];
        ops_strides(c->ndim, c->shape, os);
        cuda_strided_copy(c->ndim, c->shape, tensor_grad(node->inputs[0]), c->in_stride, node->out->grad, os, 1.0f, true);
        return;
    }
    permute_cpu_apply(c, tensor_grad(node->inputs[0]), node->out->grad, true);
}

Tensor *op_permute(Tensor *x, const int *perm) {
    const char *op = "op_permute";
    Device dev = ops_device(op, 1, &x);
    if (x->ndim < 1) dod_fatal(op, "input %s has no dims to permute", shape_str(x));
    PermuteCtx c = {.ndim = x->ndim};
    int64_t xs[TENSOR_MAX_DIMS];
    ops_strides(x->ndim, x->shape, xs);
    bool seen[TENSOR_MAX_DIMS] = {0};
    for (int i = 0; i < x->ndim; i++) {
        if (perm[i] < 0 || perm[i] >= x->ndim || seen[perm[i]])
            dod_fatal(op, "entry %d (%d) of the permutation is not a permutation of 0..%d (input %s)", i, perm[i],
                      x->ndim - 1, shape_str(x));
        seen[perm[i]] = true;
        c.shape[i] = x->shape[perm[i]];
        c.in_stride[i] = xs[perm[i]];
    }
    Tensor *out = tensor_new_activation_of(dev, x->ndim, c.shape, 1, &x);
    ScratchScope scratch = scratch_begin(dev);
    float *y = tensor_out_f32(out);
    if (dev == DEV_CUDA) {
        int64_t os[TENSOR_MAX_DIMS];
        ops_strides(c.ndim, c.shape, os);
        cuda_strided_copy(c.ndim, c.shape, y, os, tensor_f32(x), c.in_stride, 1.0f, false);
    } else {
        permute_cpu_apply(&c, (float *)tensor_f32(x), y, false);
    }
    tensor_store_f32(out, y);
    scratch_end(scratch);
    if (ag_needs_grad(1, &x)) *(PermuteCtx *)ag_record(op, permute_backward, out, 1, &x, sizeof c) = c;
    return out;
}

// ---- pad2d ----------------------------------------------------------------------------------------
typedef struct {
    int left, top;
} Pad2dCtx;

// grad_x += the interior window of grad_out.
static void pad2d_backward(AgNode *node) {
    const Pad2dCtx *c = node->ctx;
    Tensor *x = node->inputs[0], *y = node->out;
    int64_t planes = x->shape[0] * x->shape[1], H = x->shape[2], W = x->shape[3], Ho = y->shape[2], Wo = y->shape[3];
    float *gx = tensor_grad(x);
    const float *g = y->grad;
    if (x->device == DEV_CUDA) {
        cuda_strided_copy(3, (int64_t[]){planes, H, W}, gx, (int64_t[]){H * W, W, 1}, g + c->top * Wo + c->left,
                          (int64_t[]){Ho * Wo, Wo, 1}, 1.0f, true);
        return;
    }
#pragma omp parallel for if (x->numel > OPS_PARALLEL_MIN)
    for (int64_t p = 0; p < planes; p++)
        for (int64_t h = 0; h < H; h++)
            for (int64_t w = 0; w < W; w++) gx[(p * H + h) * W + w] += g[(p * Ho + h + c->top) * Wo + w + c->left];
}

Tensor *op_pad2d(Tensor *x, int left, int right, int top, int bottom) {
    const char *op = "op_pad2d";
    Device dev = ops_device(op, 1, &x);
    if (x->ndim != 4) dod_fatal(op, "input %s must be [N, C, H, W]", shape_str(x));
    if (left < 0 || right < 0 || top < 0 || bottom < 0)
        dod_fatal(op, "negative padding (%d, %d, %d, %d) for input %s", left, right, top, bottom, shape_str(x));
    int64_t planes = x->shape[0] * x->shape[1], H = x->shape[2], W = x->shape[3];
    int64_t Ho = H + top + bottom, Wo = W + left + right;
    Tensor *out = tensor_new_activation_of(dev, 4, (int64_t[]){x->shape[0], x->shape[1], Ho, Wo}, 1, &x);
    ScratchScope scratch = scratch_begin(dev);
    const float *xf = tensor_f32(x);
    float *y = tensor_out_f32(out);
    if (dev == DEV_CUDA) {
        cuda_memset_zero(y, (size_t)out->numel * sizeof(float));
        cuda_strided_copy(3, (int64_t[]){planes, H, W}, y + top * Wo + left, (int64_t[]){Ho * Wo, Wo, 1}, xf,
                          (int64_t[]){H * W, W, 1}, 1.0f, false);
    } else {
#pragma omp parallel for if (out->numel > OPS_PARALLEL_MIN)
        for (int64_t p = 0; p < planes; p++) {
            float *yp = y + p * Ho * Wo;
            memset(yp, 0, sizeof(float) * Ho * Wo);
            for (int64_t h = 0; h < H; h++) memcpy(yp + (h + top) * Wo + left, xf + (p * H + h) * W, sizeof(float) * W);
        }
    }
    tensor_store_f32(out, y);
    scratch_end(scratch);
    if (ag_needs_grad(1, &x)) {
        Pad2dCtx *c = ag_record(op, pad2d_backward, out, 1, &x, sizeof(Pad2dCtx));
        c->left = left;
        c->top = top;
    }
    return out;
}

// ---- nearest 2x upsampling ------------------------------------------------------------------------
void upsample2x_backward_dy(Tensor *x, const float *g) {
    if (!x->requires_grad) return;
    int64_t planes = x->shape[0] * x->shape[1], H = x->shape[2], W = x->shape[3], Wo = 2 * W;
    float *gx = tensor_grad(x);
    if (x->device == DEV_CUDA) {
        cuda_upsample2x_backward(g, gx, planes, H, W);
        return;
    }
#pragma omp parallel for if (x->numel > OPS_PARALLEL_MIN)
    for (int64_t p = 0; p < planes; p++)
        for (int64_t h = 0; h < H; h++) {
            const float *g0 = g + (p * 2 * H + 2 * h) * Wo, *g1 = g0 + Wo;
            for (int64_t w = 0; w < W; w++) gx[(p * H + h) * W + w] += upsample2x_grad(g0, g1, w);
        }
}

static void upsample_backward(AgNode *node) { upsample2x_backward_dy(node->inputs[0], node->out->grad); }

void upsample2x_forward_into(Device dev, const Tensor *x, float *y) {
    int64_t planes = x->shape[0] * x->shape[1], H = x->shape[2], W = x->shape[3], Wo = 2 * W;
    ScratchScope scratch = scratch_begin(dev);
    const float *xf = tensor_f32(x);
    if (dev == DEV_CUDA) {  // out[p, 2h + a, 2w + b] = x[p, h, w]
        cuda_strided_copy(5, (int64_t[]){planes, H, 2, W, 2}, y, (int64_t[]){4 * H * W, 4 * W, 2 * W, 2, 1}, xf,
                          (int64_t[]){H * W, W, 0, 1, 0}, 1.0f, false);
    } else {
#pragma omp parallel for if (4 * x->numel > OPS_PARALLEL_MIN)
        for (int64_t p = 0; p < planes; p++)
            for (int64_t h = 0; h < H; h++) {
                float *y0 = y + (p * 2 * H + 2 * h) * Wo;
                const float *xr = xf + (p * H + h) * W;
                for (int64_t w = 0; w < W; w++) y0[2 * w] = y0[2 * w + 1] = xr[w];
                memcpy(y0 + Wo, y0, sizeof(float) * Wo);
            }
    }
    scratch_end(scratch);
}

Tensor *op_upsample_nearest2x(Tensor *x) {
    const char *op = "op_upsample_nearest2x";
    Device dev = ops_device(op, 1, &x);
    if (x->ndim != 4) dod_fatal(op, "input %s must be [N, C, H, W]", shape_str(x));
    Tensor *out = tensor_new_activation_of(dev, 4, (int64_t[]){x->shape[0], x->shape[1], 2 * x->shape[2], 2 * x->shape[3]}, 1, &x);
    ScratchScope scratch = scratch_begin(dev);
    float *y = tensor_out_f32(out);
    upsample2x_forward_into(dev, x, y);
    tensor_store_f32(out, y);
    scratch_end(scratch);
    if (ag_needs_grad(1, &x)) ag_record(op, upsample_backward, out, 1, &x, 0);
    return out;
}

// ---- gather along H and W --------------------------------------------------------------------------
// y[p, i, j] = x[p, src_y[i], src_x[j]] per plane p (autograd/kernel_math.h's gather_hw_value /
// gather_hw_grad, which the CUDA kernels in shape.cu run too).
typedef struct {
    const int64_t *src_y, *src_x;  // arena copies
} GatherHwCtx;

// The inverse of a source index src [n] (entries in [0, len)), written (=): the i with src[i] == v are
// list[start[v] .. start[v + 1]) in increasing order (a stable counting sort); start has len + 1 entries.
static void gather_hw_inverse(const int64_t *src, int64_t n, int64_t len, int64_t *start, int64_t *list) {
    memset(start, 0, sizeof(int64_t) * (size_t)(len + 1));
    for (int64_t i = 0; i < n; i++) start[src[i] + 1]++;
    for (int64_t v = 0; v < len; v++) start[v + 1] += start[v];
    int64_t *fill = arena_alloc(sizeof(int64_t) * (size_t)(len ? len : 1), "op_gather_hw inverse cursor");
    memcpy(fill, start, sizeof(int64_t) * (size_t)len);
    for (int64_t i = 0; i < n; i++) list[fill[src[i]]++] = i;
}

// grad_x += the output gradient gathered back: each input element sums the outputs that read it, in
// row-major output order (the order a scatter loop over the output would add them in).
static void gather_hw_backward(AgNode *node) {
    const GatherHwCtx *c = node->ctx;
    Tensor *x = node->inputs[0], *y = node->out;
    int64_t planes = x->shape[0] * x->shape[1], H = x->shape[2], W = x->shape[3], Ho = y->shape[2], Wo = y->shape[3];
    float *gx = tensor_grad(x);
    const float *g = y->grad;
    ScratchScope host = scratch_begin(DEV_CPU);
    int64_t n_idx = (H + 1) + Ho + (W + 1) + Wo;
    int64_t *inv = arena_alloc(sizeof(int64_t) * (size_t)n_idx, "op_gather_hw inverse");
    int64_t *row_start = inv, *rows = row_start + H + 1, *col_start = rows + Ho, *cols = col_start + W + 1;
    gather_hw_inverse(c->src_y, Ho, H, row_start, rows);
    gather_hw_inverse(c->src_x, Wo, W, col_start, cols);
    if (x->device == DEV_CUDA) {
        ScratchScope dev = scratch_begin(DEV_CUDA);
        int64_t *inv_dev = arena_alloc_on(DEV_CUDA, sizeof(int64_t) * (size_t)n_idx, "op_gather_hw inverse");
        device_copy(inv_dev, DEV_CUDA, inv, DEV_CPU, sizeof(int64_t) * (size_t)n_idx);
        cuda_gather_hw_backward(g, gx, planes, H, W, Ho, Wo, inv_dev, inv_dev + (rows - inv), inv_dev + (col_start - inv),
                                inv_dev + (cols - inv));
        scratch_end(dev);
    } else {
#pragma omp parallel for if (x->numel > OPS_PARALLEL_MIN)
        for (int64_t k = 0; k < x->numel; k++)
            gx[k] = gather_hw_grad(gx[k], g, k, H, W, Ho, Wo, row_start, rows, col_start, cols);
    }
    scratch_end(host);
}

Tensor *op_gather_hw(Tensor *x, const int64_t *src_y, int64_t out_h, const int64_t *src_x, int64_t out_w) {
    const char *op = "op_gather_hw";
    Device dev = ops_device(op, 1, &x);
    DOD_CHECK(x->ndim == 4 && out_h > 0 && out_w > 0, op, "input %s to size %ldx%ld: need [N, C, H, W] and a positive size",
              shape_str(x), (long)out_h, (long)out_w);
    int64_t planes = x->shape[0] * x->shape[1], H = x->shape[2], W = x->shape[3];
    for (int64_t i = 0; i < out_h; i++)
        DOD_CHECK(src_y[i] >= 0 && src_y[i] < H, op, "row index %ld of output row %ld outside input %s", (long)src_y[i],
                  (long)i, shape_str(x));
    for (int64_t j = 0; j < out_w; j++)
        DOD_CHECK(src_x[j] >= 0 && src_x[j] < W, op, "column index %ld of output column %ld outside input %s",
                  (long)src_x[j], (long)j, shape_str(x));
    Tensor *out = tensor_new_activation_of(dev, 4, (int64_t[]){x->shape[0], x->shape[1], out_h, out_w}, 1, &x);
    int64_t *src = NULL;  // the indices, kept (arena) when backward needs them
    if (ag_needs_grad(1, &x)) {
        src = arena_alloc(sizeof(int64_t) * (size_t)(out_h + out_w), "op_gather_hw indices");
        memcpy(src, src_y, sizeof(int64_t) * (size_t)out_h);
        memcpy(src + out_h, src_x, sizeof(int64_t) * (size_t)out_w);
    }
    ScratchScope scratch = scratch_begin(dev);
    const float *xf = tensor_f32(x);
    float *y = tensor_out_f32(out);
    if (dev == DEV_CUDA) {
        int64_t *idx = arena_alloc_on(DEV_CUDA, sizeof(int64_t) * (size_t)(out_h + out_w), "op_gather_hw indices");
        device_copy(idx, DEV_CUDA, src_y, DEV_CPU, sizeof(int64_t) * (size_t)out_h);
        device_copy(idx + out_h, DEV_CUDA, src_x, DEV_CPU, sizeof(int64_t) * (size_t)out_w);
        cuda_gather_hw_forward(xf, y, planes, H, W, idx, out_h, idx + out_h, out_w);
    } else {
#pragma omp parallel for if (out->numel > OPS_PARALLEL_MIN)
        for (int64_t k = 0; k < out->numel; k++) y[k] = gather_hw_value(xf, k, H, W, src_y, out_h, src_x, out_w);
    }
    tensor_store_f32(out, y);
    scratch_end(scratch);
    if (src) {
        GatherHwCtx *c = ag_record(op, gather_hw_backward, out, 1, &x, sizeof(GatherHwCtx));
        c->src_y = src;
        c->src_x = src + out_h;
    }
    return out;
}

// ---- global average pooling -------------------------------------------------------------------------
// grad_x[n, c, :, :] += grad_out[n, c] / (H * W).
static void gap_backward(AgNode *node) {
    Tensor *x = node->inputs[0];
    int64_t planes = x->shape[0] * x->shape[1], S = x->shape[2] * x->shape[3];
    float *gx = tensor_grad(x);
    const float *g = node->out->grad;
    if (x->device == DEV_CUDA) {
        cuda_strided_copy(2, (int64_t[]){planes, S}, gx, (int64_t[]){S, 1}, g, (int64_t[]){1, 0}, 1.0f / (float)S, true);
        return;
    }
#pragma omp parallel for if (x->numel > OPS_PARALLEL_MIN)
    for (int64_t p = 0; p < planes; p++) {
        float v = g[p] / (float)S;
        for (int64_t s = 0; s < S; s++) gx[p * S + s] += v;
    }
}

Tensor *op_global_avg_pool(Tensor *x) {
    const char *op = "op_global_avg_pool";
    Device dev = ops_device(op, 1, &x);
    if (x->ndim != 4 || x->shape[2] * x->shape[3] == 0)
        dod_fatal(op, "input %s must be [N, C, H, W] with H, W > 0", shape_str(x));
    int64_t planes = x->shape[0] * x->shape[1], S = x->shape[2] * x->shape[3];
    Tensor *out = tensor_new_on(dev, 2, (int64_t[]){x->shape[0], x->shape[1]}, DT_F32);  // f32: plane means
    ScratchScope scratch = scratch_begin(dev);
    const float *xf = tensor_f32(x);
    float *y = tensor_data_f32(out);
    if (dev == DEV_CUDA) {
        cuda_plane_means(xf, y, planes, S);
    } else {
#pragma omp parallel for if (x->numel > OPS_PARALLEL_MIN)
        for (int64_t p = 0; p < planes; p++) {
            double s = 0;
            for (int64_t k = 0; k < S; k++) s += xf[p * S + k];
            y[p] = (float)(s / S);
        }
    }
    scratch_end(scratch);
    if (ag_needs_grad(1, &x)) ag_record(op, gap_backward, out, 1, &x, 0);
    return out;
}

// ---- embedding lookup -----------------------------------------------------------------------------
typedef struct {
    const int64_t *ids;      // arena copy
    const int64_t *ids_dev;  // device copy (CUDA tables)
    int n;
} EmbeddingCtx;

// grad_table[ids[i]] += grad_out[i] (serial over i: ids may repeat).
static void embedding_backward(AgNode *node) {
    const EmbeddingCtx *c = node->ctx;
    Tensor *table = node->inputs[0];
    int64_t D = table->shape[1];
    float *gt = tensor_grad(table);
    const float *g = node->out->grad;
    if (table->device == DEV_CUDA) {
        cuda_embedding_backward(g, c->ids_dev, gt, c->n, D);
        return;
    }
    for (int i = 0; i < c->n; i++)
        for (int64_t k = 0; k < D; k++) gt[c->ids[i] * D + k] += g[(int64_t)i * D + k];
}

Tensor *op_embedding(Tensor *table, const int64_t *ids, int n) {
    const char *op = "op_embedding";
    Device dev = ops_device(op, 1, &table);
    if (table->ndim != 2) dod_fatal(op, "table %s must be [V, D]", shape_str(table));
    if (n < 0) dod_fatal(op, "negative id count %d (table %s)", n, shape_str(table));
    int64_t V = table->shape[0], D = table->shape[1];
    for (int i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= V)
            dod_fatal(op, "id %d is %ld, outside [0, %ld) of table %s", i, (long)ids[i], (long)V, shape_str(table));
    Tensor *out = tensor_new_on(dev, 2, (int64_t[]){n, D}, DT_F32);  // f32: rows of a (small) table
    float *y = tensor_data_f32(out);
    int64_t *ids_dev = NULL;
    if (dev == DEV_CUDA) {  // before the scratch scope: backward reads it
        ids_dev = cuda_arena_alloc(sizeof(int64_t) * (n ? n : 1), "op_embedding ids");
        cuda_copy_h2d(ids_dev, ids, sizeof(int64_t) * n);
    }
    ScratchScope scratch = scratch_begin(dev);
    const float *tf = tensor_f32(table);
    if (dev == DEV_CUDA) cuda_embedding_forward(tf, ids_dev, y, n, D);
    else
        for (int i = 0; i < n; i++) memcpy(y + (int64_t)i * D, tf + ids[i] * D, sizeof(float) * D);
    scratch_end(scratch);
    if (ag_needs_grad(1, &table)) {
        EmbeddingCtx *c = ag_record(op, embedding_backward, out, 1, &table, sizeof(EmbeddingCtx));
        int64_t *copy = arena_alloc(sizeof(int64_t) * (n ? n : 1), "op_embedding ids");
        memcpy(copy, ids, sizeof(int64_t) * n);
        c->ids = copy;
        c->ids_dev = ids_dev;
        c->n = n;
    }
    return out;
}

// ---- sinusoidal timestep embedding ----------------------------------------------------------------
// diffusers get_timestep_embedding, computed in f32 like torch:
//   exponent[k] = -ln(10000) * k / (half - freq_shift), freq[k] = exp(exponent[k])
//   emb = [sin(t * freq), cos(t * freq)], swapped to [cos, sin] when flip_sin_to_cos,
//   and one zero column appended when dim is odd.
Tensor *op_timestep_embedding(const float *timesteps, int n, int dim, bool flip_sin_to_cos, float freq_shift) {
    const char *op = "op_timestep_embedding";
    int half = dim / 2;
    if (n < 0 || half < 1 || (float)half - freq_shift == 0.0f)
        dod_fatal(op, "n %d, dim %d, freq_shift %g: need n >= 0, dim >= 2 and dim / 2 != freq_shift", n, dim,
                  freq_shift);
    Tensor *out = tensor_new2(n, dim);
    float *y = tensor_data_f32(out);
    const float neg_log_period = (float)-log(10000.0);
    float *freq = arena_alloc(sizeof(float) * half, "op_timestep_embedding frequencies");
    for (int k = 0; k < half; k++) freq[k] = expf(neg_log_period * (float)k / ((float)half - freq_shift));
    int sin_at = flip_sin_to_cos ? half : 0, cos_at = flip_sin_to_cos ? 0 : half;
    for (int i = 0; i < n; i++) {
        float *row = y + (int64_t)i * dim;
        for (int k = 0; k < half; k++) {
            float arg = timesteps[i] * freq[k];
            row[sin_at + k] = sinf(arg);
            row[cos_at + k] = cosf(arg);
        }
        if (dim % 2) row[dim - 1] = 0.0f;
    }
    return out;
}
