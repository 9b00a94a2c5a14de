// Qualifiers for functions written once for the CPU ops and the CUDA kernels: in a .c file (and the
// host pass of nvcc) a plain static inline function; under nvcc also a device function. Headers
// built on it: autograd/kernel_math.h (per-element formulas and kind enums), autograd/
// flash_attention_rows.h (the fused attention's row math).
#pragma once

#ifdef __CUDACC__
#define DOD_HOSTDEV static __host__ __device__ __forceinline__
#else
#define DOD_HOSTDEV static inline
#endif
#ifdef __CUDA_ARCH__  // device pass: loops over compile-time bounds unroll into registers
#define DOD_UNROLL _Pragma("unroll")
#else
#define DOD_UNROLL
#endif
