// The stored-noise provenance of one dataset sample (the float64 noise_sigma and uint64
// noise_seed attributes `dod-data pack --store-noisy` writes, docs/data-format.md), read for
// evaluation so a benchmark can check that its denoising set holds the noise level it claims.
// Implemented in data/h5_sample_noise.c (HDF5 only).
#pragma once
#include <stddef.h>
#include <stdint.h>

// Sample i of task in the dataset file at path: writes (=) *sigma and *seed and returns 1 when the
// sample has stored-noise attributes, 0 when it has none, -1 with a message naming the file and
// sample when the file or the sample cannot be opened, -2 with a message naming the attribute when
// they are present but malformed (not one finite number / one integer, sigma outside (0, 255]).
int h5_sample_noise(const char *path, const char *task, int64_t i, double *sigma, uint64_t *seed, char *err,
                    size_t errlen);
