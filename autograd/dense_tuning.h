// Tuning knobs of the dense CPU ops (autograd/gemm.c, op_attention.c, op_conv.c), for tests and
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

// op_conv2d's im2col tile budget in floats (col buffer of one tile, per worker thread): images are
// cut into blocks of output rows (one row at least) so that a tile stays within it, and small
// images batched up to it. 0 restores the automatic choice (about 1 MiB for thin convs, 1024
// columns for wide ones, at most 64 MiB). Lets tests force tile seams on small inputs.
void conv_set_tile_floats(int64_t floats);
// op_conv2d's threading: "auto" (default), "images" (each thread runs whole images, GEMMs
// single-threaded) or "shared" (tiles in sequence, each GEMM split over the threads). Returns false,
// changing nothing, for an unknown name. Lets tests cover both.
bool conv_set_schedule(const char *name);
