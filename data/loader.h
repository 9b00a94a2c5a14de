// The training/eval data loader: random LQ/HQ crops from a dod dataset file (data/h5ds.h), read by
// background threads through HDF5 hyperslabs, in batches with a fixed count per task.
//
// Determinism contract (docs/data-format.md, "Loader"): batch `step` of rank r in a world of W
// ranks is a pure function of (file contents, tasks and counts, crop, flips, seed, r, W, step),
// whatever the number of threads, the prefetch depth or the order of loader_get calls; so a run
// resumed at step s sees the batches it would have seen. Per task, the samples of all ranks and
// steps form one stream: position p = (step * W + r) * count + j (j-th slot of the task in the
// batch) takes sample perm_e(p mod n) of epoch e = p div n, perm_e a keyed permutation of the
// task's n samples, so ranks never share samples within an epoch and every epoch is a reshuffle.
// Crop offsets, flips, the noise sigma and the noise itself come from a stream keyed by
// (seed, task name, p).
//
// Implemented in data/h5_loader.c (compiled only with HDF5).
#pragma once
#include <stddef.h>
#include <stdint.h>

#define LOADER_MAX_TASKS 16
#define LOADER_MAX_BATCH 1024

typedef struct {
    char name[64];   // task name in the file
    int count;       // samples of this task in every batch
} LoaderTask;

typedef struct {
    const char *path;       // the .h5 file
    int n_tasks;
    LoaderTask tasks[LOADER_MAX_TASKS];   // batch order: task 0's samples first, then task 1's, ...
    int crop;               // square crop side in pixels
    int flips;              // random horizontal and vertical flips (each with probability 1/2)
    int resize_small;       // images smaller than the crop are resized up (bilinear, aspect kept,
                            // shorter side = crop) as in the DOD code; 0: such an image is an error
    uint64_t seed;
    int rank, world_size;   // data-parallel sharding
    int n_threads;          // background readers; 0 = read in the calling thread (no threads)
    int prefetch;           // batches prepared ahead of the one asked for
} LoaderConfig;

typedef struct {
    int64_t step;
    int n, crop;              // n samples of crop x crop
    float *lq, *hq;           // n x 3 x crop x crop, value / 127.5 - 1 (in [-1, 1]): what the model takes
    uint8_t *lq_u8, *hq_u8;   // n x crop x crop x 3: the same crops as bytes (HWC, as stored)
    int *task;                // index into LoaderConfig.tasks of each sample
    int64_t *sample;          // index of each sample within its task in the file
    float *sigma;             // noise sigma of gaussian_noise tasks (0..255 scale); 0 for stored LQ
} Batch;

typedef struct Loader Loader;

// crop 256, flips on, resize_small on, seed 123, rank 0 of 1, 2 threads, prefetch 2, no tasks.
void loader_config_default(LoaderConfig *cfg);
// Sets cfg tasks from "dehaze:3,derain:2,denoise:2". Returns 0 or -1 with a message.
int loader_parse_tasks(LoaderConfig *cfg, const char *spec, char *err, size_t errlen);

// Opens the file, checks the configuration (tasks present and non-empty, rank < world size, ...)
// and starts the threads. NULL with a message on error.
Loader *loader_open(const LoaderConfig *cfg, char *err, size_t errlen);
void loader_close(Loader *L);
int64_t loader_task_samples(const Loader *L, int task);   // samples in the file of config task `task`

// Allocates (=) a batch of the loader's shape; loader_get fills it. batch_free releases it.
void loader_batch_init(const Loader *L, Batch *b);
void batch_free(Batch *b);
// Fills (=) out with batch `step` (>= 0), swapping buffers with the prefetched one (no copy).
// Returns 0, or -1 with a message naming the sample at fault (a corrupt chunk, a too-small image).
int loader_get(Loader *L, int64_t step, Batch *out, char *err, size_t errlen);
// Makes sample `slot` of batch `step` into position `slot` of b (=), in the calling thread: the
// pure function the threads evaluate. Returns 0 or -1 with a message.
int loader_make_sample(Loader *L, int64_t step, int slot, Batch *b, char *err, size_t errlen);
