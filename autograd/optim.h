// AdamW (decoupled weight decay, bias correction; torch.optim.AdamW semantics), global-norm gradient
// clipping (torch.nn.utils.clip_grad_norm_ semantics) and learning-rate schedules.
#pragma once
#include "autograd/tensor.h"

typedef struct {
    float lr, beta1, beta2, eps, weight_decay;
} AdamWConfig;

// The public DOD/OSEDiff defaults: lr 5e-5, betas (0.9, 0.999), eps 1e-8, weight decay 1e-2.
AdamWConfig adamw_defaults(void);

typedef struct {
    AdamWConfig cfg;
    int n;
    Tensor **params;   // trainable f32 persistent tensors (not owned), on the CPU or on CUDA
    float **m, **v;    // first and second moments, one buffer per parameter on its device (owned)
    int64_t step;      // number of adamw_step calls so far
} AdamW;

AdamW *adamw_new(Tensor *const *params, int n, AdamWConfig cfg);
void adamw_free(AdamW *opt);
// One update with learning rate lr (from a schedule): for each parameter with a gradient,
//   p = p - lr * wd * p;  m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;
//   p = p - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps).
// Writes the parameters and moments; reads (does not clear) the gradients. CUDA parameters are
// updated on the device with the same f32 formula (bias corrections computed on the host in double).
void adamw_step(AdamW *opt, float lr);

// Global L2 norm of the gradients of params (computed in double). When max_norm > 0 and the norm
// exceeds it (precisely: when max_norm / (norm + 1e-6) < 1), every gradient is scaled (*=) by that
// factor. Returns the norm before clipping. CUDA gradients are reduced on the device (deterministic,
// double accumulation) and scaled there; the norm is read back once.
double clip_grad_norm(Tensor *const *params, int n, double max_norm);
// The same clipping with the norm written (=) into slot `slot` of s instead of returned: on CUDA the sum
// of squares, the norm, the clip factor and the scaling all stay on the device (no host sync; read the
// norm with device_scalars_read). The parameters live on s's device. Same values as clip_grad_norm.
typedef struct DeviceScalars DeviceScalars;
void clip_grad_norm_into(Tensor *const *params, int n, double max_norm, DeviceScalars *s, int slot);

typedef enum { LR_CONSTANT = 0, LR_COSINE = 1 } LrScheduleKind;
typedef struct {
    LrScheduleKind kind;
    float base_lr;
    int64_t warmup_steps;   // linear warm-up from 0 (both kinds)
    int64_t total_steps;    // cosine: decays to 0 at total_steps (half a cosine period)
} LrSchedule;

// Learning rate for 0-based step (diffusers get_constant_schedule_with_warmup /
// get_cosine_schedule_with_warmup with num_cycles 0.5).
float lr_at(const LrSchedule *s, int64_t step);
