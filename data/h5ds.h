// The dod degradation-dataset file (HDF5): layout, reading, and atomic writing.
// The format is documented in docs/data-format.md; in short:
//   /                      attrs dod_format = "dod-degradation-dataset", dod_format_version = 1
//   /tasks/<task>/         attrs lq_mode ("stored" | "gaussian_noise"), count (int64),
//                                noise_sigmas (float64[], gaussian_noise only)
//   /tasks/<task>/<%08d>/  one sample: datasets hq and (stored mode) lq, uint8 [H, W, 3], chunked
//                          (64 x 64 x 3, clipped to the image) and deflate-compressed; string attrs
//                          hq_source, lq_source, and synth_params / noise_* where they apply.
// The implementation (data/h5_dataset.c) is compiled only when HDF5 is found; this header does
// not include hdf5.h. Reading functions may be called from several threads on one H5ds (the
// Debian libhdf5 is built thread-safe; it serialises calls internally).
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "data/image.h"

#define H5DS_FORMAT_NAME "dod-degradation-dataset"
#define H5DS_FORMAT_VERSION 1
#define H5DS_MAX_TASKS 32
#define H5DS_MAX_SIGMAS 16
#define H5DS_TASK_NAME_MAX 64
#define H5DS_CHUNK 64
// Noise key of h5ds_read_sample for gaussian_noise tasks (evaluation without stored noisy images).
#define H5DS_EVAL_NOISE_SEED 0x5eed0fd0dull

typedef enum { LQ_STORED = 0, LQ_GAUSSIAN_NOISE = 1 } LqMode;
enum { H5DS_LQ = 0, H5DS_HQ = 1 };

typedef struct {
    char name[H5DS_TASK_NAME_MAX];
    LqMode lq_mode;
    int n_sigmas;                      // gaussian_noise: the sigma list (0..255 scale)
    double sigmas[H5DS_MAX_SIGMAS];
    int64_t count;                     // samples 0 .. count-1
} H5dsTask;

typedef struct H5ds H5ds;

// Provenance written with each sample (NULL / 0 fields are omitted).
typedef struct {
    const char *hq_source, *lq_source;   // source file names (base names)
    const char *synth_params;            // what `dod-data synth` drew
    int has_noise;                       // LQ is stored Gaussian noise (pack --store-noisy)
    double noise_sigma;
    uint64_t noise_seed;
} H5dsSampleMeta;

// ---- reading ----------------------------------------------------------------------------------
// Opens read-only and checks the format name and version, and every task's attributes: each is
// of the type and shape the format says (data/h5_attr.h), count is at most the sample groups the
// task holds, sigmas are finite and in (0, 255]. NULL with a message naming the file (and the
// group and attribute at fault) when it is missing, not HDF5, corrupt, a foreign HDF5 file, or from
// a newer format version. Soft and external links are never followed.
// Sample images are checked when read: uint8 [H, W, 3] within the image caps of autograd/base.h,
// stored in a layout data/h5_image.h accepts, every byte written.
H5ds *h5ds_open(const char *path, char *err, size_t errlen);
void h5ds_close(H5ds *f);
int h5ds_n_tasks(const H5ds *f);
const H5dsTask *h5ds_task(const H5ds *f, int t);
// Index of the task called name, or -1 (and, when err is given, a message listing the tasks).
int h5ds_find_task(const H5ds *f, const char *name, char *err, size_t errlen);

// Height and width of sample i of task t (its HQ image). Returns 0 or -1 with a message.
int h5ds_sample_size(H5ds *f, int t, int64_t i, int *h, int *w, char *err, size_t errlen);
// Reads the ch x cw crop at (y, x) of the LQ or HQ image (which = H5DS_LQ / H5DS_HQ) through an
// HDF5 hyperslab, so only the chunks it touches are read and inflated. Writes (=) dst, ch*cw*3
// bytes HWC. A crop outside the image is an error naming the sample and both sizes.
int h5ds_read_crop(H5ds *f, int t, int64_t i, int which, int y, int x, int ch, int cw, uint8_t *dst, char *err,
                   size_t errlen);
// Crops are read one of two ways, with the same bytes: directly, fetching the stored chunks the
// crop touches with H5Dread_chunk and inflating them with zlib outside HDF5's global lock (the
// default for chunked images: loader threads then inflate in parallel), or through an H5Dread
// hyperslab selection (contiguous and compact images, and chunked ones when direct reads are
// turned off here: a cross-check of the two readers for tests, which still decodes the chunks
// directly first, since libhdf5 copies a chunk stored short past its buffer).
void h5ds_set_direct_chunks(H5ds *f, int on);
// Whole LQ or HQ image of a sample into a new Image (=). LQ of a gaussian_noise task is an error
// here (there is none stored); h5ds_read_sample synthesises it.
int h5ds_read_image(H5ds *f, int t, int64_t i, int which, Image *img, char *err, size_t errlen);
// Full sample for evaluation: writes (=) lq and hq. For gaussian_noise tasks the LQ is
// degrade_gaussian_noise(hq, sigmas[0], rng_key(rng_key(H5DS_EVAL_NOISE_SEED, hash(task)), i)):
// deterministic, but for published numbers pack the test set with --store-noisy.
int h5ds_read_sample(H5ds *f, int t, int64_t i, Image *lq, Image *hq, char *err, size_t errlen);
// String attribute of sample i (e.g. "hq_source") into buf (=); "" when absent. Returns 0, or -1
// with a message naming the file and sample when the sample group is missing or the attribute is
// not a single string (data/h5_attr.h).
int h5ds_sample_attr(H5ds *f, int t, int64_t i, const char *attr, char *buf, size_t len, char *err, size_t errlen);
// Number of sample groups actually present under the task (verify compares it with count).
int64_t h5ds_count_groups(H5ds *f, int t);

// ---- writing (atomic) ---------------------------------------------------------------------------
// Starts writing final_path through a temporary file beside it (final_path.tmp.<pid>). With
// append and an existing final_path, the temp file starts as a copy of it (checked like
// h5ds_open); without append an existing final_path is an error. Nothing at final_path changes
// until h5ds_commit renames the temp file into place; h5ds_abort removes it.
H5ds *h5ds_begin_write(const char *final_path, int append, char *err, size_t errlen);
// Creates task `name` or, if present, checks that mode and sigmas agree. Returns its index or -1.
int h5ds_define_task(H5ds *f, const char *name, LqMode mode, const double *sigmas, int n_sigmas, char *err,
                     size_t errlen);
// Appends one sample; lq must be NULL for gaussian_noise tasks and the same size as hq otherwise.
// Returns the new sample's index, or -1 with a message.
int64_t h5ds_append_sample(H5ds *f, int t, const Image *hq, const Image *lq, const H5dsSampleMeta *meta,
                           char *err, size_t errlen);
// deflate level for datasets written from now on (0..9, default 4).
void h5ds_set_deflate(H5ds *f, int level);
// Closes, flushes to disk and renames into place; frees f in every case. 0 or -1.
int h5ds_commit(H5ds *f, char *err, size_t errlen);
// Closes and removes the temp file; frees f.
void h5ds_abort(H5ds *f);
