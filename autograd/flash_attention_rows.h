// Row math of the fused (flash-style) CUDA attention kernels, autograd/cuda/attention_fused.cu,
// written once so that it compiles both as CUDA device code and as plain C:
// tests/test_attention_fused.c runs these very functions on the CPU, key by key in the kernels'
// order, against op_attention's GEMM path. What only the GPU can check is the kernels' glue
// (tiles of K/V or Q/dO staged in shared memory, one thread per row, launch shapes): the GPU suite
// (tests/test_cuda_ops.c) runs the kernels themselves.
//
// For one head, with s_ij = scale * (q_i . k_j), row log-sum-exp lse_i and delta_i = dO_i . O_i:
//   forward   online softmax over the keys in order: a running max m, sum l = sum_j exp(s_ij - m)
//             and acc = sum_j exp(s_ij - m) v_j, rescaled by exp(m_old - m_new) whenever m grows;
//             O_i = acc / l, lse_i = m + log(l). Nothing of size Lk is ever stored.
//   backward  p_ij = exp(s_ij - lse_i), ds_ij = p_ij (dO_i . v_j - delta_i)
//             dQ_i += scale sum_j ds_ij k_j        (one thread per query row, over the keys)
//             dK_j += scale sum_i ds_ij q_i,  dV_j += sum_i p_ij dO_i   (one thread per key row,
//             over the queries)
// Every row pointer addresses D contiguous floats; `ld` is the distance between consecutive rows
// (D in a shared-memory tile, H*D in a [B, L, H*D] tensor). The accumulators (acc, dq, dk, dv) are
// the caller's arrays of D floats: registers on the GPU once D is a compile-time constant.
#pragma once
#include <math.h>
#include <stdint.h>

#include "autograd/hostdev.h"  // DOD_HOSTDEV; DOD_UNROLL (D is a compile-time constant on the device)

// a . b over D floats, summed in order.
DOD_HOSTDEV float flash_dot(const float *a, const float *b, int D) {
    float s = 0.0f;
    DOD_UNROLL
    for (int d = 0; d < D; d++) s += a[d] * b[d];
    return s;
}

// acc[d] += c * x[d].
DOD_HOSTDEV void flash_axpy(float c, const float *x, int D, float *acc) {
    DOD_UNROLL
    for (int d = 0; d < D; d++) acc[d] += c * x[d];
}

// Forward, query row q against n keys (rows k, v with stride ld), in order: updates (+=, with
// rescaling) the running max *m, sum *l and acc [D]. Start from m = -INFINITY, l = 0, acc = 0: the
// first key's rescale factor exp(-inf) = 0 multiplies zeros.
DOD_HOSTDEV void flash_forward_tile(const float *q, const float *k, const float *v, int64_t ld, int n, int D,
                                    float scale, float *m, float *l, float *acc) {
    for (int j = 0; j < n; j++) {
        float s = flash_dot(q, k + j * ld, D) * scale;
        if (s > *m) {  // the max moves: rescale what was summed against the old one
            float c = expf(*m - s);
            *l *= c;
            DOD_UNROLL
            for (int d = 0; d < D; d++) acc[d] *= c;
            *m = s;
        }
        float p = expf(s - *m);
        *l += p;
        flash_axpy(p, v + j * ld, D, acc);
    }
}

// Forward result of one row: out [D] = acc / l (=), *lse = m + log(l) (=).
DOD_HOSTDEV void flash_forward_finish(const float *acc, float m, float l, int D, float *out, float *lse) {
    float inv = 1.0f / l;
    DOD_UNROLL
    for (int d = 0; d < D; d++) out[d] = acc[d] * inv;
    *lse = m + logf(l);
}

// dQ of query row (q, dout, lse, delta) against n keys (rows k, v with stride ld), in order:
// dq_acc [D] += ds_ij k_j (the caller multiplies by scale once at the end).
DOD_HOSTDEV void flash_dq_tile(const float *q, const float *dout, float lse, float delta, const float *k,
                               const float *v, int64_t ld, int n, int D, float scale, float *dq_acc) {
    for (int j = 0; j < n; j++) {
        float p = expf(flash_dot(q, k + j * ld, D) * scale - lse);
        float ds = p * (flash_dot(dout, v + j * ld, D) - delta);
        flash_axpy(ds, k + j * ld, D, dq_acc);
    }
}

// dK, dV of key row (k, v) against n queries (rows q, dout with stride ld; lse, delta [n]), in order:
// dk_acc [D] += ds_ij q_i (the caller multiplies by scale once at the end), dv_acc [D] += p_ij dO_i.
DOD_HOSTDEV void flash_dkdv_tile(const float *k, const float *v, const float *q, const float *dout, int64_t ld,
                                 const float *lse, const float *delta, int n, int D, float scale, float *dk_acc,
                                 float *dv_acc) {
    for (int i = 0; i < n; i++) {
        float p = expf(flash_dot(q + i * ld, k, D) * scale - lse[i]);
        flash_axpy(p, dout + i * ld, D, dv_acc);
        float ds = p * (flash_dot(dout + i * ld, v, D) - delta[i]);
        flash_axpy(ds, q + i * ld, D, dk_acc);
    }
}

