// Tensors, the activation arena and half-precision conversion.
#include "autograd/tensor.h"

#include "autograd/block_cache.h"
#include "autograd/cuda/cuda_backend.h"
#include "autograd/parallel.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *dtype_name(DType dt) {
    switch (dt) {
    case DT_F32: return "f32";
    case DT_F16: return "f16";
    case DT_BF16: return "bf16";
    case DT_I64: return "i64";
    }
    return "?";
}

size_t dtype_size(DType dt) {
    switch (dt) {
    case DT_F32: return 4;
    case DT_F16: return 2;
    case DT_BF16: return 2;
    case DT_I64: return 8;
    }
    return 0;
}

const char *shape_str(const Tensor *t) {
    static char ring[4][128];
    static int slot;
    char *buf = ring[slot++ & 3];
    int n = snprintf(buf, 128, "[");
    for (int i = 0; i < t->ndim && n < 120; i++)
        n += snprintf(buf + n, 128 - n, i ? ", %ld" : "%ld", (long)t->shape[i]);
    snprintf(buf + n, 128 - n, "]");
    return buf;
}

static const char *tensor_label(const Tensor *t) { return t->name ? t->name : shape_str(t); }

// ---- arena --------------------------------------------------------------------------------------
// Blocks are chained and reused across resets; a request larger than the default block size gets a
// block of its own. Not thread-safe: ops allocate on the calling thread before their parallel loops.
typedef struct ArenaBlock {
    struct ArenaBlock *next;
    size_t size, used;
    size_t base;  // total bytes in all earlier blocks (for marks)
    char *mem;
} ArenaBlock;

// Blocks grow with the arena (each new one as big as all before it, between 64 MiB and 1 GiB): an
// allocation that does not fit the current block's tail leaves that tail unused until the next
// reset, so large blocks keep the waste small next to big activations (a 32 MiB VAE activation in
// fixed 64 MiB blocks wasted half of the arena).
#define ARENA_BLOCK_MIN ((size_t)64 << 20)
#define ARENA_BLOCK_MAX ((size_t)1 << 30)
static ArenaBlock *arena_head, *arena_cur;
static size_t arena_peak_bytes, arena_total_bytes;
// Host activation-gradient buffers (see tensor_grad): cached, since they come and go every step.
static void *host_raw_alloc(size_t bytes, const char *what) {
    void *p = NULL;
    if (posix_memalign(&p, 64, bytes ? bytes : 64) != 0) dod_out_of_memory(bytes, what);
    return p;
}
static BlockCache host_grad_cache = {.raw_alloc = host_raw_alloc, .align = 64};

size_t arena_mark(void) { return arena_cur ? arena_cur->base + arena_cur->used : 0; }

static void arena_note_peak(void) {
    size_t used = arena_mark() + host_grad_cache.in_use_bytes;
    if (used > arena_peak_bytes) arena_peak_bytes = used;
}

size_t arena_grow_size(size_t total, size_t bytes, size_t min, size_t max) {
    size_t size = total < min ? min : total > max ? max : total;
    return bytes > size ? bytes : size;
}

static size_t arena_next_block_size(size_t bytes) {
    return arena_grow_size(arena_total_bytes, bytes, ARENA_BLOCK_MIN, ARENA_BLOCK_MAX);
}

static ArenaBlock *arena_new_block(size_t size, size_t base) {
    ArenaBlock *b = dod_calloc(sizeof *b, "arena block header");
    b->size = size;
    b->base = base;
    if (posix_memalign((void **)&b->mem, 64, size) != 0) dod_out_of_memory(size, "activation arena block");
    arena_total_bytes += size;
    return b;
}

void *arena_alloc(size_t bytes, const char *what) {
    (void)what;
    bytes = (bytes + 63) & ~(size_t)63;
    if (!arena_head) arena_head = arena_cur = arena_new_block(arena_next_block_size(bytes), 0);
    while (arena_cur->used + bytes > arena_cur->size) {
        if (arena_cur->next && arena_cur->next->size >= bytes) {
            arena_cur = arena_cur->next;
            arena_cur->used = 0;
            arena_cur->base = 0;  // fixed below
        } else {
            // Insert a fresh block after the current one (a too-small next block stays behind it).
            ArenaBlock *b = arena_new_block(arena_next_block_size(bytes), 0);
            b->next = arena_cur->next;
            arena_cur->next = b;
            arena_cur = b;
        }
    }
    // Keep base = bytes held by earlier blocks, so a mark is a single monotone number.
    size_t base = 0;
    for (ArenaBlock *b = arena_head; b != arena_cur; b = b->next) base += b->size;
    arena_cur->base = base;
    void *p = arena_cur->mem + arena_cur->used;
    arena_cur->used += bytes;
    arena_note_peak();
    return p;
}

void *arena_calloc(size_t bytes, const char *what) {
    void *p = arena_alloc(bytes, what);
    memset(p, 0, bytes);
    return p;
}

void arena_release(size_t mark) {
    if (!arena_head) return;
    size_t base = 0;
    for (ArenaBlock *b = arena_head; b; b = b->next) {
        if (mark <= base + b->size) {
            arena_cur = b;
            b->base = base;
            b->used = mark - base;
            return;
        }
        base += b->size;
    }
}

// ---- activation gradient buffers --------------------------------------------------------------------
// Not arena memory: run_backward gives each one back (tensor_release_grad) as soon as the node that
// made the activation has passed it on, so a step holds the backward's frontier of gradients rather
// than one per activation. They come from caching allocators (host_grad_cache above; CUDA's
// cuda_malloc_cached). Live buffers are listed here; arena_reset frees those still held (leaves).
typedef struct {
    float *ptr;
    Device device;
} GradBuffer;
static GradBuffer *live_grads;
static int n_live_grads, cap_live_grads;

static float *activation_grad_alloc(Device device, size_t bytes) {
    if (n_live_grads == cap_live_grads) {
        cap_live_grads = cap_live_grads ? 2 * cap_live_grads : 256;
        live_grads = realloc(live_grads, sizeof(GradBuffer) * (size_t)cap_live_grads);
        DOD_CHECK(live_grads != NULL, "tensor_grad", "out of memory tracking %d gradient buffers", cap_live_grads);
    }
    float *p;
    if (device == DEV_CUDA) {
        p = device_calloc(DEV_CUDA, bytes, "activation gradient");
    } else {
        p = block_cache_alloc(&host_grad_cache, bytes, "activation gradient");
        memset(p, 0, bytes);
        arena_note_peak();
    }
    live_grads[n_live_grads++] = (GradBuffer){p, device};
    return p;
}

static void activation_grad_free(int i) {
    GradBuffer b = live_grads[i];
    live_grads[i] = live_grads[--n_live_grads];
    if (b.device == DEV_CUDA) device_free(DEV_CUDA, b.ptr);
    else block_cache_free(&host_grad_cache, b.ptr, "activation gradient");
}

void tensor_release_grad(Tensor *t) {
    if (t->persistent || !t->grad) return;
    for (int i = n_live_grads - 1; i >= 0; i--) {  // newest first: the frontier is short
        if (live_grads[i].ptr != t->grad) continue;
        activation_grad_free(i);
        t->grad = NULL;
        return;
    }
    dod_fatal("tensor_release_grad", "gradient of activation %s is not a live gradient buffer (released twice?)",
              tensor_label(t));
}

void arena_reset(void) {
    while (n_live_grads > 0) activation_grad_free(n_live_grads - 1);
#ifdef DOD_HAVE_CUDA
    cuda_arena_reset();  // the device arena is rewound with the host arena (two integers: cheap)
#endif
    if (!arena_head) return;
    arena_cur = arena_head;
    arena_cur->used = 0;
    arena_cur->base = 0;
}

size_t arena_used(void) { return arena_mark(); }
size_t arena_peak(void) { return arena_peak_bytes; }

size_t arena_peak_reset(void) {
    size_t peak = arena_peak_bytes;
    arena_peak_bytes = arena_mark() + host_grad_cache.in_use_bytes;
    return peak;
}

// ---- creation -----------------------------------------------------------------------------------
static int64_t shape_numel(int ndim, const int64_t *shape, const char *who) {
    DOD_CHECK(ndim >= 0 && ndim <= TENSOR_MAX_DIMS, who, "ndim %d outside 0..%d", ndim, TENSOR_MAX_DIMS);
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) {
        DOD_CHECK(shape[i] >= 0, who, "negative dimension %ld at axis %d", (long)shape[i], i);
        n *= shape[i];
    }
    return n;
}

static void tensor_init_header(Tensor *t, int ndim, const int64_t *shape, DType dtype, const char *who) {
    memset(t, 0, sizeof *t);
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++) t->shape[i] = shape[i];
    t->numel = shape_numel(ndim, shape, who);
    t->dtype = dtype;
    t->device = DEV_CPU;
}

Tensor *tensor_new_on(Device device, int ndim, const int64_t *shape, DType dtype) {
    Tensor *t = arena_alloc(sizeof(Tensor), "tensor header");
    tensor_init_header(t, ndim, shape, dtype, "tensor_new");
    t->device = device;
    t->data = arena_alloc_on(device, (size_t)t->numel * dtype_size(dtype), "activation");
    return t;
}

Tensor *tensor_new(int ndim, const int64_t *shape, DType dtype) { return tensor_new_on(DEV_CPU, ndim, shape, dtype); }

Tensor *tensor_zeros(int ndim, const int64_t *shape) {
    Tensor *t = tensor_new(ndim, shape, DT_F32);
    memset(t->data, 0, (size_t)t->numel * 4);
    return t;
}

Tensor *tensor_like(const Tensor *t) { return tensor_new(t->ndim, t->shape, DT_F32); }
Tensor *tensor_new1(int64_t a) { int64_t s[] = {a}; return tensor_new(1, s, DT_F32); }
Tensor *tensor_new2(int64_t a, int64_t b) { int64_t s[] = {a, b}; return tensor_new(2, s, DT_F32); }
Tensor *tensor_new3(int64_t a, int64_t b, int64_t c) { int64_t s[] = {a, b, c}; return tensor_new(3, s, DT_F32); }
Tensor *tensor_new4(int64_t a, int64_t b, int64_t c, int64_t d) {
    int64_t s[] = {a, b, c, d};
    return tensor_new(4, s, DT_F32);
}

Tensor *tensor_new_persistent(const char *name, int ndim, const int64_t *shape, DType dtype) {
    Tensor *t = dod_malloc(sizeof(Tensor), "tensor header");
    tensor_init_header(t, ndim, shape, dtype, name ? name : "tensor_new_persistent");
    t->persistent = true;
    t->owns_data = true;
    t->name = name ? strdup(name) : NULL;
    t->data = dod_calloc((size_t)t->numel * dtype_size(dtype), name ? name : "persistent tensor");
    return t;
}

Tensor *tensor_wrap_persistent(const char *name, int ndim, const int64_t *shape, DType dtype, void *data) {
    Tensor *t = dod_malloc(sizeof(Tensor), "tensor header");
    tensor_init_header(t, ndim, shape, dtype, name ? name : "tensor_wrap_persistent");
    t->persistent = true;
    t->owns_data = false;
    t->name = name ? strdup(name) : NULL;
    t->data = data;
    return t;
}

void tensor_free(Tensor *t) {
    if (!t) return;
    DOD_CHECK(t->persistent, "tensor_free", "tensor %s is arena-owned; it is released by ag_step_reset",
              t->name ? t->name : shape_str(t));
    if (t->owns_data) device_free(t->device, t->data);
    device_free(t->device, t->grad);
    free((char *)t->name);
    free(t);
}

void *device_malloc(Device device, size_t bytes, const char *what) {
    return device == DEV_CUDA ? cuda_malloc_cached(bytes, what) : dod_malloc(bytes, what);
}

void *device_calloc(Device device, size_t bytes, const char *what) {
    if (device == DEV_CPU) return dod_calloc(bytes, what);
    void *p = cuda_malloc_cached(bytes, what);
    cuda_memset_zero(p, bytes);
    return p;
}

void device_free(Device device, void *p) {
    if (device == DEV_CUDA) cuda_free_cached(p);
    else free(p);
}

void *arena_alloc_on(Device device, size_t bytes, const char *what) {
    return device == DEV_CUDA ? cuda_arena_alloc(bytes, what) : arena_alloc(bytes, what);
}

void *arena_calloc_on(Device device, size_t bytes, const char *what) {
    return device == DEV_CUDA ? cuda_arena_calloc(bytes, what) : arena_calloc(bytes, what);
}

void device_copy(void *dst, Device dst_device, const void *src, Device src_device, size_t bytes) {
    if (dst_device == DEV_CPU && src_device == DEV_CPU) memcpy(dst, src, bytes);
    else if (src_device == DEV_CPU) cuda_copy_h2d(dst, src, bytes);
    else if (dst_device == DEV_CPU) cuda_copy_d2h(dst, src, bytes);
    else cuda_copy_d2d(dst, src, bytes);
}

Tensor *tensor_to_device(const Tensor *t, Device device) {
    size_t bytes = (size_t)t->numel * dtype_size(t->dtype);
    Tensor *out;
    if (t->persistent) {
        out = dod_malloc(sizeof(Tensor), "tensor header");
        tensor_init_header(out, t->ndim, t->shape, t->dtype, tensor_label(t));
        out->persistent = true;
        out->owns_data = true;
        out->name = t->name ? strdup(t->name) : NULL;
        out->requires_grad = t->requires_grad;
        out->device = device;
        out->data = device_malloc(device, bytes, tensor_label(t));
    } else {
        out = tensor_new_on(device, t->ndim, t->shape, t->dtype);
    }
    device_copy(out->data, device, t->data, t->device, bytes);
    return out;
}

void tensor_move_to(Tensor *t, Device device) {
    DOD_CHECK(t->persistent, "tensor_move_to", "tensor %s is an activation; use tensor_to_device", tensor_label(t));
    if (t->device == device) return;
    size_t bytes = (size_t)t->numel * dtype_size(t->dtype), gbytes = (size_t)t->numel * sizeof(float);
    void *data = device_malloc(device, bytes, tensor_label(t));
    device_copy(data, device, t->data, t->device, bytes);
    float *grad = NULL;
    if (t->grad) {
        grad = device_malloc(device, gbytes, "gradient");
        device_copy(grad, device, t->grad, t->device, gbytes);
    }
    if (t->owns_data) device_free(t->device, t->data);
    device_free(t->device, t->grad);
    t->data = data;
    t->grad = grad;
    t->owns_data = true;
    t->device = device;
}

// ---- access -------------------------------------------------------------------------------------
const float *tensor_f32(const Tensor *t) {
    if (t->dtype == DT_F32) return (const float *)t->data;
    if (t->device == DEV_CUDA) {
        float *dev = cuda_arena_alloc((size_t)t->numel * 4, "widened half tensor");
        cuda_widen_f32(t->data, t->dtype, dev, t->numel);
        return dev;
    }
    float *out = arena_alloc((size_t)t->numel * 4, "widened half tensor");
    const uint16_t *h = (const uint16_t *)t->data;
    if (t->dtype == DT_BF16) {
#pragma omp parallel for if (t->numel > OPS_PARALLEL_MIN)
        for (int64_t i = 0; i < t->numel; i++) out[i] = bf16_to_f32(h[i]);
    } else if (t->dtype == DT_F16) {
#pragma omp parallel for if (t->numel > OPS_PARALLEL_MIN)
        for (int64_t i = 0; i < t->numel; i++) out[i] = f16_to_f32(h[i]);
    } else {
        dod_fatal("tensor_f32", "tensor %s has dtype %s, which has no float view",
                  t->name ? t->name : shape_str(t), dtype_name(t->dtype));
    }
    return out;
}

void tensor_not_f32_fatal(const Tensor *t) {
    dod_fatal("tensor_data_f32", "tensor %s is %s, not f32 (read it through tensor_f32, write it through "
              "tensor_out_f32 + tensor_store_f32)", tensor_label(t), dtype_name(t->dtype));
}

static DType activation_dtype = DT_F32;

void ag_set_activation_dtype(DType dtype) {
    DOD_CHECK(dtype == DT_F32 || dtype == DT_BF16, "ag_set_activation_dtype",
              "activations are stored as f32 or bf16, not %s", dtype_name(dtype));
    activation_dtype = dtype;
}

DType ag_activation_dtype(void) { return activation_dtype; }

Tensor *tensor_new_activation(Device device, int ndim, const int64_t *shape) {
    return tensor_new_on(device, ndim, shape, activation_dtype);
}

Tensor *tensor_new_activation_of(Device device, int ndim, const int64_t *shape, int n, Tensor *const *inputs) {
    bool half = false;
    for (int i = 0; i < n && activation_dtype != DT_F32; i++)
        half = half || (inputs[i] && !tensor_storage_owner(inputs[i])->persistent &&
                        inputs[i]->dtype == activation_dtype);
    return tensor_new_on(device, ndim, shape, half ? activation_dtype : DT_F32);
}

float *tensor_out_f32(Tensor *t) {
    if (t->dtype == DT_F32) return (float *)t->data;
    return arena_alloc_on(t->device, (size_t)t->numel * sizeof(float), "f32 result before rounding");
}

void tensor_store_f32(Tensor *t, const float *y) {
    if (y == t->data) return;
    DOD_CHECK(t->dtype == DT_BF16 || t->dtype == DT_F16, "tensor_store_f32", "tensor %s: cannot store f32 values as %s",
              tensor_label(t), dtype_name(t->dtype));
    if (t->device == DEV_CUDA) {
        cuda_narrow_f32(y, t->dtype, t->data, t->numel);
        return;
    }
    uint16_t *h = t->data;
    bool bf = t->dtype == DT_BF16;
#pragma omp parallel for if (t->numel > OPS_PARALLEL_MIN)
    for (int64_t i = 0; i < t->numel; i++) h[i] = bf ? f32_to_bf16(y[i]) : f32_to_f16(y[i]);
}

ScratchScope scratch_begin(Device device) {
    return (ScratchScope){device, device == DEV_CUDA ? cuda_arena_mark() : arena_mark()};
}

void scratch_end(ScratchScope s) {
    if (s.device == DEV_CUDA) cuda_arena_release(s.mark);
    else arena_release(s.mark);
}

float *tensor_grad(Tensor *t) {
    if (!t->grad) {
        size_t bytes = (size_t)t->numel * sizeof(float);
        if (!t->persistent) {
            t->grad = activation_grad_alloc(t->device, bytes);
        } else {
            t->grad = device_calloc(t->device, bytes, t->name ? t->name : "gradient");
        }
    }
    return t->grad;
}

void tensor_zero_grad(Tensor *t) {
    if (!t->grad) return;
    if (t->device == DEV_CUDA) cuda_memset_zero(t->grad, (size_t)t->numel * sizeof(float));
    else memset(t->grad, 0, (size_t)t->numel * sizeof(float));
}

bool tensor_same_shape(const Tensor *a, const Tensor *b) {
    if (a->ndim != b->ndim) return false;
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i]) return false;
    return true;
}

float tensor_item(const Tensor *t) {
    DOD_CHECK(t->numel == 1 && t->dtype == DT_F32, "tensor_item", "tensor %s (%s) is not a one-element f32 tensor",
              tensor_label(t), dtype_name(t->dtype));
    float v;
    device_copy(&v, DEV_CPU, t->data, t->device, sizeof v);
    return v;
}

int64_t tensor_dim(const Tensor *t, int d) {
    if (d < 0) d += t->ndim;
    DOD_CHECK(d >= 0 && d < t->ndim, "tensor_dim", "axis %d out of range for shape %s", d, shape_str(t));
    return t->shape[d];
}

void tensor_convert_dtype(Tensor *t, DType dtype) {
    if (t->dtype == dtype) return;
    DOD_CHECK(t->persistent, "tensor_convert_dtype", "tensor %s is not persistent", t->name ? t->name : "?");
    DOD_CHECK(t->device == DEV_CPU, "tensor_convert_dtype", "tensor %s is on CUDA: convert before tensor_move_to",
              tensor_label(t));
    DOD_CHECK(dtype != DT_I64 && t->dtype != DT_I64, "tensor_convert_dtype",
              "tensor %s: cannot convert %s to %s", t->name ? t->name : "?", dtype_name(t->dtype), dtype_name(dtype));
    void *dst = dod_malloc((size_t)t->numel * dtype_size(dtype), t->name ? t->name : "converted tensor");
    for (int64_t i = 0; i < t->numel; i++) {
        float v;
        if (t->dtype == DT_F32) v = ((float *)t->data)[i];
        else if (t->dtype == DT_BF16) v = bf16_to_f32(((uint16_t *)t->data)[i]);
        else v = f16_to_f32(((uint16_t *)t->data)[i]);
        if (dtype == DT_F32) ((float *)dst)[i] = v;
        else if (dtype == DT_BF16) ((uint16_t *)dst)[i] = f32_to_bf16(v);
        else ((uint16_t *)dst)[i] = f32_to_f16(v);
    }
    if (t->owns_data) free(t->data);
    t->data = dst;
    t->owns_data = true;
    t->dtype = dtype;
}

void tensor_fill(Tensor *t, float v) {
    DOD_CHECK(t->device == DEV_CPU, "tensor_fill", "tensor %s is on CUDA (fill on the host, then copy)", tensor_label(t));
    DOD_CHECK(t->dtype == DT_F32, "tensor_fill", "tensor %s is %s, not f32", t->name ? t->name : shape_str(t),
              dtype_name(t->dtype));
    float *d = t->data;
    for (int64_t i = 0; i < t->numel; i++) d[i] = v;
}

// Counter-based: element i's value depends only on (seed, i).
static inline uint64_t splitmix64(uint64_t x) {
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

static inline double u01(uint64_t bits) { return ((bits >> 11) + 0.5) / 9007199254740992.0; }

void tensor_randn(Tensor *t, uint64_t seed, float std) {
    DOD_CHECK(t->device == DEV_CPU, "tensor_randn", "tensor %s is on CUDA (fill on the host, then copy)", tensor_label(t));
    DOD_CHECK(t->dtype == DT_F32, "tensor_randn", "tensor %s is not f32", t->name ? t->name : shape_str(t));
    float *d = t->data;
    uint64_t key = splitmix64(seed);
    for (int64_t i = 0; i < t->numel; i++) {
        uint64_t a = splitmix64(key ^ (uint64_t)(2 * i)), b = splitmix64(key ^ (uint64_t)(2 * i + 1));
        double r = sqrt(-2.0 * log(u01(a))), th = 2.0 * M_PI * u01(b);
        d[i] = (float)(std * r * cos(th));
    }
}

void tensor_rand_uniform(Tensor *t, uint64_t seed, float lo, float hi) {
    DOD_CHECK(t->device == DEV_CPU, "tensor_rand_uniform", "tensor %s is on CUDA (fill on the host, then copy)",
              tensor_label(t));
    DOD_CHECK(t->dtype == DT_F32, "tensor_rand_uniform", "tensor %s is not f32", t->name ? t->name : shape_str(t));
    float *d = t->data;
    uint64_t key = splitmix64(seed ^ 0x5DEECE66Dull);
    for (int64_t i = 0; i < t->numel; i++) d[i] = (float)(lo + (hi - lo) * u01(splitmix64(key ^ (uint64_t)i)));
}

// ---- half precision -----------------------------------------------------------------------------
float bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

uint16_t f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);  // quiet NaN
    u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest even
    return (uint16_t)(u >> 16);
}

float f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1f, mant = h & 0x3ffu, u;
    if (exp == 0) {
        if (mant == 0) {
            u = sign;
        } else {  // subnormal: normalise
            exp = 127 - 15 + 1;
            while (!(mant & 0x400u)) { mant <<= 1; exp--; }
            u = sign | (exp << 23) | ((mant & 0x3ffu) << 13);
        }
    } else if (exp == 31) {
        u = sign | 0x7f800000u | (mant << 13);
    } else {
        u = sign | ((exp + 127 - 15) << 23) | (mant << 13);
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}

uint16_t f32_to_f16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    uint32_t sign = (u >> 16) & 0x8000u;
    int32_t exp = (int32_t)((u >> 23) & 0xff) - 127 + 15;
    uint32_t mant = u & 0x7fffffu;
    if (((u >> 23) & 0xff) == 0xff) return (uint16_t)(sign | 0x7c00u | (mant ? 0x200u : 0));
    if (exp >= 31) return (uint16_t)(sign | 0x7c00u);  // overflow -> inf
    if (exp <= 0) {                                     // subnormal or zero
        if (exp < -10) return (uint16_t)sign;
        mant |= 0x800000u;
        uint32_t shift = (uint32_t)(14 - exp);
        uint32_t half = mant >> shift, rem = mant & ((1u << shift) - 1), mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half & 1))) half++;
        return (uint16_t)(sign | half);
    }
    uint32_t half = sign | ((uint32_t)exp << 10) | (mant >> 13), rem = mant & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (half & 1))) half++;  // may carry into the exponent: correct
    return (uint16_t)half;
}
