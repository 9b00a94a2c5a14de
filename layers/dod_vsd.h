// OSEDiff's variational score distillation (VSD) regulariser for stage 1 of the DOD model (the public
// DOD code adds it to every stage-1 step; docs/training.md, "The VSD regulariser").
//
// Three networks share the model's one frozen UNet (dod_model_set_unet_adapters): the generator (the
// DOD model's conditional LoRA and trainable conv_in), the frozen teacher (the base UNet as loaded) and
// the regulariser (the base UNet + a plain LoRA of its own, LORA_TARGETS_UNET_OSEDIFF: the DOD UNet
// targets and conv_in, PEFT's gaussian init). With the generated latent x (the one-step output x0 of
// the generator, scaled latent, before / scaling_factor), a = alphas_cumprod of the model's scheduler:
//
//   generator term (gradient into x only):
//     t ~ U{t_min .. t_max - 1}, n ~ N(0, I);  x_t = sqrt(a_t) sg(x) + sqrt(1 - a_t) n
//     x0_reg = mu(regulariser(x_t, t, prompt))                                   no gradient
//     p_neg, p_pos = frozen([x_t, x_t], [t, t], [negative prompt, prompt])       no gradient, one call, batch 2N
//     x0_fix = mu(p_neg + cfg (p_pos - p_neg))                                   no gradient
//     w_i = mean over sample i of |x - x0_fix|;  g = (x0_reg - x0_fix) / w_i
//     loss = mean((x - sg(x - g))^2)   (value mean(g^2); d loss / d x = 2 g / numel(x))
//   regulariser term (gradient into the regulariser's LoRA only):
//     t ~ U{0 .. T - 1}, n ~ N(0, I);  x_t = sqrt(a_t) sg(x) + sqrt(1 - a_t) n
//     loss = mean((regulariser(x_t, t, prompt) - target)^2),  target = n (epsilon) or
//            sqrt(a_t) n - sqrt(1 - a_t) sg(x) (v_prediction: the velocity, diffusers' get_velocity)
//
// mu turns the UNet's output p into the x0 estimate per the scheduler's prediction type (OSEDiff's
// eps_to_mu is the epsilon case): epsilon: (x_t - sqrt(1 - a) p) / sqrt(a); v_prediction:
// sqrt(a) x_t - sqrt(1 - a) p (from x_t = sqrt(a) x0 + sqrt(1 - a) eps and v = sqrt(a) eps - sqrt(1 - a) x0).
// This is OSEDiff's osediff.py (distribution_matching_loss, diff_loss, eps_to_mu) with its surrogate
// F.mse_loss(latents, (latents - grad).detach()) (no factor 0.5), timesteps and noise drawn from
// counter-based keys instead of torch's generator, and v-prediction bases handled.
//
// The regulariser's tensors are persistent trainable f32 tensors in a ParamStore of its own (not the
// model's), named CKPT_REGULARISER_PREFIX + "<layer>.lora_A.weight" / ".lora_B.weight" (layers/
// model_weights.h): training checkpoints hold them, inference, stage 2 and adapter export skip them.
#pragma once
#include "layers/dod_model.h"
#include "layers/model.h"

typedef struct {
    float cfg;          // classifier-free guidance scale of the teacher ([loss] cfg_vsd; OSEDiff 7.5)
    int t_min, t_max;   // the generator term's timesteps, t_min <= t < t_max (20, 980)
    int lora_rank;      // the regulariser's LoRA rank and alpha (scale alpha / rank)
    float lora_alpha;
    uint64_t seed;      // init of its LoRA A (B = 0, so it starts as the frozen UNet)
} DodVsdConfig;

typedef struct DodVsd DodVsd;

// Creates the regulariser's LoRA for m's UNet (on m's device) and attaches it (m->regulariser_lora).
// NULL with a message naming the problem when m is not a stage-1 model, has no negative prompt
// embedding, already has a regulariser, or the timesteps / rank / alpha / cfg are out of range.
DodVsd *dod_vsd_create(DodModel *m, const DodVsdConfig *c, char *err, size_t errlen);
// Detaches and frees v (NULL is fine); its tensors go with it.
void dod_vsd_free(DodVsd *v);
// The regulariser's trainable tensors (owned by v).
ParamStore *dod_vsd_params(DodVsd *v);

// The generator term on latent x ([N, C, h, w], taped: the gradient reaches whatever x depends on) with
// noise n (same shape, host or x's device) and timesteps t[N] given (= new scalar; the generator's loss
// adds it through dod_loss_terms). Runs the two no-gradient UNet calls keeping only their outputs
// (ag_run_keeping_output) and leaves the UNet on DOD_UNET_GENERATOR, as the generator's backward needs.
// Nothing is read back to the host (the per-sample weighting stays on the device).
Tensor *dod_vsd_loss(DodVsd *v, Tensor *x, Tensor *noise, const int *t);
// The regulariser term on sg(x) with noise and t[N] given (= new scalar; taped into the regulariser's
// LoRA when grad mode is on). Leaves the UNet on DOD_UNET_REGULARISER for its backward.
Tensor *dod_vsd_diffusion_loss(DodVsd *v, Tensor *x, Tensor *noise, const int *t);

// The two terms' inputs drawn from `key` by the engine's counter-based generators (tensor_randn,
// tensor_rand_uniform; seeds key ^ 1, key ^ 2 for the generator term, key ^ 3, key ^ 4 for the
// regulariser's; noise on the host, t in the arena): a pure function of the key (train/loop.c keys it by
// the global micro-batch, as the posterior noise), so a training step stays a pure function of (seed, step).
// The generator term's sample is the model's last train-mode latent (m->train_latent; fatal when there is
// none) with t in [t_min, t_max): dod_loss_terms (layers/dod_loss.h) adds its term to the generator's loss.
// The regulariser term's is the latent the last generator term saw, of which v keeps a copy, with t in
// [0, T) (OSEDiff's diff_loss): the caller may ag_step_reset between the two, so that the generator's
// activations are given back before the regulariser's forward (train/loop.c does).
DodVsdSample dod_vsd_generator_sample(DodVsd *v, uint64_t key);
DodVsdSample dod_vsd_regulariser_sample(DodVsd *v, uint64_t key);

// The regulariser of a Model (layers/model.h; what train/loop.c attaches for [loss] vsd > 0): NULL with a
// message when m is not a DOD model, else dod_vsd_create's result (layers/model_dod.c).
DodVsd *dod_vsd_for_model(Model *m, const DodVsdConfig *c, char *err, size_t errlen);
