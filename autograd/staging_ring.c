// Staging ring for asynchronous host-to-device copies (see autograd/staging_ring.h).
#include "autograd/staging_ring.h"

#include "autograd/base.h"

void staging_ring_init(StagingRing *r, size_t size, void (*wait)(void *ctx, int fence), void *ctx) {
    *r = (StagingRing){.size = size, .wait = wait, .ctx = ctx};
}

static bool overlaps(const StagingRegion *a, size_t lo, size_t hi) { return a->offset < hi && lo < a->offset + a->bytes; }

// Waits for the oldest live region and retires it.
static void retire_oldest(StagingRing *r) {
    r->wait(r->ctx, r->first);
    r->first = (r->first + 1) % STAGING_RING_MAX_LIVE;
    r->n_live--;
}

int staging_ring_reserve(StagingRing *r, size_t bytes, size_t *offset) {
    size_t need = (bytes + STAGING_RING_ALIGN - 1) / STAGING_RING_ALIGN * STAGING_RING_ALIGN;
    DOD_CHECK(bytes >= 1 && need <= r->size, "staging_ring_reserve", "%zu bytes: the ring holds %zu", bytes, r->size);
    // The claim runs from head: [head, head + need), or [head, size) + [0, need) when it wraps; the live
    // regions it meets are the oldest ones, in order.
    bool wrap = r->head + need > r->size;
    size_t start = wrap ? 0 : r->head;
    while (r->n_live > 0) {
        const StagingRegion *old = &r->live[r->first];
        bool hit = wrap ? overlaps(old, r->head, r->size) || overlaps(old, 0, need) : overlaps(old, start, start + need);
        if (!hit && r->n_live < STAGING_RING_MAX_LIVE) break;
        retire_oldest(r);
    }
    int fence = (r->first + r->n_live) % STAGING_RING_MAX_LIVE;
    r->live[fence] = (StagingRegion){start, need};
    r->n_live++;
    r->head = start + need;
    *offset = start;
    return fence;
}
