// safetensors reader (mmap, validate everything up front) and atomic writer. See safetensors.h.
#include "layers/safetensors.h"


#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "autograd/finite.h"
#include "autograd/params.h"
#include "layers/torch_ckpt.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors data is little-endian; this reader maps it without byte swapping"
#endif

// The reference implementation refuses headers above 100 MB; so do we (a corrupt length field
// would otherwise make us parse the whole file as JSON).
#define ST_MAX_HEADER (100u * 1000u * 1000u)

struct SafeTensors {
    char *path;
    uint8_t *map;          // whole file, PROT_READ
    size_t map_size;
    const uint8_t *data;   // start of the data section
    uint64_t data_size;
    StEntry *entries;      // sorted by begin offset
    int n;
    const StEntry **by_name;   // entries sorted by name, for bsearch
    cJSON *metadata;       // the "__metadata__" object (detached), or NULL
    TorchCkpt *torch;      // a PyTorch checkpoint presented through this handle (tensor_file_open), or NULL
    const TorchTensor **torch_of;   // per entry (file order), its checkpoint tensor
};

static StStatus fail(char *err, StStatus st, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static StStatus fail(char *err, StStatus st, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, ST_ERR_LEN, fmt, ap);
        va_end(ap);
    }
    return st;
}

int safetensors_parse_dtype(const char *s) {
    if (!strcmp(s, "F32")) return DT_F32;
    if (!strcmp(s, "F16")) return DT_F16;
    if (!strcmp(s, "BF16")) return DT_BF16;
    if (!strcmp(s, "I64")) return DT_I64;
    return -1;
}

const char *safetensors_dtype_str(DType dt) {
    switch (dt) {
    case DT_F32: return "F32";
    case DT_F16: return "F16";
    case DT_BF16: return "BF16";
    case DT_I64: return "I64";
    }
    return "?";
}

// A JSON number that is an exact non-negative integer representable in a double (<= 2^53).
static bool json_uint(const cJSON *v, uint64_t *out) {
    if (!cJSON_IsNumber(v)) return false;
    double d = v->valuedouble;
    if (!(d >= 0) || d > 9007199254740992.0 || d != floor(d)) return false;
    *out = (uint64_t)d;
    return true;
}

static int cmp_by_begin(const void *a, const void *b) {
    const StEntry *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}
static int cmp_by_name(const void *a, const void *b) {
    return strcmp((*(const StEntry *const *)a)->name, (*(const StEntry *const *)b)->name);
}

// Fills e from one header entry; the message names tensor and file.
static StStatus parse_entry(const char *path, const cJSON *item, uint64_t data_size, StEntry *e, char *err) {
    const char *name = item->string;
    if (!cJSON_IsObject(item))
        return fail(err, ST_ERR_HEADER, "%s: header entry for tensor %s is not an object", path, name);
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(item, "dtype");
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(item, "shape");
    const cJSON *offs = cJSON_GetObjectItemCaseSensitive(item, "data_offsets");
    if (!cJSON_IsString(dt))
        return fail(err, ST_ERR_HEADER, "%s: tensor %s has no string \"dtype\"", path, name);
    int dtype = safetensors_parse_dtype(dt->valuestring);
    if (dtype < 0)
        return fail(err, ST_ERR_DTYPE, "%s: unsupported dtype %s for tensor %s (supported: F32, F16, BF16, I64)",
                    path, dt->valuestring, name);
    if (!cJSON_IsArray(shape))
        return fail(err, ST_ERR_SHAPE, "%s: tensor %s has no \"shape\" array", path, name);
    int ndim = cJSON_GetArraySize(shape);
    if (ndim > TENSOR_MAX_DIMS)
        return fail(err, ST_ERR_SHAPE, "%s: tensor %s has %d dims (at most %d supported)", path, name, ndim,
                    TENSOR_MAX_DIMS);
    e->ndim = ndim;
    e->dtype = (DType)dtype;
    uint64_t numel = 1;
    for (int d = 0; d < ndim; d++) {
        uint64_t v;
        if (!json_uint(cJSON_GetArrayItem(shape, d), &v))
            return fail(err, ST_ERR_SHAPE, "%s: tensor %s: shape entry %d is not a non-negative integer", path,
                        name, d);
        e->shape[d] = (int64_t)v;
        if (__builtin_mul_overflow(numel, v, &numel) || numel > (1ull << 53))
            return fail(err, ST_ERR_SHAPE, "%s: tensor %s: shape is too large", path, name);
    }
    e->numel = (int64_t)numel;
    if (!cJSON_IsArray(offs) || cJSON_GetArraySize(offs) != 2 || !json_uint(cJSON_GetArrayItem(offs, 0), &e->begin)
        || !json_uint(cJSON_GetArrayItem(offs, 1), &e->end))
        return fail(err, ST_ERR_OFFSETS, "%s: tensor %s: \"data_offsets\" must be [begin, end] of non-negative integers",
                    path, name);
    if (e->begin > e->end)
        return fail(err, ST_ERR_OFFSETS, "%s: tensor %s: data_offsets begin %llu > end %llu", path, name,
                    (unsigned long long)e->begin, (unsigned long long)e->end);
    if (e->end > data_size)
        return fail(err, ST_ERR_OFFSETS,
                    "%s: tensor %s: data_offsets [%llu, %llu] run past the end of the data section (%llu bytes; "
                    "file truncated?)", path, name, (unsigned long long)e->begin, (unsigned long long)e->end,
                    (unsigned long long)data_size);
    uint64_t want = numel * dtype_size(e->dtype);
    if (e->end - e->begin != want)
        return fail(err, ST_ERR_SIZE, "%s: tensor %s: %llu bytes in data_offsets but shape x %s needs %llu", path,
                    name, (unsigned long long)(e->end - e->begin), safetensors_dtype_str(e->dtype),
                    (unsigned long long)want);
    e->name = strdup(name);
    return ST_OK;
}

static StStatus parse_header(SafeTensors *st, const char *json, size_t len, char *err) {
    const char *path = st->path;
    cJSON *root = cJSON_ParseWithLength(json, len);
    if (!root) return fail(err, ST_ERR_HEADER, "%s: header is not valid JSON (not a safetensors file?)", path);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return fail(err, ST_ERR_HEADER, "%s: header is JSON but not an object", path);
    }
    int cap = cJSON_GetArraySize(root);
    st->entries = calloc((size_t)(cap > 0 ? cap : 1), sizeof(StEntry));
    StStatus rc = ST_OK;
    for (cJSON *item = root->child; item; item = item->next) {
        if (!strcmp(item->string, "__metadata__")) {
            if (!cJSON_IsObject(item) || st->metadata) {
                rc = fail(err, st->metadata ? ST_ERR_DUPLICATE : ST_ERR_HEADER, "%s: \"__metadata__\" %s", path,
                          st->metadata ? "appears twice" : "is not an object");
                break;
            }
            for (cJSON *kv = item->child; kv; kv = kv->next)
                if (!cJSON_IsString(kv)) {
                    rc = fail(err, ST_ERR_HEADER, "%s: __metadata__ value for %s is not a string", path, kv->string);
                    break;
                }
            if (rc) break;
            st->metadata = cJSON_Duplicate(item, 1);
            continue;
        }
        rc = parse_entry(path, item, st->data_size, &st->entries[st->n], err);
        if (rc) break;
        st->n++;
    }
    cJSON_Delete(root);
    if (rc) return rc;

    // File order and overlap: sorted by begin, a non-empty tensor must start at or after the end of
    // the non-empty tensor reaching furthest so far.
    qsort(st->entries, st->n, sizeof(StEntry), cmp_by_begin);
    const StEntry *reach = NULL;
    for (int i = 0; i < st->n; i++) {
        const StEntry *b = &st->entries[i];
        if (b->end == b->begin) continue;
        if (reach && b->begin < reach->end)
            return fail(err, ST_ERR_OVERLAP, "%s: tensors %s [%llu, %llu] and %s [%llu, %llu] overlap", path,
                        reach->name, (unsigned long long)reach->begin, (unsigned long long)reach->end, b->name,
                        (unsigned long long)b->begin, (unsigned long long)b->end);
        if (!reach || b->end > reach->end) reach = b;
    }
    st->by_name = malloc(sizeof(StEntry *) * (size_t)(st->n > 0 ? st->n : 1));
    for (int i = 0; i < st->n; i++) st->by_name[i] = &st->entries[i];
    qsort(st->by_name, st->n, sizeof(StEntry *), cmp_by_name);
    for (int i = 1; i < st->n; i++)
        if (!strcmp(st->by_name[i]->name, st->by_name[i - 1]->name))
            return fail(err, ST_ERR_DUPLICATE, "%s: tensor %s appears twice in the header", path, st->by_name[i]->name);
    return ST_OK;
}

StStatus safetensors_open(const char *path, SafeTensors **out, char err[ST_ERR_LEN]) {
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return fail(err, ST_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int e = errno;
        close(fd);
        return fail(err, ST_ERR_IO, "%s: cannot stat: %s", path, strerror(e));
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return fail(err, ST_ERR_IO, "%s: not a regular file", path);
    }
    size_t size = (size_t)sb.st_size;
    if (size < 8) {
        close(fd);
        return fail(err, ST_ERR_TRUNCATED, "%s: truncated: %zu bytes, shorter than the 8-byte header length", path,
                    size);
    }
    void *map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    int map_errno = errno;
    close(fd);   // the mapping keeps the file alive
    if (map == MAP_FAILED) return fail(err, ST_ERR_IO, "%s: cannot mmap %zu bytes: %s", path, size, strerror(map_errno));

    SafeTensors *st = calloc(1, sizeof(SafeTensors));
    st->path = strdup(path);
    st->map = map;
    st->map_size = size;
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | st->map[i];
    StStatus rc = ST_OK;
    if (hlen > size - 8)
        rc = fail(err, ST_ERR_TRUNCATED,
                  "%s: header length %llu runs past the end of the file (%zu bytes): truncated or not a safetensors file",
                  path, (unsigned long long)hlen, size);
    else if (hlen > ST_MAX_HEADER)
        rc = fail(err, ST_ERR_HEADER, "%s: header length %llu exceeds the %u-byte limit (not a safetensors file?)",
                  path, (unsigned long long)hlen, ST_MAX_HEADER);
    else if (hlen < 2 || st->map[8] != '{')
        rc = fail(err, ST_ERR_HEADER, "%s: header does not start with '{' (not a safetensors file)", path);
    if (!rc) {
        st->data = st->map + 8 + hlen;
        st->data_size = size - 8 - hlen;
        rc = parse_header(st, (const char *)st->map + 8, (size_t)hlen, err);
    }
    if (rc) {
        safetensors_close(st);
        return rc;
    }
    // Weights are read front to back once; tell the kernel.
    madvise(st->map, st->map_size, MADV_WILLNEED);
    *out = st;
    return ST_OK;
}

void safetensors_close(SafeTensors *st) {
    if (!st) return;
    if (st->map) munmap(st->map, st->map_size);
    torch_ckpt_close(st->torch);
    free(st->torch_of);
    for (int i = 0; i < st->n; i++) free(st->entries[i].name);
    free(st->entries);
    free(st->by_name);
    cJSON_Delete(st->metadata);
    free(st->path);
    free(st);
}

const char *safetensors_path(const SafeTensors *st) { return st->path; }
int safetensors_count(const SafeTensors *st) { return st->n; }
const StEntry *safetensors_entry(const SafeTensors *st, int i) {
    return (i >= 0 && i < st->n) ? &st->entries[i] : NULL;
}
const void *safetensors_bytes(const SafeTensors *st, const StEntry *e) { return st->torch ? NULL : st->data + e->begin; }

const StEntry *safetensors_find(const SafeTensors *st, const char *name) {
    int lo = 0, hi = st->n - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        const StEntry *e = st->by_name[mid];
        int c = strcmp(name, e->name);
        if (c == 0) return e;
        if (c < 0) hi = mid - 1; else lo = mid + 1;
    }
    return NULL;
}

void safetensors_drop_pages(const SafeTensors *st, const StEntry *e) {
    if (st->torch) return;   // its tensors are read into heap copies; nothing of it stays mapped
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t lo = ((uintptr_t)(st->data + e->begin) + page - 1) & ~(page - 1);
    uintptr_t hi = (uintptr_t)(st->data + e->end) & ~(page - 1);
    if (hi > lo) madvise((void *)lo, hi - lo, MADV_DONTNEED);
}

const char *safetensors_metadata(const SafeTensors *st, const char *key) {
    if (!st->metadata) return NULL;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(st->metadata, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static StStatus torch_tensor(const SafeTensors *st, const StEntry *e, DType want, const char *name, Tensor **out,
                             char err[ST_ERR_LEN]);

// Element i of a (possibly unaligned) half/float buffer, widened to f32.
static inline float load_f32(const uint8_t *src, DType dt, int64_t i) {
    if (dt == DT_F32) {
        float v;
        memcpy(&v, src + 4 * i, 4);
        return v;
    }
    uint16_t h;
    memcpy(&h, src + 2 * i, 2);
    return dt == DT_BF16 ? bf16_to_f32(h) : f16_to_f32(h);
}

// safetensors_tensor without the finite check.
static StStatus read_tensor(const SafeTensors *st, const StEntry *e, DType want, const char *name, Tensor **out,
                            char err[ST_ERR_LEN]) {
    *out = NULL;
    if (!name) name = e->name;
    if ((want == DT_I64) != (e->dtype == DT_I64))
        return fail(err, ST_ERR_DTYPE, "%s: tensor %s is %s and cannot be loaded as %s", st->path, e->name,
                    safetensors_dtype_str(e->dtype), safetensors_dtype_str(want));
    if (st->torch) return torch_tensor(st, e, want, name, out, err);
    const uint8_t *src = st->data + e->begin;
    if (want == e->dtype && ((uintptr_t)src % dtype_size(want)) == 0) {
        // Zero copy: the tensor points into the read-only mapping and lives as long as st.
        *out = tensor_wrap_persistent(name, e->ndim, e->shape, want, (void *)src);
        return ST_OK;
    }
    Tensor *t = tensor_new_persistent(name, e->ndim, e->shape, want);
    if (want == e->dtype) {
        memcpy(t->data, src, (size_t)(e->end - e->begin));
    } else if (want == DT_F32) {
        float *dst = t->data;
#pragma omp parallel for if (e->numel > 65536)
        for (int64_t i = 0; i < e->numel; i++) dst[i] = load_f32(src, e->dtype, i);
    } else {
        uint16_t *dst = t->data;
        bool to_bf16 = want == DT_BF16;
#pragma omp parallel for if (e->numel > 65536)
        for (int64_t i = 0; i < e->numel; i++) {
            float v = load_f32(src, e->dtype, i);
            dst[i] = to_bf16 ? f32_to_bf16(v) : f32_to_f16(v);
        }
    }
    *out = t;
    return ST_OK;
}

// Every tensor handed out is scanned once (a view: the file's bytes; a conversion: its result): a
// NaN or infinity in a weight would surface steps later as "the loss is nan" with nothing to say
// where it came from.
StStatus safetensors_tensor(const SafeTensors *st, const StEntry *e, DType want, const char *name, Tensor **out,
                            char err[ST_ERR_LEN]) {
    StStatus rc = read_tensor(st, e, want, name, out, err);
    if (rc != ST_OK) return rc;
    int64_t bad = tensor_first_nonfinite(*out);
    if (bad < 0) return ST_OK;
    double v = tensor_value_at(*out, bad);
    tensor_free(*out);
    *out = NULL;
    bool converted = strcmp(tensor_file_stored_dtype(st, e), safetensors_dtype_str(want)) != 0;
    return fail(err, ST_ERR_NONFINITE, "%s: tensor %s holds a non-finite value (%g at element %lld%s%s)", st->path,
                e->name, v, (long long)bad, converted ? ", read as " : "", converted ? safetensors_dtype_str(want) : "");
}

// ---- writer -------------------------------------------------------------------------------------
typedef struct {
    char *buf;
    size_t len, cap;
} StrBuf;

static void sb_put(StrBuf *b, const char *s, size_t n) {
    if (b->len + n + 1 > b->cap) {
        b->cap = (b->len + n + 1) * 2;
        b->buf = realloc(b->buf, b->cap);
        DOD_CHECK(b->buf != NULL, "safetensors_save", "out of memory for a %zu-byte header", b->cap);
    }
    memcpy(b->buf + b->len, s, n);
    b->len += n;
    b->buf[b->len] = 0;
}
static void sb_str(StrBuf *b, const char *s) { sb_put(b, s, strlen(s)); }
static void sb_printf(StrBuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(StrBuf *b, const char *fmt, ...) {
    char tmp[128];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    sb_put(b, tmp, (size_t)n);
}
// A JSON string literal (quotes, backslashes and control characters escaped; UTF-8 passes through).
static void sb_json_string(StrBuf *b, const char *s) {
    sb_str(b, "\"");
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"') sb_str(b, "\\\"");
        else if (*p == '\\') sb_str(b, "\\\\");
        else if (*p < 0x20) sb_printf(b, "\\u%04x", *p);
        else sb_put(b, (const char *)p, 1);
    }
    sb_str(b, "\"");
}

static bool write_all(int fd, const void *p, size_t n) {
    const uint8_t *c = p;
    while (n) {
        ssize_t w = write(fd, c, n > (1u << 30) ? (1u << 30) : n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return false;
        c += w;
        n -= (size_t)w;
    }
    return true;
}

StStatus safetensors_save(const char *path, Tensor *const *tensors, int n, const StMetadata *meta, int nmeta,
                          char err[ST_ERR_LEN]) {
    // Larger elements first (stable), as the reference writer does, so every tensor stays aligned to
    // its element size given the 8-aligned data section.
    int *order = malloc(sizeof(int) * (size_t)(n > 0 ? n : 1));
    int k = 0;
    for (size_t es = 8; es >= 2; es /= 2)
        for (int i = 0; i < n; i++)
            if (dtype_size(tensors[i]->dtype) == es) order[k++] = i;
    for (int i = 0; i < n; i++) {
        const Tensor *t = tensors[i];
        const char *why = !t->name ? "has no name" : t->device != DEV_CPU ? "is not in host memory" : NULL;
        if (why) {
            free(order);
            return fail(err, ST_ERR_IO, "%s: tensor %d (%s) %s", path, i, t->name ? t->name : shape_str(t), why);
        }
        for (int j = 0; j < i; j++)
            if (!strcmp(tensors[j]->name, t->name)) {
                free(order);
                return fail(err, ST_ERR_DUPLICATE, "%s: tensor name %s given twice", path, t->name);
            }
    }

    StrBuf h = {0};
    sb_str(&h, "{");
    if (nmeta > 0) {
        sb_str(&h, "\"__metadata__\":{");
        for (int m = 0; m < nmeta; m++) {
            if (m) sb_str(&h, ",");
            sb_json_string(&h, meta[m].key);
            sb_str(&h, ":");
            sb_json_string(&h, meta[m].value);
        }
        sb_str(&h, "}");
    }
    uint64_t offset = 0;
    for (int k2 = 0; k2 < n; k2++) {
        const Tensor *t = tensors[order[k2]];
        uint64_t bytes = (uint64_t)t->numel * dtype_size(t->dtype);
        if (k2 || nmeta > 0) sb_str(&h, ",");
        sb_json_string(&h, t->name);
        sb_printf(&h, ":{\"dtype\":\"%s\",\"shape\":[", safetensors_dtype_str(t->dtype));
        for (int d = 0; d < t->ndim; d++) sb_printf(&h, d ? ",%lld" : "%lld", (long long)t->shape[d]);
        sb_printf(&h, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)offset,
                  (unsigned long long)(offset + bytes));
        offset += bytes;
    }
    sb_str(&h, "}");
    while (h.len % 8) sb_str(&h, " ");

    char tmp[4096];
    if (fs_temp_path(path, tmp, sizeof tmp)) {
        free(h.buf);
        free(order);
        return fail(err, ST_ERR_IO, "%.3000s: path too long", path);
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    StStatus rc = ST_OK;
    if (fd < 0) {
        rc = fail(err, ST_ERR_IO, "%s: cannot create %s: %s", path, tmp, strerror(errno));
    } else {
        uint8_t len8[8];
        for (int i = 0; i < 8; i++) len8[i] = (uint8_t)((uint64_t)h.len >> (8 * i));
        bool ok = write_all(fd, len8, 8) && write_all(fd, h.buf, h.len);
        for (int k2 = 0; ok && k2 < n; k2++) {
            const Tensor *t = tensors[order[k2]];
            size_t bytes = (size_t)t->numel * dtype_size(t->dtype);
            if (t->device == DEV_CUDA) {  // checkpoints of a model on the GPU: through a host copy
                void *host = dod_malloc(bytes ? bytes : 1, t->name ? t->name : "tensor to save");
                device_copy(host, DEV_CPU, t->data, t->device, bytes);
                ok = write_all(fd, host, bytes);
                free(host);
            } else {
                ok = write_all(fd, t->data, bytes);
            }
        }
        int write_errno = errno;
        if (ok && fsync(fd) != 0) ok = false, write_errno = errno;
        if (close(fd) != 0 && ok) ok = false, write_errno = errno;
        if (!ok) rc = fail(err, ST_ERR_IO, "%s: writing %s failed: %s", path, tmp, strerror(write_errno));
        else {
            char why[ST_ERR_LEN];
            if (fs_commit_temp(tmp, path, why, sizeof why)) rc = fail(err, ST_ERR_IO, "%s", why);
        }
        if (rc) unlink(tmp);
    }
    free(h.buf);
    free(order);
    return rc;
}

ParamStore *safetensors_load_store(const char *path, DType want, char err[ST_ERR_LEN]) {
    SafeTensors *st;
    if (safetensors_open(path, &st, err) != ST_OK) return NULL;
    ParamStore *ps = params_new();
    for (int i = 0; i < safetensors_count(st); i++) {
        const StEntry *e = safetensors_entry(st, i);
        Tensor *view;
        if (safetensors_tensor(st, e, want, NULL, &view, err) != ST_OK) {
            params_free(ps);
            safetensors_close(st);
            return NULL;
        }
        Tensor *t = tensor_new_persistent(e->name, e->ndim, e->shape, want);
        memcpy(t->data, view->data, dtype_size(want) * (size_t)t->numel);
        tensor_free(view);
        params_add(ps, e->name, t);
    }
    safetensors_close(st);
    return ps;
}

// ---- PyTorch checkpoints through the same handle ------------------------------------------------------
// How the handle presents a stored checkpoint dtype: floats as themselves (float64 as F32, the toolkit
// has no f64), integers and bools as I64.
static DType presented_dtype(TorchDType dt) {
    switch (dt) {
    case TORCH_F32: case TORCH_F64: return DT_F32;
    case TORCH_F16: return DT_F16;
    case TORCH_BF16: return DT_BF16;
    default: return DT_I64;
    }
}

const char *tensor_file_stored_dtype(const SafeTensors *st, const StEntry *e) {
    if (!st->torch) return safetensors_dtype_str(e->dtype);
    static const char *const names[TORCH_NDTYPES] = {"F32", "F64", "F16", "BF16", "I64", "I32", "I16", "I8", "U8", "BOOL"};
    TorchDType dt = st->torch_of[e - st->entries]->dtype;
    return (unsigned)dt < TORCH_NDTYPES ? names[dt] : "?";
}

// Element i of a checkpoint buffer of dtype dt as a double (floats) or int64 (integers, bools).
static double torch_load_f64(const uint8_t *src, TorchDType dt, int64_t i) {
    switch (dt) {
    case TORCH_F64: { double v; memcpy(&v, src + 8 * i, 8); return v; }
    case TORCH_F32: { float v; memcpy(&v, src + 4 * i, 4); return v; }
    default: return load_f32(src, dt == TORCH_F16 ? DT_F16 : DT_BF16, i);
    }
}
static int64_t torch_load_i64(const uint8_t *src, TorchDType dt, int64_t i) {
    switch (dt) {
    case TORCH_I64: { int64_t v; memcpy(&v, src + 8 * i, 8); return v; }
    case TORCH_I32: { int32_t v; memcpy(&v, src + 4 * i, 4); return v; }
    case TORCH_I16: { int16_t v; memcpy(&v, src + 2 * i, 2); return v; }
    case TORCH_I8: return (int8_t)src[i];
    case TORCH_U8: return src[i];
    default: return src[i] != 0;   // bool
    }
}

// A heap copy of a checkpoint tensor as `want` (the caller checked that float / integer kinds agree).
static StStatus torch_tensor(const SafeTensors *st, const StEntry *e, DType want, const char *name, Tensor **out,
                             char err[ST_ERR_LEN]) {
    const TorchTensor *tt = st->torch_of[e - st->entries];
    Tensor *t = tensor_new_persistent(name, e->ndim, e->shape, want);
    bool same = dtype_size(want) == torch_dtype_size(tt->dtype) && presented_dtype(tt->dtype) == want;
    uint8_t *src = same ? t->data : dod_malloc(torch_dtype_size(tt->dtype) * (size_t)(e->numel ? e->numel : 1), e->name);
    char msg[TORCH_ERR_LEN];
    if (torch_ckpt_read(st->torch, tt, src, msg)) {
        if (!same) free(src);
        tensor_free(t);
        return fail(err, ST_ERR_TORCH, "%s", msg);
    }
    if (!same) {
        if (want == DT_I64) {
            int64_t *dst = t->data;
            for (int64_t i = 0; i < e->numel; i++) dst[i] = torch_load_i64(src, tt->dtype, i);
        } else if (want == DT_F32) {
            float *dst = t->data;
#pragma omp parallel for if (e->numel > 65536)
            for (int64_t i = 0; i < e->numel; i++) dst[i] = (float)torch_load_f64(src, tt->dtype, i);
        } else {   // f64 is rounded to f32 first, then to the half type
            uint16_t *dst = t->data;
            bool to_bf16 = want == DT_BF16;
#pragma omp parallel for if (e->numel > 65536)
            for (int64_t i = 0; i < e->numel; i++) {
                float v = (float)torch_load_f64(src, tt->dtype, i);
                dst[i] = to_bf16 ? f32_to_bf16(v) : f32_to_f16(v);
            }
        }
        free(src);
    }
    *out = t;
    return ST_OK;
}

static StStatus open_torch(const char *path, SafeTensors **out, char err[ST_ERR_LEN]) {
    TorchCkpt *ck;
    char msg[TORCH_ERR_LEN];
    if (torch_ckpt_open(path, &ck, msg)) return fail(err, ST_ERR_TORCH, "%s", msg);
    SafeTensors *st = calloc(1, sizeof(SafeTensors));
    DOD_CHECK(st != NULL, path, "out of memory");
    st->path = strdup(path);
    st->torch = ck;
    int n = torch_ckpt_count(ck);
    st->entries = dod_calloc(sizeof(StEntry) * (size_t)(n ? n : 1), "checkpoint entries");
    st->torch_of = dod_calloc(sizeof(TorchTensor *) * (size_t)(n ? n : 1), "checkpoint entries");
    st->by_name = dod_malloc(sizeof(StEntry *) * (size_t)(n ? n : 1), "checkpoint entries");
    uint64_t offset = 0;
    for (int i = 0; i < n; i++) {
        const TorchTensor *tt = torch_ckpt_tensor(ck, i);
        if (tt->ndim > TENSOR_MAX_DIMS) {
            StStatus rc = fail(err, ST_ERR_SHAPE, "%s: tensor %s has %d dims (at most %d supported)", path, tt->name,
                               tt->ndim, TENSOR_MAX_DIMS);
            safetensors_close(st);
            return rc;
        }
        StEntry *e = &st->entries[st->n++];
        e->name = strdup(tt->name);
        e->dtype = presented_dtype(tt->dtype);
        e->ndim = tt->ndim;
        memcpy(e->shape, tt->shape, sizeof(int64_t) * (size_t)tt->ndim);
        e->numel = tt->numel;
        e->begin = offset;
        e->end = offset += (uint64_t)tt->numel * dtype_size(e->dtype);
        st->torch_of[i] = tt;
        st->by_name[i] = e;
    }
    qsort(st->by_name, st->n, sizeof(StEntry *), cmp_by_name);   // names are unique (torch_ckpt checked)
    st->data_size = offset;
    *out = st;
    return ST_OK;
}

StStatus tensor_file_open(const char *path, SafeTensors **out, char err[ST_ERR_LEN]) {
    *out = NULL;
    uint8_t head[32];
    size_t got = 0;
    FILE *f = fopen(path, "rb");
    if (f) {
        got = fread(head, 1, sizeof head, f);
        fclose(f);
    }
    return f && torch_ckpt_sniff(head, got) ? open_torch(path, out, err) : safetensors_open(path, out, err);
}
