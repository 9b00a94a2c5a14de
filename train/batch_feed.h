// Loader batches as model inputs, fetched one micro-batch ahead. While the device computes batch b, the
// host takes batch b + 1 from the loader and, on CUDA, starts its copy on the upload stream (staged through
// pinned memory: cuda_upload_async, autograd/cuda/cuda_backend.h) into the second of two device buffers;
// before batch b + 1's forward the compute stream waits for that copy (an event; the host does not wait).
// On the CPU the prefetch is the loader call made earlier: the same batches, the same tensors. The loader
// makes each batch from its index alone (data/loader.h), so fetching early changes only the timing; an
// error while fetching ahead is kept and reported by the get of that batch, as it was before.
#pragma once
#include "autograd/tensor.h"
#include "data/loader.h"

typedef struct BatchFeed BatchFeed;

// A feed of `loader`'s batches onto dev (the loader stays the caller's; close it after the feed).
BatchFeed *batch_feed_new(Loader *loader, Device dev);
void batch_feed_free(BatchFeed *f);  // NULL ok
// lq and hq of loader batch b, [n, 3, crop, crop] f32 on the feed's device (=): on the CPU new arena
// tensors (call after ag_step_reset), on CUDA views of a device buffer of the feed (valid until the get of
// batch b + 2; the compute stream waits for its upload). The prefetched batch when batch_feed_prefetch(f, b)
// came last, else fetched now. 0, or -1 with the loader's message.
int batch_feed_get(BatchFeed *f, int64_t b, Tensor **lq, Tensor **hq, char *err, size_t errlen);
// Fetches batch b ahead: call after queueing the current batch's work. A loader error is kept for
// batch_feed_get(f, b).
void batch_feed_prefetch(BatchFeed *f, int64_t b);
