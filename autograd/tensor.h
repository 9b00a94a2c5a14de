// Dense N-d tensors and the activation arena (errors, allocation and clocks: autograd/base.h).
//
// Every tensor is contiguous, row-major (NCHW for images). Storage dtype is f32, f16 or bf16;
// compute is always f32: ops read half-precision tensors through tensor_f32() which widens
// them into arena scratch ("widened on use"), so frozen weights can live in half precision.
//
// Two lifetimes:
//  - persistent tensors (parameters, optimizer state, data loaded from files): tensor_new_persistent()
//    / tensor_free(). Their .grad is heap memory and survives arena resets, which is what makes
//    gradient accumulation over micro-batches work (grads are only ever +=, cleared by zero_grad).
//  - activations: tensor_new() allocates struct and data from the arena, which ag_step_reset()
//    rewinds once per step. Nothing in the arena outlives a step. Their gradients (lazily, see
//    tensor_grad) are step buffers the backward frees as it goes.
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "autograd/base.h"

#define TENSOR_MAX_DIMS 6

typedef enum { DT_F32 = 0, DT_F16 = 1, DT_BF16 = 2, DT_I64 = 3 } DType;
typedef enum { DEV_CPU = 0, DEV_CUDA = 1 } Device;

typedef struct Tensor {
    int ndim;
    int64_t shape[TENSOR_MAX_DIMS];
    int64_t numel;
    DType dtype;
    Device device;
    void *data;          // numel elements of dtype (device memory when device == DEV_CUDA)
    float *grad;         // f32, numel elements; NULL until first accumulated (see tensor_grad)
    bool requires_grad;  // a leaf the user wants gradients for, or an op output depending on one
    bool persistent;     // heap-owned (parameters); false: arena-owned activation
    bool owns_data;      // persistent only: free(data) in tensor_free (false for mmapped views)
    bool overwritten;    // an in-place op (op_add_into, ...) wrote its result into this storage: ops refuse it
    struct Tensor *view_of;  // op_reshape: the tensor that owns this header's storage (NULL: this one)
    const char *name;    // optional, for error messages and the parameter registry
} Tensor;

// The tensor whose storage t uses: t itself, or what an op_reshape view was made from. Whether that
// storage is a parameter's (persistent) or may be overwritten in place is decided on the owner.
static inline Tensor *tensor_storage_owner(Tensor *t) { return t->view_of ? t->view_of : t; }

// ---- names ---------------------------------------------------------------------------------------
// "[2, 3, 4]" into buf (thread-unsafe static ring of 4 buffers when buf == NULL).
const char *shape_str(const Tensor *t);
const char *dtype_name(DType dt);
size_t dtype_size(DType dt);

// ---- the activation arena -------------------------------------------------------------------
// A list of large blocks; allocations are 64-byte aligned and never move. arena_mark/arena_release
// rewind to a mark (used by activation recomputation); ag_step_reset() rewinds everything.
void *arena_alloc(size_t bytes, const char *what);      // uninitialised
void *arena_calloc(size_t bytes, const char *what);     // zeroed
size_t arena_mark(void);
void arena_release(size_t mark);
void arena_reset(void);
size_t arena_used(void);
// High-water mark (bytes) of step memory on the host since start or the last arena_peak_reset: arena
// bytes in use plus host activation-gradient buffers held (see tensor_grad).
size_t arena_peak(void);
// Returns the high-water mark and restarts it from the current use (to measure one phase, e.g. the
// training step apart from validation).
size_t arena_peak_reset(void);
// Size of the next block of an arena that already holds `total` bytes, for a request of `bytes`:
// as big as all blocks so far, clamped to [min, max], and at least the request (host arena here,
// device arena in autograd/cuda/device.cu).
size_t arena_grow_size(size_t total, size_t bytes, size_t min, size_t max);

// ---- creation --------------------------------------------------------------------------------
// Arena tensor, data uninitialised. shape has ndim entries.
Tensor *tensor_new(int ndim, const int64_t *shape, DType dtype);
Tensor *tensor_zeros(int ndim, const int64_t *shape);                // f32, zeroed
Tensor *tensor_like(const Tensor *t);                                 // f32, same shape, uninit
// Convenience: tensor_new4(n, c, h, w) etc. build the shape array for you (f32, arena).
Tensor *tensor_new1(int64_t a);
Tensor *tensor_new2(int64_t a, int64_t b);
Tensor *tensor_new3(int64_t a, int64_t b, int64_t c);
Tensor *tensor_new4(int64_t a, int64_t b, int64_t c, int64_t d);
// Heap tensor (parameters, loaded weights), data zeroed. name is copied.
Tensor *tensor_new_persistent(const char *name, int ndim, const int64_t *shape, DType dtype);
// Heap tensor header around caller-owned memory (e.g. an mmapped safetensors blob); not freed.
Tensor *tensor_wrap_persistent(const char *name, int ndim, const int64_t *shape, DType dtype, void *data);
void tensor_free(Tensor *t);  // persistent tensors only

// ---- devices (the CUDA side lives in autograd/cuda; see autograd/cuda/cuda_backend.h) -------------
// Arena tensor on `device`, data uninitialised (device memory comes from the device arena, which
// arena_reset() rewinds together with the host arena). tensor_new(...) == tensor_new_on(DEV_CPU, ...).
Tensor *tensor_new_on(Device device, int ndim, const int64_t *shape, DType dtype);
// Copy of t's data on `device` (same dtype): persistent (same name, requires_grad kept) when t is
// persistent, else an arena tensor. Records no tape node: gradients do not flow across the copy.
Tensor *tensor_to_device(const Tensor *t, Device device);
// Move a persistent tensor's storage and gradient (if allocated) to `device` in place (weights).
void tensor_move_to(Tensor *t, Device device);
// Raw memory on either device, so callers need no branch of their own:
//  - device_malloc / device_calloc / device_free: long-lived blocks (heap, or the CUDA caching allocator); free(NULL) ok;
//  - arena_alloc_on / arena_calloc_on: step memory (the host arena, or the device arena);
//  - device_copy: bytes from src on src_device to dst on dst_device (=; host, h2d, d2h or d2d).
void *device_malloc(Device device, size_t bytes, const char *what);
void *device_calloc(Device device, size_t bytes, const char *what);  // zeroed
void device_free(Device device, void *p);
void *arena_alloc_on(Device device, size_t bytes, const char *what);
void *arena_calloc_on(Device device, size_t bytes, const char *what);  // zeroed
void device_copy(void *dst, Device dst_device, const void *src, Device src_device, size_t bytes);

// ---- access ----------------------------------------------------------------------------------
// t's storage as floats; t must be f32 (fatal naming the tensor otherwise: read half tensors through
// tensor_f32, write them through tensor_out_f32 / tensor_store_f32).
void tensor_not_f32_fatal(const Tensor *t) __attribute__((noreturn));
static inline float *tensor_data_f32(const Tensor *t) {
    if (t->dtype != DT_F32) tensor_not_f32_fatal(t);
    return (float *)t->data;
}
// f32 view of t: t->data itself for f32, otherwise an arena copy widened from f16/bf16.
const float *tensor_f32(const Tensor *t);
// Scratch scope of one op call on `device`'s arena (host, or the device arena for DEV_CUDA): what is
// allocated between scratch_begin and scratch_end is given back at scratch_end. Ops widen frozen
// half-precision weights inside one, so the copies never pile up in the step arena (the backward
// widens again); outputs, saved tensors and gradient buffers must be allocated before it begins.
typedef struct {
    Device device;
    size_t mark;
} ScratchScope;
ScratchScope scratch_begin(Device device);
void scratch_end(ScratchScope s);
// Gradient buffer of t (f32, numel), allocated zeroed on first use, on t's device. A persistent
// tensor's buffer lives until tensor_free. An activation's is a step buffer outside the arena: the
// tape gives it back with tensor_release_grad once the node that made the activation has used it
// (so backward holds only its frontier of gradients), and arena_reset frees any still held.
float *tensor_grad(Tensor *t);
// Frees an activation's gradient buffer now and sets t->grad = NULL (no-op for persistent tensors
// or when none is allocated). Used by the tape; reading the gradient afterwards is a bug.
void tensor_release_grad(Tensor *t);
void tensor_zero_grad(Tensor *t);      // memset grad to 0 if allocated
bool tensor_same_shape(const Tensor *a, const Tensor *b);
int64_t tensor_dim(const Tensor *t, int d);  // negative d counts from the end
// The value of a one-element f32 tensor (a loss), on the host: copied back when t lives on CUDA (which
// waits for the kernels that make it). Fatal naming t otherwise.
float tensor_item(const Tensor *t);
// Convert a persistent tensor's storage in place to dtype (f32 <-> f16/bf16), e.g. to keep frozen
// weights in bf16. Gradients are unaffected (always f32).
void tensor_convert_dtype(Tensor *t, DType dtype);
void tensor_fill(Tensor *t, float v);  // f32 only
// Fill with N(0, std^2) / U(lo, hi) from a counter-based RNG keyed by seed (same seed -> same values).
void tensor_randn(Tensor *t, uint64_t seed, float std);
void tensor_rand_uniform(Tensor *t, uint64_t seed, float lo, float hi);

// ---- activation storage dtype ---------------------------------------------------------------------
// The dtype in which ops store the activations they return: DT_F32 (the default) or DT_BF16, which
// halves the memory of everything the forward keeps for backward. As with torch.autocast, the products
// (op_conv2d and the fused convolutions, op_linear, op_matmul, op_attention) store their results in it,
// and other ops store theirs in bf16 when an input is a bf16 activation (norms, activations,
// elementwise and shape ops), so bf16 spreads from the products while f32 chains (images, timestep
// embeddings, losses combined with op_scale / op_add) stay f32. Compute is f32 either way: an op widens
// its inputs in scratch, computes as in f32 mode and rounds its result once when storing it, so with
// bf16-exact inputs its output is the f32-mode output rounded to bf16. Always f32: losses, reductions,
// softmax, global average pooling, embedding rows, norm statistics, and every gradient (tensor_grad
// buffers are f32 whatever the storage dtype). Process-wide, like the grad mode; set it between steps.
void ag_set_activation_dtype(DType dtype);
DType ag_activation_dtype(void);
// A product's output: an arena tensor on `device` in the activation dtype, data uninitialised.
Tensor *tensor_new_activation(Device device, int ndim, const int64_t *shape);
// Any other op's output: bf16 when the activation dtype is bf16 and one of the n inputs (NULL entries
// ignored) is a bf16 activation (its storage not a parameter's: tensor_storage_owner), else f32.
Tensor *tensor_new_activation_of(Device device, int ndim, const int64_t *shape, int n, Tensor *const *inputs);
// Where to compute t's values in f32: t's own storage when t is f32, else numel floats of scratch on
// t's device (call inside a scratch scope that ends after tensor_store_f32).
float *tensor_out_f32(Tensor *t);
// t = y (f32 values computed into tensor_out_f32(t)): nothing to do when y is t's storage, else y is
// rounded to t's dtype (round to nearest even) into t's storage.
void tensor_store_f32(Tensor *t, const float *y);

// ---- half precision conversion ----------------------------------------------------------------
float bf16_to_f32(uint16_t h);
uint16_t f32_to_bf16(float f);   // round to nearest even; NaN stays NaN
float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);    // round to nearest even
