// A caching allocator over any raw allocator: freed blocks are kept and handed out again for
// requests between half their size and their size (best fit), so memory that comes and goes every
// step (activation gradients, parked outputs, device tensors) is allocated from the system once.
// Serves the host's activation-gradient buffers (autograd/tensor.c) and the CUDA caching allocator
// (autograd/cuda/device.cu). Not thread-safe; blocks are never given back to the raw allocator.
#pragma once
#include <stddef.h>

typedef struct {
    void *ptr;
    size_t size;
} CacheBlock;

typedef struct {
    void *(*raw_alloc)(size_t bytes, const char *what);  // fails itself (naming what) when out of memory
    size_t align;                                        // request sizes are rounded up to this (power of 2)
    CacheBlock *live, *free;
    int n_live, cap_live, n_free, cap_free;
    size_t in_use_bytes, peak_bytes;                     // live block bytes now / at most
} BlockCache;

// A block of at least `bytes` (uninitialised): a cached one when one fits, else raw_alloc.
void *block_cache_alloc(BlockCache *c, size_t bytes, const char *what);
// Returns ptr's block to the cache (NULL: nothing); fatal, naming `who`, for a pointer the cache did
// not hand out or that was freed already. Returns the block's size.
size_t block_cache_free(BlockCache *c, void *ptr, const char *who);
