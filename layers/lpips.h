// LPIPS (Zhang et al. 2018, "The Unreasonable Effectiveness of Deep Features as a Perceptual
// Metric"), the VGG16 variant of the lpips package, version 0.1, as an op graph with backward:
//
//   d(x, y) = sum over l = 1..5 of mean over (h, w) of  w_l . (n(f_l(x)) - n(f_l(y)))^2
//
// x, y [N, 3, H, W] in [-1, 1] (lpips' normalize=False); f_l: torchvision VGG16 `features` after the
// input ScalingLayer ((x - shift) / scale, shift (-.030, -.088, -.188), scale (.458, .448, .450)),
// tapped at relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 (3x3 convs with padding 1, ReLU, 2x2 max
// pools between the stages); n: unit channel vectors, f / (sqrt(sum_c f^2) + 1e-10); w_l: the 1x1
// conv "lin" heads without bias (their dropout is off at evaluation). One distance per image.
//
// Weights come from the two files users have, in any format tensor_file_open reads (PyTorch zip or
// legacy, or safetensors): torchvision's vgg16-397923af.pth (features.{0,2,5,7,10,12,14,17,19,21,24,
// 26,28}.{weight,bias}; the classifier is never read) and the lpips package's weights/v0.1/vgg.pth
// (lin0..lin4.model.1.weight, [1, C, 1, 1]). They are frozen: stored as `dtype` (f32, or bf16 like
// the other frozen weights under mixed precision; compute is f32 either way, autograd/tensor.h).
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "autograd/params.h"

#define LPIPS_N_CONV 13
#define LPIPS_N_LAYERS 5

typedef struct Lpips {
    ParamStore *ps;                    // every weight, under the files' names
    Tensor *w[LPIPS_N_CONV], *b[LPIPS_N_CONV];
    Tensor *lin[LPIPS_N_LAYERS];       // [1, C, 1, 1]
} Lpips;

// Loads VGG16 features from vgg_path and the heads from lin_path as dtype. NULL with err naming the
// file and the missing or misshapen tensor (with both shapes).
Lpips *lpips_load(const char *vgg_path, const char *lin_path, DType dtype, char *err, size_t errlen);
// The same with the VGG16 tensors taken from vgg (moved into the model; vgg is freed), e.g. from
// lpips_random_vgg.
Lpips *lpips_from_vgg(ParamStore *vgg, const char *lin_path, DType dtype, char *err, size_t errlen);
void lpips_free(Lpips *m);
// Every weight moved to `device` (after loading on the CPU).
void lpips_to_device(Lpips *m, Device device);

// d(x, y) per image, [N, 1] f32, on the tape (gradients reach x and y where they require grad).
// x and y [N, 3, H, W] on the weights' device, H and W >= 16 (four 2x2 pools).
Tensor *lpips_distance(Lpips *m, Tensor *x, Tensor *y);

// VGG16's 26 feature tensors (torchvision names and shapes, f32) filled with tensor_rand_uniform, for
// tests and benchmarks without the real file: conv k's weight from seed + 2k in +-sqrt(6 / fan_in)
// (Kaiming-uniform for ReLU), its bias from seed + 2k + 1 in +-1 / sqrt(fan_in), bounds rounded to f32
// from double. scripts/make_lpips_fixture.py reproduces the values bit for bit.
ParamStore *lpips_random_vgg(uint64_t seed);
