// Counter-based random numbers for the data pipeline. Every random decision (which sample, where
// to crop, which flip, which noise) comes from a stream whose start is a hash of a key built from
// the things that identify it (seed, task, position in the sample stream), never from shared state,
// so a batch is a pure function of (seed, rank, world size, step) whatever the thread timing.
//
// The mixer is splitmix64's finaliser (Steele, Lea & Flood 2014); a stream is splitmix64 started
// at the key. Header-only: everything is static inline.
#pragma once
#include <math.h>
#include <stdint.h>

#define KEYED_RNG_GOLDEN 0x9E3779B97F4A7C15ull

// Bijective 64-bit mix (splitmix64 finaliser).
static inline uint64_t rng_mix(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

// Key of a child stream: combine a parent key with one more identifying value. Order matters
// (rng_key(rng_key(s, a), b) != rng_key(rng_key(s, b), a)), which is what keeps streams apart.
static inline uint64_t rng_key(uint64_t parent, uint64_t value) {
    return rng_mix(parent + KEYED_RNG_GOLDEN * (rng_mix(value) | 1));
}

// FNV-1a of a string: task names and file names enter keys through this (stable across machines).
static inline uint64_t rng_hash_string(const char *s) {
    uint64_t h = 0xCBF29CE484222325ull;
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 0x100000001B3ull;
    return h;
}

typedef struct {
    uint64_t state;
    double spare_normal;   // Box-Muller makes normals in pairs; the second waits here
    int has_spare;
} KeyedRng;

static inline KeyedRng keyed_rng(uint64_t key) {
    KeyedRng r = {key, 0.0, 0};
    return r;
}

static inline uint64_t rng_next(KeyedRng *r) {
    r->state += KEYED_RNG_GOLDEN;
    return rng_mix(r->state);
}

// Uniform double in [0, 1) with 53 random bits.
static inline double rng_uniform(KeyedRng *r) { return (double)(rng_next(r) >> 11) * (1.0 / 9007199254740992.0); }

// Uniform double in [lo, hi).
static inline double rng_range(KeyedRng *r, double lo, double hi) { return lo + (hi - lo) * rng_uniform(r); }

// Uniform integer in [0, n), n > 0 (multiply-shift on the top 32 bits; bias < n / 2^32).
static inline uint64_t rng_below(KeyedRng *r, uint64_t n) {
    if (n <= 0xFFFFFFFFull) return ((rng_next(r) >> 32) * n) >> 32;
    return rng_next(r) % n;
}

// Standard normal N(0, 1) by the Box-Muller transform.
static inline double rng_normal(KeyedRng *r) {
    if (r->has_spare) {
        r->has_spare = 0;
        return r->spare_normal;
    }
    double u1 = 1.0 - rng_uniform(r);   // (0, 1]: log stays finite
    double u2 = rng_uniform(r);
    double radius = sqrt(-2.0 * log(u1));
    r->spare_normal = radius * sin(6.283185307179586 * u2);
    r->has_spare = 1;
    return radius * cos(6.283185307179586 * u2);
}

// A keyed bijection of [0, n): element i of a random permutation of n items, computed in O(1)
// without storing the permutation. A 4-round Feistel network over the smallest even-bit domain
// 2^(2h) >= n (h <= 32: for n > 2^62 the domain is all of 2^64), with cycle walking to land back
// inside [0, n) (expected < 4 walks since 2^(2h) < 4n; the walk ends because i < n lies on the
// cycle it follows). Any n and any i < n are valid.
static inline uint64_t keyed_permute(uint64_t key, uint64_t n, uint64_t i) {
    if (n <= 1) return 0;
    int half_bits = 1;
    while (half_bits < 32 && (1ull << (2 * half_bits)) < n) half_bits++;
    uint64_t mask = half_bits == 32 ? 0xFFFFFFFFull : (1ull << half_bits) - 1;
    uint64_t x = i;
    do {
        uint64_t left = x >> half_bits, right = x & mask;
        for (int round = 0; round < 4; round++) {
            uint64_t f = rng_mix(rng_key(key, ((uint64_t)round << 56) ^ right)) & mask;
            uint64_t next_right = left ^ f;
            left = right;
            right = next_right;
        }
        x = (left << half_bits) | right;
    } while (x >= n);
    return x;
}
