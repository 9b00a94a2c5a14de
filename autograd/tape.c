// The reverse-mode tape: a growable array of node pointers (nodes and contexts live in the arena).
#include "autograd/tape.h"

#include "autograd/cuda/cuda_backend.h"
#include "autograd/profile.h"

#include <stdlib.h>
#include <string.h>

static AgNode **tape;
static int tape_len, tape_cap;
static bool grad_enabled = true;

bool ag_grad_enabled(void) { return grad_enabled; }

bool ag_set_grad_enabled(bool on) {
    bool prev = grad_enabled;
    grad_enabled = on;
    return prev;
}

bool ag_needs_grad(int n, Tensor *const *inputs) {
    if (!grad_enabled) return false;
    for (int i = 0; i < n; i++)
        if (inputs[i] && inputs[i]->requires_grad) return true;
    return false;
}

void *ag_record(const char *op, AgBackwardFn backward, Tensor *out, int n_inputs, Tensor *const *inputs,
                size_t ctx_bytes) {
    DOD_CHECK(n_inputs >= 0 && n_inputs <= AG_MAX_INPUTS, op, "%d inputs recorded, at most %d", n_inputs,
              AG_MAX_INPUTS);
    AgNode *node = arena_calloc(sizeof(AgNode), "tape node");
    node->op = op;
    node->backward = backward;
    node->out = out;
    node->n_inputs = n_inputs;
    for (int i = 0; i < n_inputs; i++) node->inputs[i] = inputs[i];
    node->ctx = ctx_bytes ? arena_calloc(ctx_bytes, op) : NULL;
    out->requires_grad = true;
    if (tape_len == tape_cap) {
        tape_cap = tape_cap ? 2 * tape_cap : 1024;
        tape = realloc(tape, sizeof(AgNode *) * tape_cap);
        DOD_CHECK(tape != NULL, "ag_record", "out of memory growing the tape to %d nodes", tape_cap);
    }
    tape[tape_len++] = node;
    return node->ctx;
}

// Run nodes [from, tape_len) in reverse. A node whose output received no gradient is skipped.
static void run_backward(int from) {
    bool prev = ag_set_grad_enabled(false);  // backward functions never record
    for (int i = tape_len - 1; i >= from; i--) {
        AgNode *n = tape[i];
        if (!n->out->grad) continue;
        op_profile_backward_begin(n->op, n->out->device);
        n->backward(n);
        op_profile_backward_end(n->out->device);
    }
    ag_set_grad_enabled(prev);
}

void ag_backward_from(Tensor *out, const float *seed_grad) {
    DOD_CHECK(out->requires_grad, "ag_backward", "tensor %s does not require grad (nothing on the tape leads to it)",
              shape_str(out));
    float *g = tensor_grad(out);
    if (out->device == DEV_CUDA) {  // seed_grad is host memory
        float *seed_dev = NULL;
        if (seed_grad) {
            seed_dev = cuda_arena_alloc((size_t)out->numel * sizeof(float), "backward seed");
            cuda_copy_h2d(seed_dev, seed_grad, (size_t)out->numel * sizeof(float));
        }
        cuda_axpy(g, seed_dev, 1.0f, out->numel);
    } else {
        for (int64_t i = 0; i < out->numel; i++) g[i] += seed_grad ? seed_grad[i] : 1.0f;
    }
    run_backward(0);
}

void ag_backward(Tensor *loss) {
    DOD_CHECK(loss->numel == 1, "ag_backward", "loss must be a scalar, got shape %s", shape_str(loss));
    ag_backward_from(loss, NULL);  // NULL seed: d(loss)/d(loss) = 1
}

void ag_step_reset(void) {
    tape_len = 0;
    arena_reset();
}

int ag_tape_size(void) { return tape_len; }

// ---- activation recomputation ---------------------------------------------------------------------
typedef struct {
    AgBlockFn fn;
    void *fn_ctx;
} CheckpointCtx;

static void checkpoint_backward(AgNode *node) {
    CheckpointCtx *c = node->ctx;
    // Gradient buffers of the real inputs must exist before the mark, so they survive the release.
    for (int i = 0; i < node->n_inputs; i++)
        if (node->inputs[i]->requires_grad) tensor_grad(node->inputs[i]);
    size_t mark = arena_mark();
    bool on_cuda = node->out->device == DEV_CUDA;
    size_t cuda_mark = on_cuda ? cuda_arena_mark() : 0;
    int tape_mark = tape_len;
    // Detached copies of the inputs: same data, fresh (arena) gradients.
    Tensor *detached[AG_MAX_INPUTS];
    for (int i = 0; i < node->n_inputs; i++) {
        Tensor *src = node->inputs[i];
        if (src->persistent) {  // parameters are leaves already: use them directly
            detached[i] = src;
            continue;
        }
        Tensor *d = arena_alloc(sizeof(Tensor), "checkpoint input");
        *d = *src;
        d->grad = NULL;
        d->arena_pos = mark;  // its gradient lives in the recomputation's arena region
        detached[i] = d;
    }
    // Gradients of older activations the block captured (not among its inputs) go to the heap.
    size_t prev_floor = arena_set_grad_floor(mark);
    ag_set_grad_enabled(true);
    Tensor *out = c->fn(c->fn_ctx, detached);
    DOD_CHECK(out->numel == node->out->numel, "ag_checkpoint",
              "recomputed block output %s differs from the first run's %s", shape_str(out), shape_str(node->out));
    if (out->requires_grad) {
        float *g = tensor_grad(out);
        device_copy(g, out->device, node->out->grad, node->out->device, (size_t)out->numel * sizeof(float));
        run_backward(tape_mark);
    }
    ag_set_grad_enabled(false);
    for (int i = 0; i < node->n_inputs; i++) {
        Tensor *src = node->inputs[i];
        if (src->persistent || !src->requires_grad || !detached[i]->grad) continue;
        float *dst = src->grad, *g = detached[i]->grad;
        if (src->device == DEV_CUDA) {
            cuda_axpy(dst, g, 1.0f, src->numel);
            continue;
        }
        for (int64_t j = 0; j < src->numel; j++) dst[j] += g[j];
    }
    tape_len = tape_mark;
    arena_set_grad_floor(prev_floor);
    arena_release(mark);
    if (on_cuda) cuda_arena_release(cuda_mark);
}

Tensor *ag_run_keeping_output(AgBlockFn fn, void *ctx, int n_inputs, Tensor *const *inputs) {
    bool cuda_in = n_inputs > 0 && inputs[0]->device == DEV_CUDA;
    size_t mark = arena_mark(), cuda_mark = cuda_in ? cuda_arena_mark() : 0;
    Tensor *out = fn(ctx, inputs);
    for (int i = 0; i < n_inputs; i++)
        if (out == inputs[i]) return out;  // nothing new to keep
    // Park the output (heap, or the device cache for a CUDA tensor), rewind, bring it back at the mark.
    size_t bytes = (size_t)out->numel * sizeof(float);
    Device dev = out->device;
    DOD_CHECK((dev == DEV_CUDA) == cuda_in && out->dtype == DT_F32, "ag_run_keeping_output",
              "block output %s (%s) is on %s, its input on %s", shape_str(out), dtype_name(out->dtype),
              dev == DEV_CUDA ? "cuda" : "cpu", cuda_in ? "cuda" : "cpu");
    void *parked = device_malloc(dev, bytes, "block output");
    device_copy(parked, dev, out->data, dev, bytes);
    int ndim = out->ndim;
    int64_t shape[TENSOR_MAX_DIMS];
    memcpy(shape, out->shape, sizeof shape);
    arena_release(mark);
    if (cuda_in) cuda_arena_release(cuda_mark);
    Tensor *kept = tensor_new_on(dev, ndim, shape, DT_F32);
    device_copy(kept->data, dev, parked, dev, bytes);
    device_free(dev, parked);  // on CUDA the copy above is queued first on the same stream
    return kept;
}

Tensor *ag_checkpoint(AgBlockFn fn, void *ctx, int n_inputs, Tensor *const *inputs) {
    if (!ag_needs_grad(n_inputs, inputs)) return fn(ctx, inputs);
    bool prev = ag_set_grad_enabled(false);
    // The first run's intermediates are not needed (backward recomputes them): give them back now.
    Tensor *out = ag_run_keeping_output(fn, ctx, n_inputs, inputs);
    ag_set_grad_enabled(prev);
    CheckpointCtx *c = ag_record("checkpoint", checkpoint_backward, out, n_inputs, inputs, sizeof(CheckpointCtx));
    c->fn = fn;
    c->fn_ctx = ctx;
    return out;
}
