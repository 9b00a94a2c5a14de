// Internal header of the CUDA backend (C++/nvcc only): the fused (flash-style) attention kernels of
// attention_fused.cu, which attention.cu's entry points choose between it and the chunked cuBLAS path.
// Same layouts and the same (=) / (+=) contract as cuda_attention_forward / _backward (cuda_ops.h).
#pragma once
#include <stdint.h>

// Whether the fused kernels have an instantiation for head width D and fit the launch grid.
bool attention_fused_supports(int64_t B, int64_t H, int64_t D);
// out (=), lse (=). Needs attention_fused_supports(B, H, D).
void attention_fused_forward(const float *q, const float *k, const float *v, float *out, float *lse, int64_t B,
                             int64_t Lq, int64_t Lk, int64_t H, int64_t D, float scale);
// dq, dk, dv (+=; NULL skips one). Needs attention_fused_supports(B, H, D).
void attention_fused_backward(const float *q, const float *k, const float *v, const float *out, const float *lse,
                              const float *dout, float *dq, float *dk, float *dv, int64_t B, int64_t Lq, int64_t Lk,
                              int64_t H, int64_t D, float scale);
