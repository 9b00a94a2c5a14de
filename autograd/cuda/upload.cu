// Host-to-device copies that do not make the host wait: staged through pinned memory (a ring,
// autograd/staging_ring.h), then cudaMemcpyAsync on the compute stream (cuda_copy_h2d) or on the upload
// stream beside it (cuda_upload_async, for the next training batch while the current one computes).
// One host thread drives the CUDA backend, as everywhere else in it.
#include "autograd/cuda/device.h"

extern "C" {
#include "autograd/staging_ring.h"
}

#include <string.h>

#define STAGING_BYTES ((size_t)64 << 20)      // pinned staging memory, allocated at the first copy
#define STAGING_CHUNK (STAGING_BYTES / 4)      // a copy goes through the ring in pieces of at most this
#define DIRECT_COPY_MIN ((size_t)16 << 20)     // cuda_copy_h2d: larger copies (weights at load) go direct

static StagingRing ring;
static char *staging;  // pinned
static cudaEvent_t staged[STAGING_RING_MAX_LIVE];  // one per ring slot: the copy out of that region ran
static int staging_state;  // 0: not tried, 1: ready, -1: pinned memory unavailable (direct copies)
static cudaStream_t upload_stream;
static cudaEvent_t compute_mark, uploads_done;

static void staging_wait(void *ctx, int fence) {
    (void)ctx;
    CUDA_CHECK(cudaEventSynchronize(staged[fence]));
}

static bool staging_ready(void) {
    if (staging_state == 0) {
        dod_cuda_require("cuda_copy_h2d");
        if (cudaHostAlloc((void **)&staging, STAGING_BYTES, cudaHostAllocDefault) != cudaSuccess) {
            cudaGetLastError();  // no pinned memory: every copy goes direct (and waits), nothing else changes
            staging_state = -1;
            return false;
        }
        for (int i = 0; i < STAGING_RING_MAX_LIVE; i++)
            CUDA_CHECK(cudaEventCreateWithFlags(&staged[i], cudaEventDisableTiming));
        staging_ring_init(&ring, STAGING_BYTES, staging_wait, NULL);
        staging_state = 1;
    }
    return staging_state > 0;
}

// dst = src (bytes), queued on `stream` through the staging ring; src is free when this returns.
static void staged_copy(void *dst, const void *src, size_t bytes, cudaStream_t stream) {
    for (size_t done = 0; done < bytes;) {
        size_t n = bytes - done < STAGING_CHUNK ? bytes - done : STAGING_CHUNK, offset;
        int fence = staging_ring_reserve(&ring, n, &offset);  // waits only for the copies in its way
        memcpy(staging + offset, (const char *)src + done, n);
        CUDA_CHECK(cudaMemcpyAsync((char *)dst + done, staging + offset, n, cudaMemcpyHostToDevice, stream));
        CUDA_CHECK(cudaEventRecord(staged[fence], stream));
        done += n;
    }
}

void cuda_copy_h2d(void *dst, const void *src, size_t bytes) {
    if (!bytes) return;
    if (bytes >= DIRECT_COPY_MIN || !staging_ready()) {
        CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice));
        return;
    }
    staged_copy(dst, src, bytes, 0);
}

void cuda_upload_async(void *dst, const void *src, size_t bytes) {
    if (!bytes) return;
    if (!upload_stream) {
        dod_cuda_require("cuda_upload_async");
        // Non-blocking: the legacy default stream (our compute stream) must not serialise with it.
        CUDA_CHECK(cudaStreamCreateWithFlags(&upload_stream, cudaStreamNonBlocking));
        CUDA_CHECK(cudaEventCreateWithFlags(&compute_mark, cudaEventDisableTiming));
        CUDA_CHECK(cudaEventCreateWithFlags(&uploads_done, cudaEventDisableTiming));
    }
    // dst may still be read by work queued on the compute stream: the upload waits for it (on the device).
    CUDA_CHECK(cudaEventRecord(compute_mark, 0));
    CUDA_CHECK(cudaStreamWaitEvent(upload_stream, compute_mark, 0));
    if (staging_ready()) {
        staged_copy(dst, src, bytes, upload_stream);
    } else {  // without pinned memory the copy cannot overlap: copy now
        CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, upload_stream));
        CUDA_CHECK(cudaStreamSynchronize(upload_stream));
    }
    CUDA_CHECK(cudaEventRecord(uploads_done, upload_stream));
}

void cuda_wait_uploads(void) {
    if (upload_stream) CUDA_CHECK(cudaStreamWaitEvent(0, uploads_done, 0));
}
