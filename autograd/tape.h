// Reverse-mode tape.
//
// An op computes its output, then (when grad mode is on and some input requires grad) records a
// node: the backward function, its inputs, its output and a small saved context. ag_backward(loss)
// seeds d(loss)/d(loss) = 1 and runs the nodes in reverse; each backward function ACCUMULATES (+=)
// into tensor_grad(input) for every input with requires_grad. After a node has run, its output's
// gradient buffer is freed (tensor_release_grad): gradients of intermediate activations cannot be
// read after backward, those of leaves (parameters, inputs marked requires_grad) can. Nodes live in
// the arena and are dropped by ag_step_reset().
#pragma once
#include "autograd/tensor.h"

#define AG_MAX_INPUTS 8

typedef struct AgNode AgNode;
typedef void (*AgBackwardFn)(AgNode *node);

struct AgNode {
    const char *op;                 // op name, for error messages and debugging
    AgBackwardFn backward;
    Tensor *out;
    int n_inputs;
    Tensor *inputs[AG_MAX_INPUTS];
    void *ctx;                      // op-specific saved state (arena memory)
};

// True when ops should record nodes (grad mode on). Ops use ag_needs_grad(...) below.
bool ag_grad_enabled(void);
// No-grad scope: int prev = ag_set_grad_enabled(false); ... ag_set_grad_enabled(prev);
bool ag_set_grad_enabled(bool on);
// True when grad mode is on and any of the n inputs (NULL entries ignored) requires grad.
bool ag_needs_grad(int n, Tensor *const *inputs);

// Record a node for `out` (sets out->requires_grad). ctx_bytes of zeroed arena memory are
// allocated for the op's saved state and returned (NULL when ctx_bytes == 0).
// Call only when ag_needs_grad() said yes.
void *ag_record(const char *op, AgBackwardFn backward, Tensor *out, int n_inputs,
                Tensor *const *inputs, size_t ctx_bytes);

// Run the whole tape backward from a scalar (numel == 1) loss; its grad is seeded with 1 (+=).
// Call once per step (per micro-batch): a second call would run every node again and count the
// gradients twice. Build one scalar from several losses with op_add instead.
void ag_backward(Tensor *loss);
// Same, seeding d(loss)/d(out) with the given f32 buffer (numel of out; NULL means all ones), accumulated.
void ag_backward_from(Tensor *out, const float *seed_grad);

// Called after each backward node has run (the nodes of recomputed blocks included), with that
// node: its backward has accumulated into the gradients of its inputs. Data-parallel training
// (train/grad_sync.c) counts there when a parameter's gradient is complete. NULL removes it.
typedef void (*AgBackwardHook)(void *ctx, const AgNode *node);
void ag_set_backward_hook(AgBackwardHook fn, void *ctx);

// Drop the tape and rewind the activation arena. Call once per micro-batch/step after the
// optimizer has consumed the parameter gradients (persistent grads are kept).
void ag_step_reset(void);
int ag_tape_size(void);

// Activation recomputation ("gradient checkpointing"): run fn(ctx, in) with grad mode off, give
// back the arena it used except its output (ag_run_keeping_output), and record one node; in
// backward, fn is re-run with grad on over detached copies of the inputs, the sub-tape is
// back-propagated, and the arena used by the recomputation is released. fn must be deterministic
// and must not leave anything it allocated in the arena for later use besides its output (its
// ctx is allocated by the caller, before the call), and must return a new tensor (a block that
// returns one of its inputs is not recorded). It may use activations it did not take as inputs
// (e.g. per-sample modulation made outside the block): their gradients are accumulated correctly,
// since gradient buffers are not arena memory.
typedef Tensor *(*AgBlockFn)(void *ctx, Tensor *const *inputs);
Tensor *ag_checkpoint(AgBlockFn fn, void *ctx, int n_inputs, Tensor *const *inputs);
// Runs fn(ctx, inputs) and rewinds the arenas (host, and the device arena when the inputs are on
// CUDA) to where they stood before, keeping only the output: it is copied (=) to a new tensor
// allocated at the old mark. For callers that run fn with grad mode off (nothing on the tape may
// point into the released memory). Returns the input itself when fn returns one of its inputs.
Tensor *ag_run_keeping_output(AgBlockFn fn, void *ctx, int n_inputs, Tensor *const *inputs);
