// Fused (flash-style) attention: one thread per query row (forward, dQ) or key row (dK, dV), the
// other side streamed through shared memory in tiles, the row math of autograd/flash_attention_rows.h
// (online softmax in f32, probabilities recomputed from the saved log-sum-exp in backward). Nothing
// of size Lq x Lk exists, not even a chunk: the only scratch is delta [B, H, Lq] in backward.
// Kernels are instantiated per head width D, so a row's accumulators live in registers; other
// widths take the chunked cuBLAS path (attention.cu decides, see cuda_set_attention_kernel).
// Grid: x = blocks of FLASH_THREADS rows, y = batch * head.
#include <type_traits>

#include "autograd/cuda/attention_fused.h"
#include "autograd/cuda/device.h"
#include "autograd/flash_attention_rows.h"

#define FLASH_THREADS 128

// Rows of each tile staged in shared memory: two tiles of T x D floats, 32 KiB at D = 64 or 80.
template <int D> constexpr int flash_tile_rows() { return D <= 64 ? 64 : 32; }

// Tiles a [n, D] and b [n, D] (=): n rows of a_src and of b_src (row stride ld), copied by the whole
// block. The caller puts a barrier before (every thread is done with the previous tiles) and after.
template <int D>
__device__ __forceinline__ void flash_stage_pair(float *a, float *b, const float *a_src, const float *b_src, int64_t ld,
                                                 int n) {
    for (int e = threadIdx.x; e < n * D; e += blockDim.x) {
        int64_t src = (int64_t)(e / D) * ld + e % D;
        a[e] = a_src[src];
        b[e] = b_src[src];
    }
}

// The row a thread owns: row r of the L rows of head h of batch element b (block (x, b * H + h)),
// at offset off of a [B, L, H * D] tensor; a thread past the last row is inactive (offset of row 0).
struct FlashRow {
    int64_t HD, bh, b, h, r, off;
    bool active;
};
__device__ __forceinline__ FlashRow flash_row(int64_t L, int64_t H, int D) {
    FlashRow t;
    t.HD = H * D;
    t.bh = blockIdx.y;
    t.b = t.bh / H;
    t.h = t.bh % H;
    t.r = (int64_t)blockIdx.x * FLASH_THREADS + threadIdx.x;
    t.active = t.r < L;
    t.off = (t.b * L + (t.active ? t.r : 0)) * t.HD + t.h * D;
    return t;
}

// dst [D] (=) src [D], or zeros for a thread without a row (it still helps stage the tiles).
template <int D> __device__ __forceinline__ void flash_load_row(float *dst, const float *src, bool active) {
#pragma unroll
    for (int d = 0; d < D; d++) dst[d] = active ? src[d] : 0.0f;
}

template <int D> __device__ __forceinline__ void flash_zero_row(float *dst) {
#pragma unroll
    for (int d = 0; d < D; d++) dst[d] = 0.0f;
}

// out (=), lse (=): thread i of block (x, bh) owns query row x * FLASH_THREADS + i of head bh.
template <int D>
__global__ void __launch_bounds__(FLASH_THREADS)
    flash_forward_kernel(const float *__restrict__ q, const float *__restrict__ k, const float *__restrict__ v,
                         float *__restrict__ out, float *__restrict__ lse, int64_t Lq, int64_t Lk, int64_t H,
                         float scale) {
    constexpr int T = flash_tile_rows<D>();
    __shared__ float ks[T * D], vs[T * D];
    const FlashRow t = flash_row(Lq, H, D);
    float qr[D], acc[D], m = -INFINITY, l = 0.0f;
    flash_load_row<D>(qr, q + t.off, t.active);
    flash_zero_row<D>(acc);
    const float *kb = k + t.b * Lk * t.HD + t.h * D, *vb = v + t.b * Lk * t.HD + t.h * D;
    for (int64_t j0 = 0; j0 < Lk; j0 += T) {
        int n = Lk - j0 < T ? (int)(Lk - j0) : T;
        __syncthreads();  // every thread is done with the previous tiles
        flash_stage_pair<D>(ks, vs, kb + j0 * t.HD, vb + j0 * t.HD, t.HD, n);
        __syncthreads();
        if (t.active) flash_forward_tile(qr, ks, vs, D, n, D, scale, &m, &l, acc);
    }
    if (t.active) flash_forward_finish(acc, m, l, D, out + t.off, lse + t.bh * Lq + t.r);
}

// delta [B, H, Lq] (=): dO . O per query row and head (runtime D: read once, no tile).
__global__ void flash_delta_kernel(const float *dout, const float *out, float *delta, int64_t B, int64_t Lq,
                                   int64_t H, int64_t D) {
    DOD_GRID_STRIDE(r, B * H * Lq) {
        int64_t i = r % Lq, bh = r / Lq, b = bh / H, h = bh % H, off = (b * Lq + i) * H * D + h * D;
        delta[r] = flash_dot(dout + off, out + off, (int)D);
    }
}

// dq (+=): thread i of block (x, bh) owns query row x * FLASH_THREADS + i of head bh.
template <int D>
__global__ void __launch_bounds__(FLASH_THREADS)
    flash_dq_kernel(const float *__restrict__ q, const float *__restrict__ k, const float *__restrict__ v,
                    const float *__restrict__ dout, const float *__restrict__ lse, const float *__restrict__ delta,
                    float *__restrict__ dq, int64_t Lq, int64_t Lk, int64_t H, float scale) {
    constexpr int T = flash_tile_rows<D>();
    __shared__ float ks[T * D], vs[T * D];
    const FlashRow t = flash_row(Lq, H, D);
    float qr[D], dor[D], acc[D];
    flash_load_row<D>(qr, q + t.off, t.active);
    flash_load_row<D>(dor, dout + t.off, t.active);
    flash_zero_row<D>(acc);
    const float li = t.active ? lse[t.bh * Lq + t.r] : 0.0f, di = t.active ? delta[t.bh * Lq + t.r] : 0.0f;
    const float *kb = k + t.b * Lk * t.HD + t.h * D, *vb = v + t.b * Lk * t.HD + t.h * D;
    for (int64_t j0 = 0; j0 < Lk; j0 += T) {
        int n = Lk - j0 < T ? (int)(Lk - j0) : T;
        __syncthreads();
        flash_stage_pair<D>(ks, vs, kb + j0 * t.HD, vb + j0 * t.HD, t.HD, n);
        __syncthreads();
        if (t.active) flash_dq_tile(qr, dor, li, di, ks, vs, D, n, D, scale, acc);
    }
    if (t.active) flash_axpy(scale, acc, D, dq + t.off);
}

// dk, dv (+=; NULL skips one): thread j of block (x, bh) owns key row x * FLASH_THREADS + j of head bh.
template <int D>
__global__ void __launch_bounds__(FLASH_THREADS)
    flash_dkdv_kernel(const float *__restrict__ q, const float *__restrict__ k, const float *__restrict__ v,
                      const float *__restrict__ dout, const float *__restrict__ lse, const float *__restrict__ delta,
                      float *dk, float *dv, int64_t Lq, int64_t Lk, int64_t H, float scale) {
    // dk and dv are not __restrict__: op_attention(x, x, x) passes one gradient buffer as both.
    constexpr int T = flash_tile_rows<D>();
    __shared__ float qs[T * D], dos[T * D], ls[T], ds[T];
    const FlashRow t = flash_row(Lk, H, D);
    float kr[D], vr[D], dka[D], dva[D];
    flash_load_row<D>(kr, k + t.off, t.active);
    flash_load_row<D>(vr, v + t.off, t.active);
    flash_zero_row<D>(dka);
    flash_zero_row<D>(dva);
    const float *qb = q + t.b * Lq * t.HD + t.h * D, *dob = dout + t.b * Lq * t.HD + t.h * D;
    for (int64_t i0 = 0; i0 < Lq; i0 += T) {
        int n = Lq - i0 < T ? (int)(Lq - i0) : T;
        __syncthreads();
        flash_stage_pair<D>(qs, dos, qb + i0 * t.HD, dob + i0 * t.HD, t.HD, n);
        for (int e = threadIdx.x; e < n; e += blockDim.x) {
            ls[e] = lse[t.bh * Lq + i0 + e];
            ds[e] = delta[t.bh * Lq + i0 + e];
        }
        __syncthreads();
        if (t.active) flash_dkdv_tile(kr, vr, qs, dos, D, ls, ds, n, D, scale, dka, dva);
    }
    if (t.active && dk) flash_axpy(scale, dka, D, dk + t.off);
    if (t.active && dv) flash_axpy(1.0f, dva, D, dv + t.off);
}

// Calls f(std::integral_constant<int, D>) for an instantiated head width; false for any other.
template <typename F> static bool with_head_width(int64_t D, F f) {
    switch (D) {
    case 8: f(std::integral_constant<int, 8>()); return true;
    case 16: f(std::integral_constant<int, 16>()); return true;
    case 32: f(std::integral_constant<int, 32>()); return true;
    case 40: f(std::integral_constant<int, 40>()); return true;   // SD 1.x, level 1
    case 64: f(std::integral_constant<int, 64>()); return true;   // SD 2.x, every level
    case 80: f(std::integral_constant<int, 80>()); return true;   // SD 1.x, level 2
    default: return false;
    }
}

bool attention_fused_supports(int64_t B, int64_t H, int64_t D) {
    return B * H <= 65535 && with_head_width(D, [](auto) {});
}

static dim3 flash_grid(int64_t rows, int64_t B, int64_t H) {
    return dim3((unsigned)((rows + FLASH_THREADS - 1) / FLASH_THREADS), (unsigned)(B * H));
}

void attention_fused_forward(const float *q, const float *k, const float *v, float *out, float *lse, int64_t B,
                             int64_t Lq, int64_t Lk, int64_t H, int64_t D, float scale) {
    if (B * Lq * H * D == 0) return;
    with_head_width(D, [&](auto width) {
        constexpr int W = decltype(width)::value;
        flash_forward_kernel<W><<<flash_grid(Lq, B, H), FLASH_THREADS>>>(q, k, v, out, lse, Lq, Lk, H, scale);
        CUDA_CHECK_LAUNCH("flash_forward_kernel");
    });
}

void attention_fused_backward(const float *q, const float *k, const float *v, const float *out, const float *lse,
                              const float *dout, float *dq, float *dk, float *dv, int64_t B, int64_t Lq, int64_t Lk,
                              int64_t H, int64_t D, float scale) {
    if (B * Lq * H * D == 0 || (!dq && !dk && !dv)) return;
    size_t mark = cuda_arena_mark();
    float *delta = (float *)cuda_arena_alloc((size_t)(B * H * Lq) * sizeof(float), "attention delta (dO . O)");
    flash_delta_kernel<<<dod_grid(B * H * Lq, 256), 256>>>(dout, out, delta, B, Lq, H, D);
    CUDA_CHECK_LAUNCH("flash_delta_kernel");
    with_head_width(D, [&](auto width) {
        constexpr int W = decltype(width)::value;
        if (dq) {
            flash_dq_kernel<W><<<flash_grid(Lq, B, H), FLASH_THREADS>>>(q, k, v, dout, lse, delta, dq, Lq, Lk, H,
                                                                         scale);
            CUDA_CHECK_LAUNCH("flash_dq_kernel");
        }
        if (dk || dv) {
            flash_dkdv_kernel<W><<<flash_grid(Lk, B, H), FLASH_THREADS>>>(q, k, v, dout, lse, delta, dk, dv, Lq, Lk,
                                                                           H, scale);
            CUDA_CHECK_LAUNCH("flash_dkdv_kernel");
        }
    });
    cuda_arena_release(mark);
}
