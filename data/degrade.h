// Synthetic degradations of clean 8-bit RGB images (pure C, no HDF5): the on-the-fly Gaussian
// noise of the denoising task, and the rain / haze / motion-blur / low-light models of
// `dod-data synth`, so that every task can be trained and evaluated from any clean photos.
// Every function is a pure function of (image, key): same key, same bytes, on any machine.
// The formulas are written out in docs/data-format.md ("Synthesis models").
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "data/image.h"

typedef enum { DEG_NOISE = 0, DEG_RAIN, DEG_HAZE, DEG_BLUR, DEG_LOWLIGHT, DEG_COUNT } DegradeKind;

// "noise", "rain", "haze", "blur", "lowlight" (the names `dod-data synth --tasks` takes).
const char *degrade_kind_name(DegradeKind kind);
// The task each degradation trains: "denoise", "derain", "dehaze", "deblur", "lowlight".
const char *degrade_task_name(DegradeKind kind);
// Kind from either of the names above; -1 when unknown.
int degrade_kind_from_name(const char *name);

// AirNet / PromptIR / AdaIR Gaussian noise: for each of the n_values bytes (independently per
// channel) noisy = (uint8) clip(clean + sigma * N(0, 1), 0, 255), where the cast truncates
// (floor of a non-negative value), exactly as numpy's astype(np.uint8) in their code.
// Writes (=) noisy; noisy may equal clean (in place). The normals come from keyed_rng(key).
void degrade_gaussian_noise(const uint8_t *clean, uint8_t *noisy, size_t n_values, double sigma, uint64_t key);

// The models below return a new image of the same size (image_free releases it) and write a
// one-line description of the parameters they drew into params (for the sample's attributes).
// Rain: additive streak layer, out = round(clip(x + 255 * alpha * R, 0, 255)).
Image degrade_rain(const Image *clean, uint64_t key, char *params, size_t params_len);
// Haze: atmospheric scattering I = J t + 255 A (1 - t), t = exp(-beta d), d a depth proxy.
Image degrade_haze(const Image *clean, uint64_t key, char *params, size_t params_len);
// Motion blur: convolution with a random camera-shake trajectory kernel (reflected borders).
Image degrade_motion_blur(const Image *clean, uint64_t key, char *params, size_t params_len);
// Low light: y = k (x / 255)^gamma plus heteroscedastic sensor noise N(0, s_read^2 + s_shot y).
Image degrade_lowlight(const Image *clean, uint64_t key, char *params, size_t params_len);

// Dispatch on kind for rain/haze/blur/lowlight (DEG_NOISE has its own function above).
Image degrade_apply(DegradeKind kind, const Image *clean, uint64_t key, char *params, size_t params_len);
