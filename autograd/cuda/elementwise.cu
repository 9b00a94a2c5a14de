// Elementwise arithmetic with broadcasting (the plan comes from op_elementwise.c's bcast_plan),
// the broadcast-gradient reduction, y = mul * x + add, and the posterior sample. Per-element formulas:
// autograd/kernel_math.h.
#include "autograd/cuda/device.h"

#define EW_MAX_DIMS TENSOR_MAX_DIMS
typedef struct {
    int ndim;
    int64_t shape[EW_MAX_DIMS], sa[EW_MAX_DIMS], sb[EW_MAX_DIMS];
} EwPlan;

__global__ void ew_binary_kernel(EwKind kind, EwPlan p, const float *a, const float *b, float *out, int64_t n) {
    DOD_GRID_STRIDE(i, n) {
        int64_t rem = i, oa = 0, ob = 0;
        for (int d = p.ndim - 1; d >= 0; d--) {
            int64_t c = rem % p.shape[d];
            rem /= p.shape[d];
            oa += c * p.sa[d];
            ob += c * p.sb[d];
        }
        float x = a[oa], y = b[ob];
        out[i] = ew_value(kind, x, y);
    }
}

void cuda_ew_binary(EwKind kind, int ndim, const int64_t *shape, const float *a, const int64_t *sa, const float *b,
                    const int64_t *sb, float *out) {
    EwPlan p = {};
    p.ndim = ndim;
    int64_t n = 1;
    for (int d = 0; d < ndim; d++) {
        p.shape[d] = shape[d];
        p.sa[d] = sa[d];
        p.sb[d] = sb[d];
        n *= shape[d];
    }
    if (n == 0) return;
    ew_binary_kernel<<<dod_grid(n, 256), 256>>>(kind, p, a, b, out, n);
    CUDA_CHECK_LAUNCH("ew_binary_kernel");
}

// One block per element j of t: the block sums g over the reduced axes (double accumulation).
typedef struct {
    int nk, nr;
    int64_t kshape[EW_MAX_DIMS], kstride[EW_MAX_DIMS];  // kept axes: size, stride in g
    int64_t rshape[EW_MAX_DIMS], rstride[EW_MAX_DIMS];  // reduced axes
    int64_t r_count;
} ReducePlan;

__global__ void bcast_reduce_kernel(ReducePlan p, const float *g, float sign, float *grad_t, int64_t t_numel) {
    for (int64_t j = blockIdx.x; j < t_numel; j += gridDim.x) {
        int64_t rem = j, base = 0;
        for (int i = p.nk - 1; i >= 0; i--) {
            base += (rem % p.kshape[i]) * p.kstride[i];
            rem /= p.kshape[i];
        }
        double acc = 0;
        for (int64_t r = threadIdx.x; r < p.r_count; r += blockDim.x) {
            int64_t rrem = r, off = base;
            for (int i = p.nr - 1; i >= 0; i--) {
                off += (rrem % p.rshape[i]) * p.rstride[i];
                rrem /= p.rshape[i];
            }
            acc += g[off];
        }
        acc = dod_block_sum(acc);
        if (threadIdx.x == 0) grad_t[j] += sign * (float)acc;
    }
}

void cuda_bcast_reduce(int ndim, const int64_t *shape, const int64_t *so, const float *g, const int64_t *st, float sign,
                       float *grad_t, int64_t t_numel) {
    ReducePlan p = {};
    p.r_count = 1;
    for (int d = 0; d < ndim; d++) {
        if (st[d] != 0 || shape[d] == 1) {
            p.kshape[p.nk] = shape[d];
            p.kstride[p.nk++] = so[d];
        } else {
            p.rshape[p.nr] = shape[d];
            p.rstride[p.nr++] = so[d];
            p.r_count *= shape[d];
        }
    }
    if (t_numel == 0) return;
    if (p.nr == 0) {  // t has the output's layout
        cuda_axpy(grad_t, g, sign, t_numel);
        return;
    }
    unsigned blocks = (unsigned)(t_numel < 65535 * 4 ? t_numel : 65535 * 4);
    bcast_reduce_kernel<<<blocks, 256>>>(p, g, sign, grad_t, t_numel);
    CUDA_CHECK_LAUNCH("bcast_reduce_kernel");
}

__global__ void affine_kernel(const float *x, float mul, float add, float *y, int64_t n) {
    DOD_GRID_STRIDE(i, n) y[i] = mul * x[i] + add;
}

void cuda_affine(const float *x, float mul, float add, float *y, int64_t n) {
    if (n == 0) return;
    affine_kernel<<<dod_grid(n, 256), 256>>>(x, mul, add, y, n);
    CUDA_CHECK_LAUNCH("affine_kernel");
}

// ---- posterior sample: z = mean + exp(0.5 logvar) eps --------------------------------------------------
__global__ void posterior_forward_kernel(const float *mean, const float *logvar, const float *eps, float *z,
                                         int64_t n) {
    DOD_GRID_STRIDE(i, n) z[i] = posterior_sample_value(mean[i], logvar[i], eps[i]);
}

// grad_logvar / grad_eps may each be NULL (that input needs no gradient).
__global__ void posterior_backward_kernel(const float *g, const float *logvar, const float *eps, float *grad_logvar,
                                          float *grad_eps, int64_t n) {
    DOD_GRID_STRIDE(i, n) {
        if (grad_logvar) grad_logvar[i] += posterior_sample_grad_logvar(g[i], logvar[i], eps[i]);
        if (grad_eps) grad_eps[i] += posterior_sample_grad_eps(g[i], logvar[i]);
    }
}

void cuda_posterior_sample_forward(const float *mean, const float *logvar, const float *eps, float *z, int64_t n) {
    if (n == 0) return;
    posterior_forward_kernel<<<dod_grid(n, 256), 256>>>(mean, logvar, eps, z, n);
    CUDA_CHECK_LAUNCH("posterior_forward_kernel");
}

void cuda_posterior_sample_backward(const float *g, const float *logvar, const float *eps, float *grad_logvar,
                                    float *grad_eps, int64_t n) {
    if (n == 0 || (!grad_logvar && !grad_eps)) return;
    posterior_backward_kernel<<<dod_grid(n, 256), 256>>>(g, logvar, eps, grad_logvar, grad_eps, n);
    CUDA_CHECK_LAUNCH("posterior_backward_kernel");
}
