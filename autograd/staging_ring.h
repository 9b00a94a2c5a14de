// A ring of host staging memory for asynchronous host-to-device copies (autograd/cuda/device.cu): a
// copy first lands in pinned memory taken from the ring, so the caller's buffer is free at once and the
// device copies from the ring while the host goes on. A region handed out stays in use until the copy
// that reads it has run (its fence, one per live region); the ring hands regions out in address order,
// so a new region can only overlap the oldest live ones, and reserving one waits for exactly those.
// Plain C and no device calls: the fence wait is a callback (cudaEventSynchronize on CUDA), so the CPU
// tests run this very logic (tests/test_staging_ring.c).
#pragma once
#include <stdbool.h>
#include <stddef.h>

#define STAGING_RING_MAX_LIVE 64  // regions in flight at once (each has a fence: an event on CUDA)
#define STAGING_RING_ALIGN 256

typedef struct {
    size_t offset, bytes;
} StagingRegion;

typedef struct {
    size_t size;  // bytes of staging memory
    size_t head;  // where the next region starts (unless it wraps to 0)
    StagingRegion live[STAGING_RING_MAX_LIVE];  // a FIFO of regions in flight, oldest at `first`
    int first, n_live;
    void (*wait)(void *ctx, int fence);  // blocks until the copy reading region `fence` has run
    void *ctx;
} StagingRing;

void staging_ring_init(StagingRing *r, size_t size, void (*wait)(void *ctx, int fence), void *ctx);
// Reserves a region of `bytes` (1 .. size, rounded up to STAGING_RING_ALIGN) and returns its fence (the
// slot to record the copy's completion in) and, in *offset, where it starts. First waits for (and
// retires) every live region the new one would overlap -- with a wrap to 0, also those in the skipped
// tail -- oldest first, and for the oldest when all STAGING_RING_MAX_LIVE slots are live.
int staging_ring_reserve(StagingRing *r, size_t bytes, size_t *offset);
