// Shared by the fuzz targets (tests/fuzz/fuzz_*.c): scratch files for parsers that take a path, a
// byte reader for structured fuzzing (the input chooses what to build), and seed writing.
// Header-only; each target includes it once.
#pragma once
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

// Each target writes its seed inputs into dir (fuzz_replay_NAME --write-seeds DIR). 0 on success.
int fuzz_write_seeds(const char *dir);

// A per-process scratch path "<TMPDIR or /tmp>/dod_fuzz_<pid>_<tag>" into buf.
static inline const char *fuzz_scratch(char *buf, size_t len, const char *tag) {
    const char *tmp = getenv("TMPDIR");
    snprintf(buf, len, "%s/dod_fuzz_%d_%s", tmp && tmp[0] ? tmp : "/tmp", (int)getpid(), tag);
    return buf;
}

// Writes size bytes to path (=). 0, or -1 when it cannot.
static inline int fuzz_write_file(const char *path, const void *data, size_t size) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t put = size ? fwrite(data, 1, size, f) : 0;
    return fclose(f) == 0 && put == size ? 0 : -1;
}

static inline int fuzz_seed(const char *dir, const char *name, const void *data, size_t size) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    if (fuzz_write_file(path, data, size)) {
        fprintf(stderr, "cannot write %s\n", path);
        return -1;
    }
    return 0;
}

// Structured fuzzing: the input is read as a stream of choices; past its end every choice is 0
// (so the empty input builds the pristine case and every byte changes one decision).
typedef struct {
    const uint8_t *p;
    size_t n, at;
} FuzzBytes;

static inline unsigned fuzz_u8(FuzzBytes *b) { return b->at < b->n ? b->p[b->at++] : 0; }
// A choice in [0, k).
static inline unsigned fuzz_pick(FuzzBytes *b, unsigned k) { return k ? fuzz_u8(b) % k : 0; }
static inline uint64_t fuzz_u64(FuzzBytes *b) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v |= (uint64_t)fuzz_u8(b) << (8 * i);
    return v;
}

// Copies the repository file src (relative to the source tree) into dir/name, as a seed.
static inline int fuzz_seed_from_repo(const char *dir, const char *src, const char *name) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", DOD_SOURCE_DIR, src);
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    static char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    return fuzz_seed(dir, name, buf, n);
}
