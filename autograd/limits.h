// Caps on what a file may declare before anything is allocated for it. Every size a user's file
// states (image dimensions, chunk sizes, model-config widths and counts) is checked against these
// before use, so a small malformed file cannot ask for gigabytes or hours. Each cap has a default
// chosen well above real data and can be raised (or lowered) through its environment variable;
// docs/data-format.md ("Limits") lists them.
#pragma once
#include <stddef.h>
#include <stdint.h>

typedef enum {
    DOD_LIMIT_IMAGE_SIDE,     // DOD_MAX_IMAGE_SIDE: largest image height or width, pixels (16384)
    DOD_LIMIT_IMAGE_PIXELS,   // DOD_MAX_IMAGE_PIXELS: largest height x width, pixels (67108864 = 8192^2)
    DOD_LIMIT_ALLOC_MIB,      // DOD_MAX_ALLOC_MIB: largest single buffer sized by a file's declaration (4096)
    DOD_LIMIT_COUNT
} DodLimit;

// The cap's current value: its environment variable when set (a positive integer; anything else
// is fatal, naming the variable), else the default.
int64_t dod_limit(DodLimit which);
// The environment variable that sets the cap ("DOD_MAX_IMAGE_SIDE", ...).
const char *dod_limit_env(DodLimit which);

// 0 when an h x w image is within the side and pixel caps; otherwise -1 with why = "HxW ... exceeds
// DOD_MAX_IMAGE_SIDE = N (raise it to ...)" (the caller adds the file or sample).
int dod_limit_check_image(int64_t h, int64_t w, char *why, size_t len);
// 0 when a buffer of `bytes` sized from a file's declaration is within DOD_MAX_ALLOC_MIB; otherwise
// -1 with why naming `what`, the size and the variable.
int dod_limit_check_alloc(uint64_t bytes, const char *what, char *why, size_t len);
