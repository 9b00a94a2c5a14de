// Tuning knobs of the dense CPU ops (autograd/gemm.c, autograd/op_attention.c), for tests and
// dod-bench only: training code never calls these, and the defaults are chosen automatically.
#pragma once
#include <stdbool.h>
#include <stdint.h>

// Query rows per attention block (scores scratch = rows * Lk floats). 0 restores the automatic
// choice (about 2M floats of scores per block). Lets tests exercise several blocks on small inputs.
void attention_set_block_rows(int64_t rows);

// Which hand-vectorised variant runs: "auto" (default: the best the CPU supports), "base" (the
// baseline ISA the build targets), "avx2" (AVX2+FMA), and for attention also "avx512". Returns
// false, changing nothing, for an unknown name or one the CPU lacks. Lets tests cover every variant.
bool gemm_portable_set_isa(const char *isa);
bool attention_set_isa(const char *isa);
