// The interface between the training loop (train/loop.c) and a trainable restoration model, so the
// loop, checkpoints and `dod-train` work the same for the DOD model and for the toy model the tests use.
//
// A model owns a ParamStore of every tensor it needs (frozen and trainable, dotted names); the
// trainable ones are those with requires_grad (params_trainable). Checkpoints hold exactly those, by
// name, so their names must be stable across runs. forward() maps a degraded batch in [-1, 1] to a
// restored batch of the same shape (no clamp; the loop clamps for metrics and images).
//
// Devices: a model is created (and initialised) on the CPU, then moved whole to o->device. Its
// forward takes lq on m->device and returns the output there (the loop moves batches;
// train_model_host_io gives a view that takes and returns host tensors, for code that reads
// outputs on the host such as validation).
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "autograd/params.h"
#include "autograd/tensor.h"

typedef struct TrainModel {
    void *self;
    const char *kind;   // "toy", "dod"
    Device device;      // where every tensor of params() lives, and forward's input and output
    // Every tensor of the model (frozen + trainable). Stage-2 initialisation loads a stage-1
    // checkpoint into it by name.
    ParamStore *(*params)(void *self);
    // lq [N, 3, H, W] in [-1, 1] -> restored [N, 3, H, W]. training: sample whatever the model samples
    // during training (e.g. the VAE posterior) from noise_seed, so a step is a pure function of its
    // inputs, parameters and seed; !training: deterministic evaluation (seed unused).
    // Records the tape when grad mode is on.
    Tensor *(*forward)(void *self, Tensor *lq, uint64_t noise_seed, bool training);
    void (*destroy)(void *self);
} TrainModel;

// What the factory needs from the configuration (filled from TrainConfig by the loop).
typedef struct {
    const char *kind;              // "toy" | "dod"
    int stage;                     // 1 or 2: which tensors are trainable
    const char *base_path;         // dod: diffusers SD 2.1-base directory
    const char *prompt_embedding;  // dod: prompt embedding safetensors (wins over prompt)
    const char *prompt, *negative_prompt;  // dod: texts encoded with base_path's text encoder
    const char *prompt_cache;      // dod: cache file of the encoded prompts (NULL: none)
    DType frozen_dtype;            // storage of frozen weights (DT_F32 or DT_BF16)
    int lora_rank;
    float lora_alpha;
    const char *extractor;         // "cnn" | "vae"
    int toy_width;                 // toy: hidden channels
    uint64_t seed;                 // parameter initialisation
    bool recompute;                // activation recomputation
    Device device;                 // DEV_CPU (the zero value) or DEV_CUDA: where the model is moved
    bool mixed_precision;          // CUDA: DOD_PREC_MIXED (set process-wide by train_model_create)
    DType activation_dtype;        // DT_F32 (the zero value) or DT_BF16 (ag_set_activation_dtype, process-wide)
} TrainModelOptions;

// Builds the model of kind o->kind (=). NULL with a message naming the kind / file at fault.
TrainModel *train_model_create(const TrainModelOptions *o, char *err, size_t errlen);
// Destroys m (NULL is fine).
void train_model_free(TrainModel *m);
// A view of m (=, by value, borrowing m) whose forward takes a host lq and returns a host output:
// on the CPU it is m itself; on CUDA it copies lq to the device, runs m, copies the output back
// (arena tensors, rewound by ag_step_reset; no gradient flows through the copies). Its device is
// DEV_CPU (its I/O); its params() are still m's, on m's device. Destroying it frees nothing.
TrainModel train_model_host_io(TrainModel *m);
