// Building dod dataset files from image folders: `dod-data pack` (real pairs, or clean images for
// denoising) and `dod-data synth` (synthetic degradations). Implemented in data/h5_pack.c (HDF5).
// Both write through a temp file renamed on success: on any error no output file appears (or the
// existing one is left as it was, when appending).
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "data/degrade.h"
#include "data/h5ds.h"

typedef struct {
    const char *out_path;
    int append;                 // add to an existing file (the task too, when mode/sigmas agree)
    const char *task;           // task name in the file
    // paired mode: LQ and HQ folders matched by name (data/pairing.h), or an explicit pair list
    const char *lq_dir, *hq_dir, *pairs_path;
    int skip_unmatched;         // list unmatched files as warnings and pack the rest (default: error)
    // clean mode (denoising): HQ images only, Gaussian noise on the fly with these sigmas ...
    const char *clean_dir;
    int n_sigmas;
    double sigmas[H5DS_MAX_SIGMAS];
    int store_noisy;            // ... or, with exactly one sigma, store LQ = noise(HQ) made with seed
    uint64_t seed;
    int deflate;                // 0..9
    int quiet;                  // no progress/summary lines on stdout
} PackOptions;

// The noise key of a stored noisy image: independent of listing order and of the task name, so
// the same (seed, file name, sigma) gives the same noisy image on every machine.
uint64_t pack_noise_key(uint64_t seed, const char *file_name, double sigma);

// Returns 0, or -1 with a summary in err after listing every problem (unreadable images, LQ/HQ
// size mismatches, unmatched files) on stderr, one line each naming the file.
int pack_run(const PackOptions *o, char *err, size_t errlen);

typedef struct {
    const char *out_path;
    int append;
    const char *clean_dir;
    int n_kinds;
    DegradeKind kinds[DEG_COUNT];
    uint64_t seed;
    int n_sigmas;               // noise: sigma list (default 15, 25, 50) ...
    double sigmas[H5DS_MAX_SIGMAS];
    int store_noisy;            // ... or stored noisy images (exactly one sigma)
    int deflate;
    int quiet;
} SynthOptions;

// The key of synthetic degradation `kind` of clean file `file_name`.
uint64_t synth_key(uint64_t seed, DegradeKind kind, const char *file_name);

// One task per kind (named degrade_task_name(kind)), one sample per clean image. 0 or -1.
int synth_run(const SynthOptions *o, char *err, size_t errlen);
