// Loader batches fetched one micro-batch ahead (see train/batch_feed.h).
#include "train/batch_feed.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/cuda/cuda_backend.h"

struct BatchFeed {
    Loader *loader;
    Device dev;
    Batch batch;       // the loader's host batch of the last fetch
    int64_t fetched;   // the batch index the last fetch was for (-1: none)
    int fetch_rc;      // its result, and the loader's message when it failed
    char fetch_err[1024];
    // CUDA: two device buffers per input; batch b lives in slot b % 2
    size_t bytes;
    Tensor *lq[2], *hq[2];
};

BatchFeed *batch_feed_new(Loader *loader, Device dev) {
    BatchFeed *f = dod_calloc(sizeof *f, "batch feed");
    f->loader = loader;
    f->dev = dev;
    f->fetched = -1;
    loader_batch_init(loader, &f->batch);
    int64_t shape[4] = {f->batch.n, 3, f->batch.crop, f->batch.crop};
    f->bytes = sizeof(float) * (size_t)(shape[0] * shape[1] * shape[2] * shape[3]);
    for (int k = 0; dev == DEV_CUDA && k < 2; k++) {
        f->lq[k] = tensor_wrap_persistent("batch lq", 4, shape, DT_F32, device_malloc(dev, f->bytes, "batch lq"));
        f->hq[k] = tensor_wrap_persistent("batch hq", 4, shape, DT_F32, device_malloc(dev, f->bytes, "batch hq"));
        f->lq[k]->device = f->hq[k]->device = dev;
    }
    return f;
}

void batch_feed_free(BatchFeed *f) {
    if (!f) return;
    for (int k = 0; k < 2; k++)
        if (f->lq[k]) {
            device_free(f->dev, f->lq[k]->data);
            device_free(f->dev, f->hq[k]->data);
            tensor_free(f->lq[k]);
            tensor_free(f->hq[k]);
        }
    batch_free(&f->batch);
    free(f);
}

// Takes batch b from the loader and, on CUDA, starts its upload into slot b % 2.
static void fetch(BatchFeed *f, int64_t b) {
    f->fetched = b;
    f->fetch_rc = loader_get(f->loader, b, &f->batch, f->fetch_err, sizeof f->fetch_err);
    if (f->fetch_rc || f->dev != DEV_CUDA) return;
    cuda_upload_async(f->lq[b % 2]->data, f->batch.lq, f->bytes);  // after the compute stream's use of the slot
    cuda_upload_async(f->hq[b % 2]->data, f->batch.hq, f->bytes);
}

void batch_feed_prefetch(BatchFeed *f, int64_t b) { fetch(f, b); }

// A new arena tensor holding `host` (the CPU path).
static Tensor *host_tensor(const BatchFeed *f, const float *host) {
    Tensor *t = tensor_new4(f->batch.n, 3, f->batch.crop, f->batch.crop);
    memcpy(t->data, host, f->bytes);
    return t;
}

int batch_feed_get(BatchFeed *f, int64_t b, Tensor **lq, Tensor **hq, char *err, size_t errlen) {
    if (f->fetched != b) fetch(f, b);
    if (f->fetch_rc) {
        snprintf(err, errlen, "%s", f->fetch_err);
        return -1;
    }
    if (f->dev == DEV_CUDA) {
        cuda_wait_uploads();  // the compute stream waits for the copies into slot b % 2
        *lq = f->lq[b % 2];
        *hq = f->hq[b % 2];
        return 0;
    }
    *lq = host_tensor(f, f->batch.lq);
    *hq = host_tensor(f, f->batch.hq);
    return 0;
}
