// Caps on file-declared sizes (see autograd/limits.h).
#include "autograd/limits.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "autograd/tensor.h"

static const struct {
    const char *env;
    int64_t dflt, max;   // max: what the code handles (image sides are ints; pixel counts fit int64 products)
} LIMITS[DOD_LIMIT_COUNT] = {
    [DOD_LIMIT_IMAGE_SIDE] = {"DOD_MAX_IMAGE_SIDE", 16384, 1 << 30},
    [DOD_LIMIT_IMAGE_PIXELS] = {"DOD_MAX_IMAGE_PIXELS", 67108864, 1ll << 40},
    [DOD_LIMIT_ALLOC_MIB] = {"DOD_MAX_ALLOC_MIB", 4096, 1 << 30},
};

const char *dod_limit_env(DodLimit which) { return LIMITS[which].env; }

int64_t dod_limit(DodLimit which) {
    const char *v = getenv(LIMITS[which].env);
    if (!v || !v[0]) return LIMITS[which].dflt;
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (errno || end == v || *end || x < 1 || x > LIMITS[which].max)
        dod_fatal(LIMITS[which].env, "'%s' is not an integer in [1, %" PRId64 "] (default %" PRId64 ")", v,
                  LIMITS[which].max, LIMITS[which].dflt);
    return x;
}

int dod_limit_check_image(int64_t h, int64_t w, char *why, size_t len) {
    int64_t side = dod_limit(DOD_LIMIT_IMAGE_SIDE), pixels = dod_limit(DOD_LIMIT_IMAGE_PIXELS);
    if (h < 1 || w < 1) {
        snprintf(why, len, "image of %" PRId64 "x%" PRId64 " (HxW) pixels is empty", h, w);
        return -1;
    }
    if (h > side || w > side) {
        snprintf(why, len, "image of %" PRId64 "x%" PRId64 " (HxW) pixels exceeds the largest side %s = %" PRId64
                           " (set the environment variable to allow larger images)",
                 h, w, LIMITS[DOD_LIMIT_IMAGE_SIDE].env, side);
        return -1;
    }
    if (w > pixels / h) {   // h * w > pixels without forming a product that could overflow
        snprintf(why, len, "image of %" PRId64 "x%" PRId64 " (HxW) = %" PRId64 " pixels exceeds %s = %" PRId64
                           " (set the environment variable to allow larger images)",
                 h, w, h * w, LIMITS[DOD_LIMIT_IMAGE_PIXELS].env, pixels);
        return -1;
    }
    return 0;
}

int dod_limit_check_alloc(uint64_t bytes, const char *what, char *why, size_t len) {
    uint64_t mib = (uint64_t)dod_limit(DOD_LIMIT_ALLOC_MIB);
    if (bytes / 1048576u < mib) return 0;
    snprintf(why, len, "%s would need %.1f MiB, more than %s = %" PRIu64 " (set the environment variable to allow it)",
             what, bytes / 1048576.0, LIMITS[DOD_LIMIT_ALLOC_MIB].env, mib);
    return -1;
}
