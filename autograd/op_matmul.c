// op_matmul, op_linear and op_add_projection_into: thin wrappers that turn every product into one
// (or one per batch) call of gemm_f32 (CPU) or cuda_gemm (cuBLAS, for DEV_CUDA inputs; op_linear's
// CUDA forward with a bias: one cuBLASLt call with the bias epilogue, cuda_linear_bias_forward).
// Inputs stored in half precision are widened in scratch (tensor_f32) by the forward and again by the
// backward; the node context keeps no view of them, so a bf16 activation stays bf16 in memory until
// backward.
// Gradient GEMMs run only for inputs that require grad, so a frozen weight costs no dW product; each
// op counts the FLOPs of the products it runs (autograd/profile.h).
#include <string.h>

#include "autograd/cuda/cuda_ops.h"
#include "autograd/gemm.h"
#include "autograd/ops_cpu_util.h"

// db[j] += sum over rows of g[row, j] (g is [rows, n]).
static void add_column_sums(const float *g, int64_t rows, int64_t n, float *db) {
#pragma omp parallel for if (rows * n > OPS_PARALLEL_MIN)
    for (int64_t j0 = 0; j0 < n; j0 += 64) {
        int64_t j1 = j0 + 64 < n ? j0 + 64 : n;
        float acc[64] = {0};
        for (int64_t r = 0; r < rows; r++)
            for (int64_t j = j0; j < j1; j++) acc[j - j0] += g[r * n + j];
        for (int64_t j = j0; j < j1; j++) db[j] += acc[j - j0];
    }
}

// ---- matmul -------------------------------------------------------------------------------------
typedef struct {
    const float *a, *b;   // f32 views of the inputs for the current call (set inside its scratch scope)
    int64_t batch, M, N, K;
    bool trans_b, broadcast_b;
} MatmulCtx;

// y = a @ op(b): writes (=) y [batch, M, N].
static void op_matmul_cpu_forward(const MatmulCtx *c, float *y) {
    int64_t ldb = c->trans_b ? c->K : c->N;
    if (c->broadcast_b) {  // one GEMM over all batch*M rows
        gemm_f32(false, c->trans_b, c->batch * c->M, c->N, c->K, 1.0f, c->a, c->K, c->b, ldb, 0.0f, y, c->N);
        return;
    }
    for (int64_t i = 0; i < c->batch; i++)
        gemm_f32(false, c->trans_b, c->M, c->N, c->K, 1.0f, c->a + i * c->M * c->K, c->K, c->b + i * c->K * c->N,
                 ldb, 0.0f, y + i * c->M * c->N, c->N);
}

// Accumulates (+=) da = g @ op(b)^T and db = (a^T g, or g^T a when trans_b); NULL skips one.
static void op_matmul_cpu_backward(const MatmulCtx *c, const float *g, float *da, float *db) {
    int64_t ldb = c->trans_b ? c->K : c->N;
    int64_t groups = c->broadcast_b ? 1 : c->batch;
    int64_t rows = c->broadcast_b ? c->batch * c->M : c->M;
    for (int64_t i = 0; i < groups; i++) {
        const float *gi = g + i * rows * c->N;
        if (da)  // [rows, K] += g [rows, N] @ op(b)^T
            gemm_f32(false, !c->trans_b, rows, c->K, c->N, 1.0f, gi, c->N, c->b + i * c->K * c->N, ldb, 1.0f,
                     da + i * rows * c->K, c->K);
        if (db && !c->trans_b)  // [K, N] += a^T [K, rows] @ g [rows, N]
            gemm_f32(true, false, c->K, c->N, rows, 1.0f, c->a + i * rows * c->K, c->K, gi, c->N, 1.0f,
                     db + i * c->K * c->N, c->N);
        if (db && c->trans_b)   // [N, K] += g^T [N, rows] @ a [rows, K]
            gemm_f32(true, false, c->N, c->K, rows, 1.0f, gi, c->N, c->a + i * rows * c->K, c->K, 1.0f,
                     db + i * c->K * c->N, c->K);
    }
}

// CUDA: the same products as strided-batched cuBLAS calls (writes = y).
static void op_matmul_cuda_forward(const MatmulCtx *c, float *y) {
    int64_t ldb = c->trans_b ? c->K : c->N;
    if (c->broadcast_b)
        cuda_gemm(false, c->trans_b, c->batch * c->M, c->N, c->K, 1.0f, c->a, c->K, 0, c->b, ldb, 0, 0.0f, y, c->N, 0,
                  1, DT_F32);
    else
        cuda_gemm(false, c->trans_b, c->M, c->N, c->K, 1.0f, c->a, c->K, c->M * c->K, c->b, ldb, c->K * c->N, 0.0f, y,
                  c->N, c->M * c->N, c->batch, DT_F32);
}

// CUDA backward: accumulates (+=) like op_matmul_cpu_backward.
static void op_matmul_cuda_backward(const MatmulCtx *c, const float *g, float *da, float *db) {
    int64_t ldb = c->trans_b ? c->K : c->N;
    int64_t groups = c->broadcast_b ? 1 : c->batch;
    int64_t rows = c->broadcast_b ? c->batch * c->M : c->M;
    int64_t sg = rows * c->N, sa = rows * c->K, sb = c->K * c->N;
    if (da) cuda_gemm(false, !c->trans_b, rows, c->K, c->N, 1.0f, g, c->N, sg, c->b, ldb, sb, 1.0f, da, c->K, sa, groups, DT_F32);
    if (db && !c->trans_b)
        cuda_gemm(true, false, c->K, c->N, rows, 1.0f, c->a, c->K, sa, g, c->N, sg, 1.0f, db, c->N, sb, groups, DT_F32);
    if (db && c->trans_b)
        cuda_gemm(true, false, c->N, c->K, rows, 1.0f, g, c->N, sg, c->a, c->K, sa, 1.0f, db, c->K, sb, groups, DT_F32);
}

static void matmul_backward(AgNode *node) {
    MatmulCtx c = *(MatmulCtx *)node->ctx;
    Tensor *a = node->inputs[0], *b = node->inputs[1];
    float *da = a->requires_grad ? tensor_grad(a) : NULL, *db = b->requires_grad ? tensor_grad(b) : NULL;
    ScratchScope scratch = scratch_begin(node->out->device);
    c.a = db ? tensor_f32(a) : NULL;  // widened (a bf16 activation) only for the gradient that reads it
    c.b = da ? tensor_f32(b) : NULL;
    if (node->out->device == DEV_CUDA) op_matmul_cuda_backward(&c, node->out->grad, da, db);
    else op_matmul_cpu_backward(&c, node->out->grad, da, db);
    scratch_end(scratch);
    op_flops_backward(node->op, FLOPS_GEMM, ((da != NULL) + (db != NULL)) * flops_gemm(c.batch, c.M, c.N, c.K), 0.0);
}

Tensor *op_matmul(Tensor *a, Tensor *b, bool trans_b) {
    Tensor *in[2] = {a, b};
    Device dev = ops_device("op_matmul", 2, in);
    DOD_CHECK(a->ndim >= 2 && b->ndim >= 2, "op_matmul", "a %s and b %s: both need at least 2 dims", shape_str(a),
              shape_str(b));
    MatmulCtx c = {.M = a->shape[a->ndim - 2], .K = a->shape[a->ndim - 1], .trans_b = trans_b,
                   .broadcast_b = b->ndim == 2};
    c.batch = 1;
    for (int d = 0; d < a->ndim - 2; d++) c.batch *= a->shape[d];
    int64_t kb = b->shape[b->ndim - (trans_b ? 1 : 2)];
    c.N = b->shape[b->ndim - (trans_b ? 2 : 1)];
    DOD_CHECK(kb == c.K, "op_matmul", "a %s and b %s%s: inner dimensions differ (%ld vs %ld)", shape_str(a),
              shape_str(b), trans_b ? " (b transposed)" : "", (long)c.K, (long)kb);
    if (!c.broadcast_b) {
        bool same = b->ndim == a->ndim;
        for (int d = 0; same && d < a->ndim - 2; d++) same = a->shape[d] == b->shape[d];
        DOD_CHECK(same, "op_matmul", "a %s and b %s: b must be 2-D or have a's leading dims", shape_str(a),
                  shape_str(b));
    }
    int64_t shape[TENSOR_MAX_DIMS];
    memcpy(shape, a->shape, sizeof shape);
    shape[a->ndim - 1] = c.N;
    Tensor *y = tensor_new_activation(dev, a->ndim, shape);
    ScratchScope scratch = scratch_begin(dev);
    c.a = tensor_f32(a);
    c.b = tensor_f32(b);
    float *y32 = tensor_out_f32(y);
    if (dev == DEV_CUDA) op_matmul_cuda_forward(&c, y32);
    else op_matmul_cpu_forward(&c, y32);
    tensor_store_f32(y, y32);
    scratch_end(scratch);
    op_flops_forward("op_matmul", FLOPS_GEMM, flops_gemm(c.batch, c.M, c.N, c.K));
    c.a = c.b = NULL;  // the views may have gone with the scratch: backward takes them again
    if (ag_needs_grad(2, in)) {
        MatmulCtx *saved = ag_record("op_matmul", matmul_backward, y, 2, in, sizeof(MatmulCtx));
        *saved = c;
    }
    return y;
}

// ---- linear -------------------------------------------------------------------------------------
typedef struct {
    const float *x, *w;  // f32 views for the current call, set inside its scratch scope (w kept across calls
                         // only when stored f32; NULL on the CUDA mixed-precision path)
    const void *w_half;  // CUDA mixed precision: the bf16/f16 weight storage, read as-is by cuBLAS
    const void *x_half;  // ... and x's storage when x is stored in the weight's type (a bf16 activation)
    DType w_type;
    int64_t rows, in, out;
} LinearCtx;

// y = x @ w^T + bias: writes (=) y [rows, out].
static void op_linear_cpu_forward(const LinearCtx *c, const float *bias, float *y) {
    if (bias) {
#pragma omp parallel for if (c->rows * c->out > OPS_PARALLEL_MIN)
        for (int64_t r = 0; r < c->rows; r++) memcpy(y + r * c->out, bias, (size_t)c->out * sizeof(float));
    }
    gemm_f32(false, true, c->rows, c->out, c->in, 1.0f, c->x, c->in, c->w, c->in, bias ? 1.0f : 0.0f, y, c->out);
}

// Accumulates (+=) dx = g @ w, dw = g^T @ x, db = column sums of g; NULL skips one.
static void op_linear_cpu_backward(const LinearCtx *c, const float *g, float *dx, float *dw, float *db) {
    if (dx) gemm_f32(false, false, c->rows, c->in, c->out, 1.0f, g, c->out, c->w, c->in, 1.0f, dx, c->in);
    if (dw) gemm_f32(true, false, c->out, c->in, c->rows, 1.0f, g, c->out, c->x, c->in, 1.0f, dw, c->in);
    if (db) add_column_sums(g, c->rows, c->out, db);
}

// CUDA forward (writes = y). On the mixed-precision path x is cast to the weight's half type (or read
// as stored when it is already in that type, a bf16 activation) and cuBLAS multiplies half inputs with
// f32 accumulation into the f32 output. With a bias, one cuBLASLt call adds it in the GEMM's epilogue
// (cuda_linear_bias_forward).
static void op_linear_cuda_forward(const LinearCtx *c, const float *bias, float *y) {
    size_t mark = cuda_arena_mark();
    const void *x = c->x, *w = c->w;
    DType ab_type = DT_F32;
    if (c->w_half) {
        x = c->x_half;
        if (!x) {
            void *xh = cuda_arena_alloc((size_t)(c->rows * c->in) * 2, "op_linear half input");
            cuda_narrow_f32(c->x, c->w_type, xh, c->rows * c->in);
            x = xh;
        }
        w = c->w_half;
        ab_type = c->w_type;
    }
    if (bias) cuda_linear_bias_forward(x, w, bias, y, c->rows, c->in, c->out, ab_type);
    else cuda_gemm(false, true, c->rows, c->out, c->in, 1.0f, x, c->in, 0, w, c->in, 0, 0.0f, y, c->out, 0, 1, ab_type);
    cuda_arena_release(mark);
}

// CUDA backward: accumulates (+=) like op_linear_cpu_backward. A half weight is frozen (no dw).
static void op_linear_cuda_backward(const LinearCtx *c, const float *g, float *dx, float *dw, float *db) {
    if (dx && c->w_half) {
        size_t mark = cuda_arena_mark();
        void *gh = cuda_arena_alloc((size_t)(c->rows * c->out) * 2, "op_linear half gradient");
        cuda_narrow_f32(g, c->w_type, gh, c->rows * c->out);
        cuda_gemm(false, false, c->rows, c->in, c->out, 1.0f, gh, c->out, 0, c->w_half, c->in, 0, 1.0f, dx, c->in, 0, 1,
                  c->w_type);
        cuda_arena_release(mark);
    } else if (dx) {
        cuda_gemm(false, false, c->rows, c->in, c->out, 1.0f, g, c->out, 0, c->w, c->in, 0, 1.0f, dx, c->in, 0, 1, DT_F32);
    }
    if (dw) cuda_gemm(true, false, c->out, c->in, c->rows, 1.0f, g, c->out, 0, c->x, c->in, 0, 1.0f, dw, c->in, 0, 1, DT_F32);
    if (db) cuda_column_sums(g, c->rows, c->out, db);
}

static void linear_backward(AgNode *node) {
    LinearCtx c = *(LinearCtx *)node->ctx;
    Tensor *x = node->inputs[0], *w = node->inputs[1], *b = node->n_inputs > 2 ? node->inputs[2] : NULL;
    float *dx = x->requires_grad ? tensor_grad(x) : NULL, *dw = w->requires_grad ? tensor_grad(w) : NULL;
    float *db = b && b->requires_grad ? tensor_grad(b) : NULL;
    // A half-precision weight widened in forward scratch is widened again for this call only.
    ScratchScope scratch = scratch_begin(node->out->device);
    if (dx && !c.w && !c.w_half) c.w = tensor_f32(w);  // w is read only for dx
    c.x = dw ? tensor_f32(x) : NULL;                   // x only for dw
    if (node->out->device == DEV_CUDA) {
        DOD_CHECK(!(dw && c.w_half), "op_linear", "weight %s is %s on the mixed-precision path: half weights are frozen",
                  shape_str(w), dtype_name(w->dtype));
        op_linear_cuda_backward(&c, node->out->grad, dx, dw, db);
    } else {
        op_linear_cpu_backward(&c, node->out->grad, dx, dw, db);
    }
    scratch_end(scratch);
    op_flops_backward(node->op, FLOPS_GEMM, ((dx != NULL) + (dw != NULL)) * flops_gemm(1, c.rows, c.out, c.in), 0.0);
}

Tensor *op_linear(Tensor *x, Tensor *w, Tensor *bias) {
    Tensor *in[3] = {x, w, bias};
    Device dev = ops_device("op_linear", 3, in);
    DOD_CHECK(x->ndim >= 1 && w->ndim == 2 && x->shape[x->ndim - 1] == w->shape[1], "op_linear",
              "x %s and weight %s: need x [..., in] and weight [out, in]", shape_str(x), shape_str(w));
    DOD_CHECK(!bias || (bias->ndim == 1 && bias->shape[0] == w->shape[0]), "op_linear",
              "bias %s does not match weight %s (need [out])", shape_str(bias), shape_str(w));
    LinearCtx c = {.in = w->shape[1], .out = w->shape[0]};
    c.rows = 1;
    for (int d = 0; d < x->ndim - 1; d++) c.rows *= x->shape[d];
    int64_t shape[TENSOR_MAX_DIMS];
    memcpy(shape, x->shape, sizeof shape);
    shape[x->ndim - 1] = c.out;
    Tensor *y = tensor_new_activation(dev, x->ndim, shape);
    c.w_type = w->dtype;
    bool half_w = w->dtype == DT_BF16 || w->dtype == DT_F16;
    ScratchScope scratch = scratch_begin(dev);
    if (dev == DEV_CUDA && half_w && !w->requires_grad && dod_cuda_precision() == DOD_PREC_MIXED) c.w_half = w->data;
    else c.w = tensor_f32(w);
    // The mixed path multiplies x rounded to the weight's type: a bf16 activation already is, as stored.
    if (c.w_half && x->dtype == w->dtype) c.x_half = x->data;
    else c.x = tensor_f32(x);
    const float *b32 = bias ? tensor_f32(bias) : NULL;
    float *y32 = tensor_out_f32(y);
    if (dev == DEV_CUDA) op_linear_cuda_forward(&c, b32, y32);
    else op_linear_cpu_forward(&c, b32, y32);
    tensor_store_f32(y, y32);
    scratch_end(scratch);
    op_flops_forward("op_linear", FLOPS_GEMM, flops_gemm(1, c.rows, c.out, c.in));
    c.x = NULL;              // backward takes x's view again
    c.x_half = NULL;
    if (half_w) c.w = NULL;  // the widened copy is gone: backward widens again
    if (ag_needs_grad(3, in)) {
        LinearCtx *saved = ag_record("op_linear", linear_backward, y, bias ? 3 : 2, in, sizeof(LinearCtx));
        *saved = c;
    }
    return y;
}

// ---- y + s * projection of x, into y's storage ----------------------------------------------------------
// C = alpha op(A) op(B) + beta C on dev, repeated `batch` times with element strides sa/sb/sc (f32).
static void gemm_on(Device dev, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                    const float *A, int64_t lda, int64_t sa, const float *B, int64_t ldb, int64_t sb, float beta,
                    float *C, int64_t ldc, int64_t sc, int64_t batch) {
    if (dev == DEV_CUDA) {
        cuda_gemm(trans_a, trans_b, M, N, K, alpha, A, lda, sa, B, ldb, sb, beta, C, ldc, sc, batch, DT_F32);
        return;
    }
    for (int64_t i = 0; i < batch; i++)
        gemm_f32(trans_a, trans_b, M, N, K, alpha, A + i * sa, lda, B + i * sb, ldb, beta, C + i * sc, ldc);
}

typedef struct {
    const float *x, *w;  // f32 views for the current call (set inside its scratch scope)
    float s;
    bool channels;       // 1x1 conv over NCHW; else linear over the last dim
    int64_t batch, pixels, rows, in, out;  // channels: batch x pixels; linear: rows
} ProjectionCtx;

// y += s * proj(x) (+=).
static void projection_forward(Device dev, const ProjectionCtx *c, float *y) {
    if (c->channels)  // y_n[out, P] += s w[out, in] x_n[in, P]
        gemm_on(dev, false, false, c->out, c->pixels, c->in, c->s, c->w, c->in, 0, c->x, c->pixels,
                c->in * c->pixels, 1.0f, y, c->pixels, c->out * c->pixels, c->batch);
    else  // y[rows, out] += s x[rows, in] w^T
        gemm_on(dev, false, true, c->rows, c->out, c->in, c->s, c->x, c->in, 0, c->w, c->in, 0, 1.0f, y, c->out, 0, 1);
}

// dx += s * proj^T(g), dw += s * (g against x) (either may be NULL).
static void projection_backward_gemms(Device dev, const ProjectionCtx *c, const float *g, float *dx, float *dw) {
    int64_t P = c->pixels;
    if (c->channels) {
        if (dx)  // dx_n[in, P] += s w^T g_n
            gemm_on(dev, true, false, c->in, P, c->out, c->s, c->w, c->in, 0, g, P, c->out * P, 1.0f, dx, P,
                    c->in * P, c->batch);
        for (int64_t i = 0; dw && i < c->batch; i++)  // dw[out, in] += s g_n x_n^T, summed over the batch
            gemm_on(dev, false, true, c->out, c->in, P, c->s, g + i * c->out * P, P, 0, c->x + i * c->in * P, P, 0,
                    1.0f, dw, c->in, 0, 1);
        return;
    }
    if (dx) gemm_on(dev, false, false, c->rows, c->in, c->out, c->s, g, c->out, 0, c->w, c->in, 0, 1.0f, dx, c->in, 0, 1);
    if (dw) gemm_on(dev, true, false, c->out, c->in, c->rows, c->s, g, c->out, 0, c->x, c->in, 0, 1.0f, dw, c->in, 0, 1);
}

// The FLOPs of one product of the projection (the forward, or one of its gradients).
static double projection_flops(const ProjectionCtx *c) {
    return flops_gemm(1, c->channels ? c->batch * c->pixels : c->rows, c->out, c->in);
}

static void projection_backward(AgNode *node) {
    ProjectionCtx c = *(const ProjectionCtx *)node->ctx;
    Tensor *y = node->inputs[0], *x = node->inputs[1], *w = node->inputs[2];
    const float *g = node->out->grad;
    ops_accumulate_scaled_grad(y, g, 1.0f);
    float *dx = x->requires_grad ? tensor_grad(x) : NULL, *dw = w->requires_grad ? tensor_grad(w) : NULL;
    ScratchScope scratch = scratch_begin(node->out->device);
    c.x = dw ? tensor_f32(x) : NULL;  // x is read only for dw, w only for dx
    c.w = dx ? tensor_f32(w) : NULL;
    projection_backward_gemms(node->out->device, &c, g, dx, dw);
    scratch_end(scratch);
    op_flops_backward(node->op, FLOPS_GEMM, ((dx != NULL) + (dw != NULL)) * projection_flops(&c), 0.0);
}

Tensor *op_add_projection_into(Tensor *y, Tensor *x, Tensor *w, float s) {
    Tensor *in[3] = {y, x, w};
    Device dev = ops_device("op_add_projection_into", 3, in);
    ProjectionCtx c = {.s = s, .channels = w->ndim == 4, .out = w->shape[0], .in = w->ndim >= 2 ? w->shape[1] : 0};
    bool ok = true;
    if (c.channels) {
        ok = w->shape[2] == 1 && w->shape[3] == 1 && x->ndim == 4 && y->ndim == 4 && x->shape[1] == c.in &&
             y->shape[0] == x->shape[0] && y->shape[1] == c.out && y->shape[2] == x->shape[2] &&
             y->shape[3] == x->shape[3];
        c.batch = x->shape[0];
        c.pixels = x->shape[2] * x->shape[3];
    } else {
        ok = w->ndim == 2 && x->ndim >= 1 && y->ndim == x->ndim && x->shape[x->ndim - 1] == c.in &&
             y->shape[y->ndim - 1] == c.out;
        c.rows = 1;
        for (int d = 0; ok && d < x->ndim - 1; d++) {
            ok = x->shape[d] == y->shape[d];
            c.rows *= x->shape[d];
        }
    }
    DOD_CHECK(ok, "op_add_projection_into", "y %s, x %s and weight %s: need w [out, in] with x [..., in] and y [..., out], "
              "or w [out, in, 1, 1] with x [N, in, H, W] and y [N, out, H, W]", shape_str(y), shape_str(x), shape_str(w));
    Tensor *out = ops_overwrite_alias("op_add_projection_into", y);
    ScratchScope scratch = scratch_begin(dev);
    float *y32 = ops_inplace_f32(out);
    c.x = tensor_f32(x);
    c.w = tensor_f32(w);
    projection_forward(dev, &c, y32);
    tensor_store_f32(out, y32);
    scratch_end(scratch);
    op_flops_forward("op_add_projection_into", FLOPS_GEMM, projection_flops(&c));
    c.x = c.w = NULL;
    if (ag_needs_grad(3, in)) {
        ProjectionCtx *saved = ag_record("op_add_projection_into", projection_backward, out, 3, in, sizeof(ProjectionCtx));
        *saved = c;
    }
    return out;
}
