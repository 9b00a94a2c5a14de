// Stable Diffusion's text encoder: transformers' CLIPTextModel read from a diffusers `text_encoder/`
// folder (config.json + model.safetensors or pytorch_model.bin), forward only.
//
//   h = token_embedding[ids] + position_embedding[0 .. n)                         [n, D]
//   per layer: h += out_proj(causal_attention(q_proj, k_proj, v_proj of layer_norm1(h)))
//              h += fc2(act(fc1(layer_norm2(h))))            act = quick_gelu | gelu (config hidden_act)
//   last_hidden_state = final_layer_norm(h)
//
// last_hidden_state is what diffusers' StableDiffusionPipeline (0.21) conditions the UNet on
// (text_encoder(ids)[0], no attention mask unless the config says use_attention_mask). SD 2.x's
// diffusers text_encoder has 23 layers: the penultimate layer of OpenCLIP ViT-H's 24, on which SD 2.x
// was trained, followed by the final layer norm, so its last_hidden_state is already the right output
// (docs/model-loading.md).
//
// Weights are stored as loaded (f32, f16 or bf16: zero-copy views when the file holds the requested
// dtype) and widened on use; compute and the output are f32. Runs on the CPU or, after
// clip_text_to_device, on CUDA.
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "autograd/params.h"
#include "layers/safetensors.h"
#include "layers/sd_config.h"

typedef struct {
    SdTextEncoderConfig cfg;
    ParamStore *ps;       // transformers names (text_model.*)
    SafeTensors *file;    // the mapping zero-copy views point into
    Device device;
} ClipTextModel;

// Loads DIR/config.json and DIR/model.safetensors (else model.fp16.safetensors, else the PyTorch
// checkpoint pytorch_model.bin through tensor_file_open), every tensor the config implies with its
// shape, as `dtype` (=). NULL with a message naming the file, every missing or misshapen tensor, or an
// unsupported config key in err.
ClipTextModel *clip_text_load(const char *dir, DType dtype, char *err, size_t errlen);
void clip_text_free(ClipTextModel *m);
// Moves every weight to `device` in place.
void clip_text_to_device(ClipTextModel *m, Device device);

// last_hidden_state [n, hidden_size] (= new arena tensor, f32, on the model's device) of ids[0..n)
// (host memory, 1 <= n <= max_positions, each in [0, vocab_size): fatal naming the op otherwise). Runs
// with grad mode off and f32 activations whatever the process settings; each layer's intermediate
// tensors are given back as soon as the layer is done.
Tensor *clip_text_forward(ClipTextModel *m, const int64_t *ids, int n);
