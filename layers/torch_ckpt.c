// PyTorch checkpoint reader (zip and legacy formats). See torch_ckpt.h; for the formats,
// torch/serialization.py (_save, _legacy_save, _load, _legacy_load).
#include "layers/torch_ckpt.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#ifdef DOD_HAVE_LIBZIP
#include <zip.h>
#endif

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "torch storages are read as little-endian bytes without swapping"
#endif

#define MAX_PICKLE_BYTES (1ull << 31)   // data.pkl of a zip checkpoint (a 7 GB SD checkpoint's is ~100 kB)
#define MAX_DEPTH 64                    // nesting of containers holding tensors
#define MAX_VISITS (1u << 22)           // values visited while listing tensors (shared containers)
#define MAX_NAME 1024                   // bytes of a key path
#define ZIP_MAX_RATIO 1100              // deflate expands at most ~1032:1

static const uint8_t legacy_magic[10] = {0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19};

typedef struct {
    char *key;
    TorchDType dtype;
    int64_t numel;          // elements
    int64_t zip_index;      // zip: the archive entry
    uint64_t file_offset;   // legacy: where the bytes start in the file
} Storage;

struct TorchCkpt {
    char *path;
    bool zip_format;
    const uint8_t *file_bytes;   // the whole file
    size_t size;
    bool mapped;            // data is our mmap (else caller memory)
#ifdef DOD_HAVE_LIBZIP
    zip_t *za;
#endif
    Storage *storages;
    int nstorages;
    TorchTensor *tensors;
    int n, cap;
    int *by_name;           // tensor indices sorted by name
};

static int fail(char *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(char *err, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, TORCH_ERR_LEN, fmt, ap);
    va_end(ap);
    return -1;
}

// Length of the legacy magic-number pickle at head (PROTO p, an optional FRAME, LONG1 10 <magic>,
// STOP), or 0 when head does not start with it.
static size_t legacy_magic_len(const uint8_t *head, size_t n) {
    size_t i = 0;
    if (n < 2 || head[0] != 0x80 || head[1] < 2 || head[1] > 5) return 0;
    i = 2;
    if (n > i && head[i] == 0x95) i += 9;   // FRAME + 8-byte length
    if (n < i + 13 || head[i] != 0x8a || head[i + 1] != 10 || memcmp(head + i + 2, legacy_magic, 10) || head[i + 12] != '.')
        return 0;
    return i + 13;
}

bool torch_ckpt_sniff(const uint8_t *head, size_t n) {
    if (n >= 4 && !memcmp(head, "PK\x03\x04", 4)) return true;
    return legacy_magic_len(head, n) > 0;
}

const char *torch_ckpt_path(const TorchCkpt *ck) { return ck->path; }
const char *torch_ckpt_format(const TorchCkpt *ck) { return ck->zip_format ? "zip" : "legacy"; }
int torch_ckpt_count(const TorchCkpt *ck) { return ck->n; }
const TorchTensor *torch_ckpt_tensor(const TorchCkpt *ck, int i) { return i >= 0 && i < ck->n ? &ck->tensors[i] : NULL; }

static int cmp_name(const void *a, const void *b, void *ck) {
    const TorchTensor *t = ((const TorchCkpt *)ck)->tensors;
    return strcmp(t[*(const int *)a].name, t[*(const int *)b].name);
}

const TorchTensor *torch_ckpt_find(const TorchCkpt *ck, const char *name) {
    int lo = 0, hi = ck->n - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        const TorchTensor *t = &ck->tensors[ck->by_name[mid]];
        int c = strcmp(name, t->name);
        if (!c) return t;
        if (c < 0) hi = mid - 1; else lo = mid + 1;
    }
    return NULL;
}

// ---- listing the tensors of the object ------------------------------------------------------------
typedef struct {
    TorchCkpt *ck;
    const char *path;
    char *err;
    unsigned visits;
    const PyVal **tensor_vals;   // the PV_TENSOR behind each listed tensor (cap ck->cap)
} Walk;

static int add_tensor(Walk *w, const PyVal *v, const char *name) {
    TorchCkpt *ck = w->ck;
    if (ck->n == ck->cap) {
        int cap = ck->cap ? 2 * ck->cap : 64;
        TorchTensor *t = realloc(ck->tensors, sizeof(TorchTensor) * (size_t)cap);
        const PyVal **tv = t ? realloc(w->tensor_vals, sizeof(PyVal *) * (size_t)cap) : NULL;
        if (t) ck->tensors = t;
        if (!tv) return fail(w->err, "%s: out of memory listing tensors", w->path);
        w->tensor_vals = tv;
        ck->cap = cap;
    }
    TorchTensor *t = &ck->tensors[ck->n];
    memset(t, 0, sizeof *t);
    t->name = strdup(name);
    if (!t->name) return fail(w->err, "%s: out of memory", w->path);
    t->ndim = v->tensor.ndim;
    memcpy(t->shape, v->tensor.shape, sizeof t->shape);
    memcpy(t->stride, v->tensor.stride, sizeof t->stride);
    w->tensor_vals[ck->n++] = v;
    return 0;
}

static bool holds_tensors(const PyVal *v) {
    return v->kind == PV_TENSOR || v->kind == PV_DICT || v->kind == PV_LIST || v->kind == PV_TUPLE;
}

// The path component of a dict key, or NULL for a key kind that cannot name anything.
static const char *key_component(const PyVal *k, char buf[32]) {
    switch (k->kind) {
    case PV_STR:
    case PV_BYTES: return strlen(k->str.s) == k->str.len ? k->str.s : NULL;   // no NUL inside
    case PV_INT: snprintf(buf, 32, "%lld", (long long)k->i); return buf;
    case PV_BOOL: return k->b ? "True" : "False";
    case PV_NONE: return "None";
    default: return NULL;
    }
}

static int walk(Walk *w, const PyVal *v, const char *name, int depth) {
    if (++w->visits > MAX_VISITS)
        return fail(w->err, "%s: more than %u values to visit (containers shared many times over?)", w->path, MAX_VISITS);
    if (depth > MAX_DEPTH) return fail(w->err, "%s: %s: containers nested deeper than %d", w->path, name, MAX_DEPTH);
    char child[MAX_NAME + 1], num[32];
    if (v->kind == PV_TENSOR) return add_tensor(w, v, *name ? name : "tensor");
    if (v->kind == PV_LIST || v->kind == PV_TUPLE) {
        for (size_t i = 0; i < v->seq.n; i++) {
            if (!holds_tensors(v->seq.items[i])) continue;
            int k = snprintf(child, sizeof child, "%s%s%zu", name, *name ? "/" : "", i);
            if (k < 0 || k > MAX_NAME) return fail(w->err, "%s: a key path is longer than %d bytes: %.80s...", w->path, MAX_NAME, name);
            if (walk(w, v->seq.items[i], child, depth + 1)) return -1;
        }
        return 0;
    }
    if (v->kind != PV_DICT) return 0;
    for (size_t i = 0; i < v->dict.n; i++) {
        const PyVal *key = v->dict.kv[2 * i], *val = v->dict.kv[2 * i + 1];
        if (!holds_tensors(val)) continue;
        const char *comp = key_component(key, num);
        if (!comp) return fail(w->err, "%s: %s: a dict key of kind %d (not a string or integer) holds tensors", w->path,
                               *name ? name : "(root)", (int)key->kind);
        // A Lightning-style root {"state_dict": {...}}: its tensors are listed without the prefix.
        if (depth == 0 && !strcmp(comp, "state_dict") && val->kind == PV_DICT) {
            if (walk(w, val, "", depth + 1)) return -1;
            continue;
        }
        int k = snprintf(child, sizeof child, "%s%s%s", name, *name ? "/" : "", comp);
        if (k < 0 || k > MAX_NAME) return fail(w->err, "%s: a key path is longer than %d bytes: %.80s...", w->path, MAX_NAME, name);
        if (walk(w, val, child, depth + 1)) return -1;
    }
    return 0;
}

// The storage table: one entry per key, with one dtype and size; each tensor linked to its entry and
// its shape checked against the storage (or the legacy storage view) it lies in.
static int link_storages(Walk *w) {
    TorchCkpt *ck = w->ck;
    ck->storages = calloc((size_t)(ck->n ? ck->n : 1), sizeof(Storage));
    if (!ck->storages) return fail(w->err, "%s: out of memory", w->path);
    for (int i = 0; i < ck->n; i++) {
        TorchTensor *t = &ck->tensors[i];
        const PyVal *sv = w->tensor_vals[i]->tensor.storage;
        int s = 0;
        while (s < ck->nstorages && strcmp(ck->storages[s].key, sv->storage.key)) s++;
        if (s == ck->nstorages) {
            ck->storages[s] = (Storage){.key = strdup(sv->storage.key), .dtype = sv->storage.dtype,
                                        .numel = sv->storage.numel, .zip_index = -1};
            if (!ck->storages[s].key) return fail(w->err, "%s: out of memory", w->path);
            ck->nstorages++;
        } else if (ck->storages[s].dtype != sv->storage.dtype || ck->storages[s].numel != sv->storage.numel) {
            return fail(w->err, "%s: tensor %s: storage %s is declared as %lld x %s and elsewhere as %lld x %s", w->path,
                        t->name, sv->storage.key, (long long)sv->storage.numel, torch_dtype_name(sv->storage.dtype),
                        (long long)ck->storages[s].numel, torch_dtype_name(ck->storages[s].dtype));
        }
        t->storage = s;
        t->dtype = sv->storage.dtype;
        // numel and the last element reached, without overflow.
        uint64_t numel = 1, last = (uint64_t)w->tensor_vals[i]->tensor.offset;
        const uint64_t limit = 1ull << 62;
        bool over = false;
        for (int d = 0; d < t->ndim && !over; d++) {
            uint64_t sz = (uint64_t)t->shape[d], st = (uint64_t)t->stride[d], reach;
            over = __builtin_mul_overflow(numel, sz, &numel) || numel > limit;
            if (sz && !over) over = __builtin_mul_overflow(sz - 1, st, &reach) || __builtin_add_overflow(last, reach, &last) || last > limit;
        }
        if (over) return fail(w->err, "%s: tensor %s: shape or strides overflow", w->path, t->name);
        // Views that repeat elements (zero strides) are bounded, so a small file cannot ask for a huge read.
        if (numel > 64 * (uint64_t)(sv->storage.numel > 0 ? sv->storage.numel : 1))
            return fail(w->err, "%s: tensor %s has %llu elements over a storage of %lld (more than 64x: refused)", w->path,
                        t->name, (unsigned long long)numel, (long long)sv->storage.numel);
        t->numel = (int64_t)numel;
        uint64_t view_numel = (uint64_t)sv->storage.view_numel;
        if (numel > 0 && last >= view_numel)
            return fail(w->err, "%s: tensor %s reaches element %llu of a storage of %llu elements (storage %s)", w->path,
                        t->name, (unsigned long long)last, (unsigned long long)view_numel, sv->storage.key);
        t->storage_offset = sv->storage.view_offset + w->tensor_vals[i]->tensor.offset;
    }
    // A storage cannot hold more than the file (a deflated zip entry: than the file inflated at the
    // deflate limit); checked before anything is allocated for it.
    uint64_t most = ck->zip_format ? (uint64_t)ck->size * ZIP_MAX_RATIO : (uint64_t)ck->size;
    for (int s = 0; s < ck->nstorages; s++) {
        uint64_t bytes;
        if (__builtin_mul_overflow((uint64_t)ck->storages[s].numel, torch_dtype_size(ck->storages[s].dtype), &bytes) ||
            bytes > most)
            return fail(w->err, "%s: storage %s declares %lld elements of %s, more than the file holds", w->path,
                        ck->storages[s].key, (long long)ck->storages[s].numel, torch_dtype_name(ck->storages[s].dtype));
    }
    return 0;
}

// Lists the tensors of root into ck, links them to storages, and sorts names (refusing repeats).
static int list_tensors(TorchCkpt *ck, const PyVal *root, char *err) {
    Walk w = {.ck = ck, .path = ck->path, .err = err};
    int rc = walk(&w, root, "", 0);
    if (!rc) rc = link_storages(&w);
    free(w.tensor_vals);
    if (rc) return rc;
    ck->by_name = malloc(sizeof(int) * (size_t)(ck->n ? ck->n : 1));
    if (!ck->by_name) return fail(err, "%s: out of memory", ck->path);
    for (int i = 0; i < ck->n; i++) ck->by_name[i] = i;
    qsort_r(ck->by_name, (size_t)ck->n, sizeof(int), cmp_name, ck);
    for (int i = 1; i < ck->n; i++)
        if (!strcmp(ck->tensors[ck->by_name[i]].name, ck->tensors[ck->by_name[i - 1]].name))
            return fail(err, "%s: tensor name %s appears twice", ck->path, ck->tensors[ck->by_name[i]].name);
    return 0;
}

// ---- the legacy format ------------------------------------------------------------------------------
static int open_legacy(TorchCkpt *ck, char *err) {
    const uint8_t *p = ck->file_bytes, *end = ck->file_bytes + ck->size;
    size_t used = legacy_magic_len(p, ck->size);
    if (!used) return fail(err, "%s: not a PyTorch checkpoint (no zip header, no legacy magic number)", ck->path);
    p += used;
    char who[600], perr[PICKLE_ERR_LEN];
    const PyVal *v;
    // The protocol version and the sys-info dict.
    snprintf(who, sizeof who, "%s: protocol version pickle", ck->path);
    Pickle *pk = pickle_load(p, (size_t)(end - p), who, &v, &used, perr);
    if (!pk) return fail(err, "%s", perr);
    bool ok = v->kind == PV_INT && v->i == 1001;
    pickle_free(pk);
    if (!ok) return fail(err, "%s: legacy protocol version is not 1001", ck->path);
    p += used;
    snprintf(who, sizeof who, "%s: sys-info pickle", ck->path);
    if (!(pk = pickle_load(p, (size_t)(end - p), who, &v, &used, perr))) return fail(err, "%s", perr);
    bool big_endian = false;
    if (v->kind == PV_DICT)
        for (size_t i = 0; i < v->dict.n; i++) {
            const PyVal *k = v->dict.kv[2 * i], *x = v->dict.kv[2 * i + 1];
            if (k->kind == PV_STR && !strcmp(k->str.s, "little_endian") && x->kind == PV_BOOL && !x->b) big_endian = true;
        }
    pickle_free(pk);
    if (big_endian) return fail(err, "%s: written on a big-endian machine (not supported)", ck->path);
    p += used;
    // The object.
    snprintf(who, sizeof who, "%s: main pickle", ck->path);
    Pickle *main = pickle_load(p, (size_t)(end - p), who, &v, &used, perr);
    if (!main) return fail(err, "%s", perr);
    p += used;
    int rc = list_tensors(ck, v, err);
    // The storage keys, then the storages in that order.
    Pickle *keys = NULL;
    if (!rc) {
        snprintf(who, sizeof who, "%s: storage key list", ck->path);
        if (!(keys = pickle_load(p, (size_t)(end - p), who, &v, &used, perr))) rc = fail(err, "%s", perr);
        else if (v->kind != PV_LIST) rc = fail(err, "%s: the storage key list is a %d, not a list", ck->path, (int)v->kind);
        p += used;
    }
    for (size_t i = 0; !rc && i < v->seq.n; i++) {
        const PyVal *k = v->seq.items[i];
        if (k->kind != PV_STR) {
            rc = fail(err, "%s: storage key %zu is not a string", ck->path, i);
            break;
        }
        int s = 0;
        while (s < ck->nstorages && strcmp(ck->storages[s].key, k->str.s)) s++;
        if (s == ck->nstorages) {
            rc = fail(err, "%s: storage %s is listed but no tensor uses it (its element size is unknown)", ck->path, k->str.s);
            break;
        }
        Storage *st = &ck->storages[s];
        if ((size_t)(end - p) < 8) {
            rc = fail(err, "%s: truncated: storage %s (%zu of %zu) is missing", ck->path, st->key, i + 1, v->seq.n);
            break;
        }
        uint64_t count = 0;
        for (int b = 7; b >= 0; b--) count = (count << 8) | p[b];
        p += 8;
        uint64_t bytes = (uint64_t)st->numel * torch_dtype_size(st->dtype);   // checked against the size in link_storages
        if (count != (uint64_t)st->numel || st->file_offset) {
            rc = fail(err, "%s: storage %s holds %llu elements, its tensors declare %lld%s", ck->path, st->key,
                      (unsigned long long)count, (long long)st->numel, st->file_offset ? " (or it is listed twice)" : "");
            break;
        }
        if (bytes > (uint64_t)(end - p)) {
            rc = fail(err, "%s: truncated: storage %s needs %llu bytes, %zu are left", ck->path, st->key,
                      (unsigned long long)bytes, (size_t)(end - p));
            break;
        }
        st->file_offset = (uint64_t)(p - ck->file_bytes);
        p += bytes;
    }
    for (int s = 0; !rc && s < ck->nstorages; s++)
        if (!ck->storages[s].file_offset) rc = fail(err, "%s: storage %s is not in the storage key list", ck->path, ck->storages[s].key);
    pickle_free(keys);
    pickle_free(main);
    return rc;
}

// ---- the zip format -----------------------------------------------------------------------------------
#ifdef DOD_HAVE_LIBZIP
// Reads n bytes from byte `from` of entry idx into dst.
static int zip_read_range(TorchCkpt *ck, int64_t idx, uint64_t from, void *dst, uint64_t n, const char *what, char *err) {
    zip_file_t *zf = zip_fopen_index(ck->za, (zip_uint64_t)idx, 0);
    if (!zf) return fail(err, "%s: %s: cannot open the zip entry: %s", ck->path, what, zip_strerror(ck->za));
    zip_stat_t zs;
    bool stored = zip_stat_index(ck->za, (zip_uint64_t)idx, 0, &zs) == 0 && (zs.valid & ZIP_STAT_COMP_METHOD) &&
                  zs.comp_method == ZIP_CM_STORE;
    int rc = 0;
    if (from && stored && zip_fseek(zf, (zip_int64_t)from, SEEK_SET) != 0)
        rc = fail(err, "%s: %s: cannot seek in the zip entry: %s", ck->path, what, zip_file_strerror(zf));
    else if (from && !stored) {   // compressed entries: read and drop
        char sink[65536];
        for (uint64_t left = from; left && !rc;) {
            zip_int64_t got = zip_fread(zf, sink, left < sizeof sink ? left : sizeof sink);
            if (got <= 0) rc = fail(err, "%s: %s: zip entry ends early: %s", ck->path, what, zip_file_strerror(zf));
            else left -= (uint64_t)got;
        }
    }
    for (uint64_t done = 0; !rc && done < n;) {
        zip_int64_t got = zip_fread(zf, (uint8_t *)dst + done, n - done);
        if (got <= 0) rc = fail(err, "%s: %s: zip entry ends after %llu of %llu bytes: %s", ck->path, what,
                                (unsigned long long)done, (unsigned long long)n, got < 0 ? zip_file_strerror(zf) : "end of data");
        else done += (uint64_t)got;
    }
    zip_fclose(zf);
    return rc;
}

// The uncompressed size of entry idx, refusing what the compressed bytes cannot hold (deflate expands
// at most ~1032:1), so no allocation follows an unchecked declared size.
static int zip_entry_size(TorchCkpt *ck, int64_t idx, const char *what, uint64_t *size, char *err) {
    zip_stat_t zs;
    if (zip_stat_index(ck->za, (zip_uint64_t)idx, 0, &zs) != 0 || !(zs.valid & ZIP_STAT_SIZE) || !(zs.valid & ZIP_STAT_COMP_SIZE))
        return fail(err, "%s: %s: cannot read the zip entry's sizes", ck->path, what);
    if (zs.comp_size > ck->size || zs.size / ZIP_MAX_RATIO > zs.comp_size)
        return fail(err, "%s: %s: zip entry claims %llu bytes from %llu compressed bytes in a %zu-byte file", ck->path,
                    what, (unsigned long long)zs.size, (unsigned long long)zs.comp_size, ck->size);
    *size = zs.size;
    return 0;
}

static int open_zip(TorchCkpt *ck, char *err) {
    zip_error_t ze;
    zip_error_init(&ze);
    zip_source_t *src = zip_source_buffer_create(ck->file_bytes, ck->size, 0, &ze);
    if (src) {
        ck->za = zip_open_from_source(src, ZIP_RDONLY | ZIP_CHECKCONS, &ze);
        if (!ck->za) zip_source_free(src);
    }
    if (!ck->za) {
        fail(err, "%s: not a readable zip archive: %s", ck->path, zip_error_strerror(&ze));
        zip_error_fini(&ze);
        return -1;
    }
    zip_error_fini(&ze);
    // The record prefix is the first entry's folder (torch names it after the file, or "archive").
    const char *first = zip_get_num_entries(ck->za, 0) > 0 ? zip_get_name(ck->za, 0, 0) : NULL;
    const char *slash = first ? strchr(first, '/') : NULL;
    if (!slash || slash == first || slash - first > 512)
        return fail(err, "%s: zip archive without a <name>/data.pkl record (not a torch.save file)", ck->path);
    char prefix[520], name[1100];
    snprintf(prefix, sizeof prefix, "%.*s", (int)(slash - first), first);
    snprintf(name, sizeof name, "%s/byteorder", prefix);
    int64_t idx = zip_name_locate(ck->za, name, 0);
    if (idx >= 0) {   // torch >= 2.1
        char order[8] = {0};
        uint64_t n;
        if (zip_entry_size(ck, idx, name, &n, err)) return -1;
        if (n >= sizeof order) return fail(err, "%s: %s holds %llu bytes (want \"little\")", ck->path, name, (unsigned long long)n);
        if (zip_read_range(ck, idx, 0, order, n, name, err)) return -1;
        if (strcmp(order, "little")) return fail(err, "%s: byteorder is \"%s\" (only little-endian checkpoints are read)", ck->path, order);
    }
    snprintf(name, sizeof name, "%s/data.pkl", prefix);
    if ((idx = zip_name_locate(ck->za, name, 0)) < 0) return fail(err, "%s: zip archive has no %s (not a torch.save file)", ck->path, name);
    uint64_t n;
    if (zip_entry_size(ck, idx, name, &n, err)) return -1;
    if (n > MAX_PICKLE_BYTES) return fail(err, "%s: %s is %llu bytes (limit %llu)", ck->path, name, (unsigned long long)n, MAX_PICKLE_BYTES);
    uint8_t *pkl = malloc(n ? n : 1);
    if (!pkl) return fail(err, "%s: out of memory for %s", ck->path, name);
    if (zip_read_range(ck, idx, 0, pkl, n, name, err)) {
        free(pkl);
        return -1;
    }
    char who[1200], perr[PICKLE_ERR_LEN];
    snprintf(who, sizeof who, "%s: %s", ck->path, name);
    const PyVal *root;
    size_t used;
    Pickle *pk = pickle_load(pkl, n, who, &root, &used, perr);
    int rc = pk ? list_tensors(ck, root, err) : fail(err, "%s", perr);
    pickle_free(pk);
    free(pkl);
    for (int s = 0; !rc && s < ck->nstorages; s++) {
        Storage *st = &ck->storages[s];
        snprintf(name, sizeof name, "%s/data/%s", prefix, st->key);
        if ((st->zip_index = zip_name_locate(ck->za, name, 0)) < 0) {
            rc = fail(err, "%s: storage %s has no entry %s", ck->path, st->key, name);
            break;
        }
        uint64_t want = (uint64_t)st->numel * torch_dtype_size(st->dtype);
        if (zip_entry_size(ck, st->zip_index, name, &n, err)) rc = -1;
        else if (n != want)
            rc = fail(err, "%s: storage %s: entry %s holds %llu bytes, its tensors declare %lld x %s = %llu", ck->path,
                      st->key, name, (unsigned long long)n, (long long)st->numel, torch_dtype_name(st->dtype),
                      (unsigned long long)want);
    }
    return rc;
}
#endif

// ---- open / read / close -------------------------------------------------------------------------------
static int open_common(TorchCkpt *ck, char *err) {
    if (ck->size >= 4 && !memcmp(ck->file_bytes, "PK\x03\x04", 4)) {
        ck->zip_format = true;
#ifdef DOD_HAVE_LIBZIP
        return open_zip(ck, err);
#else
        return fail(err, "%s: a zip-format PyTorch checkpoint, and this build has no libzip (install libzip-dev, "
                         "rebuild; or re-save it with torch.save(..., _use_new_zipfile_serialization=False))", ck->path);
#endif
    }
    return open_legacy(ck, err);
}

static TorchCkpt *new_ckpt(const char *path) {
    TorchCkpt *ck = calloc(1, sizeof(TorchCkpt));
    if (ck && !(ck->path = strdup(path))) {
        free(ck);
        ck = NULL;
    }
    return ck;
}

int torch_ckpt_open_memory(const char *name, const uint8_t *data, size_t size, TorchCkpt **out, char err[TORCH_ERR_LEN]) {
    *out = NULL;
    TorchCkpt *ck = new_ckpt(name);
    if (!ck) return fail(err, "%s: out of memory", name);
    ck->file_bytes = data;
    ck->size = size;
    if (open_common(ck, err)) {
        torch_ckpt_close(ck);
        return -1;
    }
    *out = ck;
    return 0;
}

int torch_ckpt_open(const char *path, TorchCkpt **out, char err[TORCH_ERR_LEN]) {
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return fail(err, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return fail(err, "%s: not a regular file", path);
    }
    if (sb.st_size == 0) {
        close(fd);
        return fail(err, "%s: empty file (not a PyTorch checkpoint)", path);
    }
    void *map = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    int map_errno = errno;
    close(fd);
    if (map == MAP_FAILED) return fail(err, "%s: cannot mmap: %s", path, strerror(map_errno));
    TorchCkpt *ck = new_ckpt(path);
    if (!ck) {
        munmap(map, (size_t)sb.st_size);
        return fail(err, "%s: out of memory", path);
    }
    ck->file_bytes = map;
    ck->size = (size_t)sb.st_size;
    ck->mapped = true;
    if (open_common(ck, err)) {
        torch_ckpt_close(ck);
        return -1;
    }
    *out = ck;
    return 0;
}

void torch_ckpt_close(TorchCkpt *ck) {
    if (!ck) return;
#ifdef DOD_HAVE_LIBZIP
    if (ck->za) zip_discard(ck->za);
#endif
    if (ck->mapped) munmap((void *)ck->file_bytes, ck->size);
    for (int i = 0; i < ck->n; i++) free(ck->tensors[i].name);
    for (int s = 0; s < ck->nstorages; s++) free(ck->storages[s].key);
    free(ck->storages);
    free(ck->tensors);
    free(ck->by_name);
    free(ck->path);
    free(ck);
}

// Copies the elements of an n-d strided view (element size es) at src to dst in row-major order (=).
static void gather(uint8_t *dst, const uint8_t *src, size_t es, int ndim, const int64_t *shape, const int64_t *stride) {
    if (ndim == 0) {
        memcpy(dst, src, es);
        return;
    }
    // Contiguous trailing dims are copied as one block.
    int64_t block = 1;
    int d = ndim;
    while (d > 0 && (stride[d - 1] == block || shape[d - 1] == 1)) block *= shape[--d];
    if (d == 0) {
        memcpy(dst, src, (size_t)block * es);
        return;
    }
    int64_t idx[TORCH_MAX_DIMS] = {0}, outer = 1;
    for (int k = 0; k < d; k++) outer *= shape[k];
    size_t bytes = (size_t)block * es;
    for (int64_t o = 0; o < outer; o++) {
        int64_t off = 0;
        for (int k = 0; k < d; k++) off += idx[k] * stride[k];
        memcpy(dst + (size_t)o * bytes, src + (size_t)off * es, bytes);
        for (int k = d - 1; k >= 0 && ++idx[k] == shape[k]; k--) idx[k] = 0;
    }
}

int torch_ckpt_read(TorchCkpt *ck, const TorchTensor *t, void *dst, char err[TORCH_ERR_LEN]) {
    if (t->numel == 0) return 0;
    const Storage *st = &ck->storages[t->storage];
    size_t es = torch_dtype_size(t->dtype);
    uint64_t extent = 1;   // elements from the first to the last one reached, inclusive (checked at open)
    for (int d = 0; d < t->ndim; d++) extent += (uint64_t)(t->shape[d] - 1) * (uint64_t)t->stride[d];
    uint64_t from = (uint64_t)t->storage_offset * es, bytes = extent * es;
    if (!ck->zip_format) {
        gather(dst, ck->file_bytes + st->file_offset + from, es, t->ndim, t->shape, t->stride);
        return 0;
    }
#ifdef DOD_HAVE_LIBZIP
    uint8_t *buf = malloc(bytes);
    if (!buf) return fail(err, "%s: tensor %s: out of memory for %llu bytes", ck->path, t->name, (unsigned long long)bytes);
    char what[1200];
    snprintf(what, sizeof what, "tensor %s (storage %s)", t->name, st->key);
    int rc = zip_read_range(ck, st->zip_index, from, buf, bytes, what, err);
    if (!rc) gather(dst, buf, es, t->ndim, t->shape, t->stride);
    free(buf);
    return rc;
#else
    (void)bytes;
    return fail(err, "%s: no libzip in this build", ck->path);
#endif
}
