// A registry of named persistent tensors (dotted diffusers-style names such as
// "down_blocks.0.resnets.0.conv1.weight"), used to load, save and select trainable parameters.
#pragma once
#include "autograd/tensor.h"

typedef struct ParamStore ParamStore;

ParamStore *params_new(void);
// Frees the store and every tensor it owns (tensor_free).
void params_free(ParamStore *ps);
// Adds t under name (t->name is set to the store's copy). A duplicate name is fatal. Returns t.
Tensor *params_add(ParamStore *ps, const char *name, Tensor *t);
// The tensor registered under name, or NULL.
Tensor *params_get(ParamStore *ps, const char *name);
// Like params_get but fatal (naming the tensor and `who` wants it) when absent.
Tensor *params_require(ParamStore *ps, const char *name, const char *who);
int params_count(const ParamStore *ps);
Tensor *params_at(const ParamStore *ps, int i);   // insertion order
// Every tensor of ps moved to `device` in place (tensor_move_to: zero-copy file views become owned
// device copies; pointers to the tensors stay valid). Create or load on the CPU, then move.
void params_to_device(ParamStore *ps, Device device);
// Mark every tensor whose name matches the glob pattern (fnmatch, '*' crosses dots) as trainable
// (requires_grad = on). Returns how many matched.
int params_set_trainable(ParamStore *ps, const char *pattern, bool on);
// Collect the trainable tensors (requires_grad) in insertion order into out (capacity cap); returns count.
int params_trainable(const ParamStore *ps, Tensor **out, int cap);
int64_t params_numel(const ParamStore *ps, bool trainable_only);
void params_zero_grad(ParamStore *ps);   // grads of every tensor that has one, = 0
