// The CPU threading knobs every engine loop shares (ops, GEMM, optimizer, dtype conversions).
#pragma once
#ifdef _OPENMP
#include <omp.h>
#endif

// Element count (or, for loops over rows and planes, the elements they touch) above which a simple
// CPU loop goes parallel: below it, starting the threads costs more than the loop. The one threshold
// of the engine's `#pragma omp parallel for if (...)` loops. Where the loop is an OpenMP reduction
// (op_sum, op_mean, the point losses, the gradient norm), crossing it changes how the partial sums
// are grouped, so a sum of more elements than this may differ in its last bits from a serial one.
#define OPS_PARALLEL_MIN 32768

static inline int ops_max_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

static inline int ops_thread_id(void) {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}
