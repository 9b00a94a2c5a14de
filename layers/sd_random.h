// Stable Diffusion UNet / VAE with random weights from a config alone: full-size benchmarks (SD 2.1,
// 865M-parameter UNet) without a checkpoint on the machine. Same parameter table as the loaders
// (layers/sd_weights.h), so the forward passes cannot tell the difference.
#pragma once
#include "layers/unet.h"
#include "layers/vae.h"

// dir: a diffusers root (dir/unet/config.json, dir/vae/config.json) or the part directory itself.
// Every tensor of the config's table (= new heap tensors, dtype DT_F32/DT_BF16/DT_F16): matrices and
// conv kernels uniform in +-1/sqrt(fan_in) (PyTorch's default bound), 1-D ".weight" (norm scales) 1,
// biases 0; a counter-based RNG keyed by seed and the tensor's position, filled in parallel.
// Fatal naming the config on any error. Free with unet_free / vae_free.
Unet *unet_create_random(const char *dir, DType dtype, uint64_t seed);
Vae *vae_create_random(const char *dir, DType dtype, uint64_t seed);
