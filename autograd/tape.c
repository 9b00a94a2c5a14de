// The reverse-mode tape: a growable array of node pointers (nodes and contexts live in the arena).
#include "autograd/tape.h"

#include "autograd/cuda/cuda_backend.h"
#include "autograd/profile.h"

#include <stdlib.h>
#include <string.h>

static AgNode **tape;
static int tape_len, tape_cap;
static bool grad_enabled = true;
static AgBackwardHook backward_hook;
static void *backward_hook_ctx;

void ag_set_backward_hook(AgBackwardHook fn, void *ctx) {
    backward_hook = fn;
    backward_hook_ctx = ctx;
}

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

// Run nodes [from, tape_len) in reverse. A node whose output received no gradient is skipped. Once a
// node has run, its output's gradient is complete and used up (every consumer of the output comes
// later on the tape and ran before it), so the buffer is given back at once.
static void run_backward(int from) {
    bool prev = ag_set_grad_enabled(false);  // backward functions never record
    for (int i = tape_len - 1; i >= from; i--) {
        AgNode *n = tape[i];
        if (!n->out->grad) continue;
        op_profile_backward_begin(n->op, n->out->device);
        n->backward(n);
        op_profile_backward_end(n->out->device);
        if (backward_hook) backward_hook(backward_hook_ctx, n);
        tensor_release_grad(n->out);
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
    size_t mark = arena_mark();
    bool on_cuda = node->out->device == DEV_CUDA;
    size_t cuda_mark = on_cuda ? cuda_arena_mark() : 0;
    int tape_mark = tape_len;
    // Detached copies of the inputs (the sub-tape's leaves): same data, and the real input's own
    // gradient buffer, which the sub-tape's backward functions accumulate into (+=) directly.
    Tensor *detached[AG_MAX_INPUTS];
    for (int i = 0; i < node->n_inputs; i++) {
        Tensor *src = node->inputs[i];
        if (src->persistent) {  // parameters are leaves already: use them directly
            detached[i] = src;
            continue;
        }
        Tensor *d = arena_alloc(sizeof(Tensor), "checkpoint input");
        *d = *src;
        d->grad = src->requires_grad ? tensor_grad(src) : NULL;
        detached[i] = d;
    }
    ag_set_grad_enabled(true);
    op_profile_recompute_begin();  // the block's products repeat its first run's: counted as recomputed
    Tensor *out = c->fn(c->fn_ctx, detached);
    op_profile_recompute_end();
    DOD_CHECK(out->numel == node->out->numel, "ag_checkpoint",
              "recomputed block output %s differs from the first run's %s", shape_str(out), shape_str(node->out));
    DOD_CHECK(out->grad == NULL, "ag_checkpoint",
              "the recomputed block returned a tensor %s that already has a gradient (a block must return a new "
              "tensor)", shape_str(out));
    if (out->requires_grad) {
        // Hand the block output's gradient to the recomputed output: the sub-tape frees it when used.
        out->grad = node->out->grad;
        node->out->grad = NULL;
        run_backward(tape_mark);
    }
    ag_set_grad_enabled(false);
    tape_len = tape_mark;
    // Gradient buffers are not arena memory: releasing the recomputation's arena loses none.
    arena_release(mark);
    if (on_cuda) cuda_arena_release(cuda_mark);
}

// Whether a block returned one of its inputs (an identity block).
static bool is_block_input(const Tensor *out, int n_inputs, Tensor *const *inputs) {
    for (int i = 0; i < n_inputs; i++)
        if (out == inputs[i]) return true;
    return false;
}

Tensor *ag_run_keeping_output(AgBlockFn fn, void *ctx, int n_inputs, Tensor *const *inputs) {
    bool cuda_in = n_inputs > 0 && inputs[0]->device == DEV_CUDA;
    size_t mark = arena_mark(), cuda_mark = cuda_in ? cuda_arena_mark() : 0;
    Tensor *out = fn(ctx, inputs);
    if (is_block_input(out, n_inputs, inputs)) return out;  // nothing new to keep
    // Park the output (heap, or the device cache for a CUDA tensor), rewind, bring it back at the mark.
    size_t bytes = (size_t)out->numel * dtype_size(out->dtype);
    Device dev = out->device;
    DType dtype = out->dtype;
    DOD_CHECK((dev == DEV_CUDA) == cuda_in, "ag_run_keeping_output",
              "block output %s (%s) is on %s, its input on %s", shape_str(out), dtype_name(out->dtype),
              dev == DEV_CUDA ? "cuda" : "cpu", cuda_in ? "cuda" : "cpu");
    void *parked = device_malloc(dev, bytes, "block output");
    device_copy(parked, dev, out->data, dev, bytes);
    int ndim = out->ndim;
    int64_t shape[TENSOR_MAX_DIMS];
    memcpy(shape, out->shape, sizeof shape);
    arena_release(mark);
    if (cuda_in) cuda_arena_release(cuda_mark);
    Tensor *kept = tensor_new_on(dev, ndim, shape, dtype);
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
    if (is_block_input(out, n_inputs, inputs)) return out;  // an identity block: nothing to recompute or record
    CheckpointCtx *c = ag_record("checkpoint", checkpoint_backward, out, n_inputs, inputs, sizeof(CheckpointCtx));
    c->fn = fn;
    c->fn_ctx = ctx;
    return out;
}
