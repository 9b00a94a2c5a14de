// Pieces of the DOD model (layers/dod_model.c) that are not the pipeline itself: eval-time reflect
// padding and cropping, the prompt repeated per image, and reading tensors (prompt embedding,
// checkpoints) from safetensors files.
#pragma once
#include "autograd/ops.h"
#include "autograd/params.h"

// x [N, C, H, W] reflect-padded on the bottom/right by (pad_h, pad_w) (= new tensor; op_gather_hw, so any
// device, and differentiable). torch F.pad(mode='reflect') semantics: each pad must be smaller than the
// dimension.
Tensor *dod_pad_reflect(Tensor *x, int pad_h, int pad_w);
// The top-left [N, C, h, w] of x (= new tensor; op_gather_hw as above).
Tensor *dod_crop(Tensor *x, int64_t h, int64_t w);

// t repeated n times along a new leading axis (= new tensor [n, ...t's shape] on t's device, rows of
// op_embedding; no gradient: for frozen constants such as the prompt embedding).
Tensor *dod_repeat_constant(Tensor *t, int64_t n);

// The prompt embedding from a safetensors file: its tensor "prompt_embeds", or its only tensor, of shape
// [L, D] or [1, L, D], as a persistent f32 [L, D] tensor. Fatal naming the file when it cannot be opened,
// holds several tensors but no "prompt_embeds", or the shape is wrong, or D != want_dim.
Tensor *dod_load_prompt(const char *path, int want_dim);
// The same file's "negative_prompt_embeds" tensor (dod-encode-prompt --negative-prompt writes it), with the
// same checks; NULL when the file has none.
Tensor *dod_load_negative_prompt(const char *path, int want_dim);

// Copies (=) the tensor `prefix` + t->name of the open file into every tensor t of ps that has one
// (see dod_model_load_tensors); tensors of ps already on CUDA are written there. Returns how many were copied; when require_all, a tensor of ps without
// one in the file is fatal (every such name is listed).
int dod_load_into(ParamStore *ps, const char *path, const char *prefix, bool require_all);
