// The caching allocator of block_cache.h.
#include "autograd/block_cache.h"

#include "autograd/tensor.h"

#include <stdlib.h>

static void block_push(CacheBlock **arr, int *n, int *cap, CacheBlock b) {
    if (*n == *cap) {
        *cap = *cap ? 2 * *cap : 256;
        *arr = realloc(*arr, sizeof(CacheBlock) * (size_t)*cap);
        DOD_CHECK(*arr != NULL, "block cache", "out of host memory tracking %d blocks", *cap);
    }
    (*arr)[(*n)++] = b;
}

void *block_cache_alloc(BlockCache *c, size_t bytes, const char *what) {
    bytes = (bytes + c->align - 1) & ~(c->align - 1);
    int best = -1;
    for (int i = 0; i < c->n_free; i++)  // best fit among blocks no more than twice the request
        if (c->free[i].size >= bytes && c->free[i].size <= 2 * bytes &&
            (best < 0 || c->free[i].size < c->free[best].size))
            best = i;
    CacheBlock b;
    if (best >= 0) {
        b = c->free[best];
        c->free[best] = c->free[--c->n_free];
    } else {
        b.ptr = c->raw_alloc(bytes, what);
        b.size = bytes;
    }
    block_push(&c->live, &c->n_live, &c->cap_live, b);
    c->in_use_bytes += b.size;
    if (c->in_use_bytes > c->peak_bytes) c->peak_bytes = c->in_use_bytes;
    return b.ptr;
}

size_t block_cache_free(BlockCache *c, void *ptr, const char *who) {
    if (!ptr) return 0;
    // Newest first: long-lived blocks (weights) sit at the front, short-lived ones come and go at the back.
    for (int i = c->n_live - 1; i >= 0; i--) {
        if (c->live[i].ptr != ptr) continue;
        CacheBlock b = c->live[i];
        c->live[i] = c->live[--c->n_live];
        c->in_use_bytes -= b.size;
        block_push(&c->free, &c->n_free, &c->cap_free, b);
        return b.size;
    }
    dod_fatal(who, "pointer %p was not allocated by this cache (or was freed twice)", ptr);
}
