// The assembled DOD model (docs/dod-model.md): one-step restoration with a frozen Stable Diffusion
// UNet + VAE, conditional LoRA in the UNet, plain LoRA in the VAE encoder, the degradation
// modulation, and (stage 2) the detail module in the VAE decoder.
//
//   lq [N, 3, H, W] in [-1, 1]
//   gamma_k, beta_k = modulation(lq)                              (per LoRA block, k = 0..9)
//   mean, logvar    = VAE encoder + LoRA (lq)
//   z   = (train: mean + exp(0.5 logvar) * eps | eval: mean, or a seeded sample) * scaling_factor
//   p   = UNet + conditional LoRA (z, t = 999, prompt embedding)    conv_in trained in full
//   x0  = epsilon:      (z - sqrt(1 - abar) p) / sqrt(abar)
//         v_prediction: sqrt(abar) z - sqrt(1 - abar) p             (from the scheduler config)
//   out = clamp(VAE decoder (x0 / scaling_factor) [+ detail module before each up block], -1, 1)
//
// Every trainable tensor lives in one ParamStore (dod_model_params) under stable names:
//   unet.conv_in.weight, unet.conv_in.bias           the UNet's conv_in (an f32 copy, trained in full)
//   unet.<layer>.lora_A.weight / .lora_B.weight      conditional LoRA (PEFT names)
//   vae.encoder.<layer>.lora_A.weight / .lora_B.weight plain LoRA on the VAE encoder
//   mod.<...>                                         the modulation (layers/dod_modulation.h names)
//   detail.<...>                                      the detail module (stage 2 only; dod_detail.h names)
// Stage 1 trains unet.*, vae.*, mod.*; stage 2 holds them frozen (requires_grad off) and trains detail.*.
#pragma once
#include "autograd/ops.h"
#include "autograd/params.h"
#include "layers/adm_encoder.h"
#include "layers/dod_detail.h"
#include "layers/dod_loss.h"
#include "layers/dod_modulation.h"
#include "layers/lora.h"
#include "layers/unet.h"
#include "layers/vae.h"

#define DOD_TIMESTEP 999

typedef enum { DOD_MODE_TRAIN = 0, DOD_MODE_EVAL = 1 } DodMode;

// Which adapters the UNet's layer hook applies (one frozen UNet serves three networks):
//   GENERATOR    the model: the trainable conv_in copy and the conditional LoRA;
//   FROZEN       the base UNet as loaded (the VSD teacher): no adapter, the frozen conv_in;
//   REGULARISER  the VSD regulariser (layers/dod_vsd.h): the frozen UNet + its plain LoRA (regulariser_lora).
typedef enum { DOD_UNET_GENERATOR = 0, DOD_UNET_FROZEN = 1, DOD_UNET_REGULARISER = 2 } DodUnetAdapters;

typedef struct {
    const char *base_model_dir;      // diffusers layout: unet/, vae/, scheduler/scheduler_config.json
    bool random_base_weights;        // benchmarks: frozen UNet/VAE weights random from the configs alone
                                     // (layers/sd_random.h); base_model_dir needs no weight files then
    DType frozen_dtype;              // DT_F32 or DT_BF16: how the frozen UNet/VAE weights are stored
    // The prompt embedding (layers/sd_prompt.h): prompt_path, a safetensors file holding one [L, D] (or
    // [1, L, D]) tensor, wins; otherwise `prompt` (NULL: "") is encoded with base_model_dir's tokenizer/
    // and text_encoder/, through the cache file prompt_cache_path when given (NULL: none). The negative
    // prompt (NULL: "") is encoded beside it; with a prompt_path only when negative_prompt is non-empty, else
    // the file's "negative_prompt_embeds" is the negative prompt's embedding when it has one (else none).
    const char *prompt_path;
    const char *prompt, *negative_prompt, *prompt_cache_path;
    bool zero_prompt;                // benchmarks only: a zero [77, D] embedding and no text encoder (step
                                     // time does not depend on the prompt); prompt_path still wins
    int stage;                       // 1 or 2
    int lora_rank;                   // 8
    float lora_alpha;                // = rank (s = 1)
    DodExtractorKind extractor;      // DOD_EXTRACTOR_CNN, DOD_EXTRACTOR_VAE or DOD_EXTRACTOR_ADM
    const char *adm_weights;         // ADM: the guided-diffusion checkpoint (256x256_diffusion_uncond.pt)
    AdmEncoderConfig adm;            // ADM: its flags and timestep (adm_encoder_default_config)
    DodModulationConfig modulation;  // its rank is forced to lora_rank, its public_init to public_init;
                                     // defaults: dod_modulation_default_config
    bool public_init;                // the public code's init of the modulation MLPs and the RRDB convs
                                     // (Kaiming normal x 1e-5 / x 0.1); false: PyTorch's defaults (ours)
    int detail_growth;               // RRDB growth of the detail module: 32
    bool recompute;                  // activation recomputation in UNet, VAE and detail module
    bool clamp_train;                // clamp the train-mode output to [-1, 1] too (true, as OSEDiff's training)
    bool eval_sample;                // EVAL: a posterior sample (as the public test script) instead of the mean;
                                     // its noise is tensor_randn keyed by eval_seed over the latent's shape, the
                                     // same for every image of one size
    uint64_t eval_seed;
    uint64_t seed;                   // init of every trainable tensor
    // Loss weights of dod_model_loss (dod_loss). Stage 1: mse_weight * MSE + lpips_weight * LPIPS, the
    // LPIPS network given in `lpips` (borrowed; dod_model_create fails for a weight without one). Stage 2:
    // mse_weight * MSE + ssim_weight * (1 - SSIM), SSIM on [-1, 1] images with data range 2.
    float mse_weight, lpips_weight, ssim_weight;
    Lpips *lpips;
} DodModelConfig;

// The public defaults for `stage` (1 or 2): f32 frozen weights, rank 8, alpha 8, cnn extractor (the
// adm one needs the caller's adm_weights), the public init, growth 32, clamp_train on, eval on the
// posterior mean, seed 123, weights stage 1 {mse 2, lpips 0: the public code's 5 needs an LPIPS
// network, which the caller loads (layers/lpips.h)}, stage 2 {mse 1, ssim 0.1}. base_model_dir and
// prompt_path are left for the caller.
DodModelConfig dod_model_default_config(int stage);

typedef struct DodModel {
    DodModelConfig cfg;
    Unet *unet;
    Vae *vae;
    SdSchedulerConfig sched;
    double alpha_bar;              // alpha-bar at t = 999
    float x0_z, x0_pred;           // x0 = x0_z * z - x0_pred * prediction
    Tensor *prompt;                // [L, D] f32 (persistent, frozen)
    Tensor *negative_prompt;       // [L, D] f32, the negative prompt's embedding (for the regulariser); may be NULL
    ParamStore *params;            // every tensor the model adds (trainable in its stage), owned
    Tensor *conv_in_w, *conv_in_b; // unet.conv_in.*: replace the frozen conv_in's output (see dod_model.c)
    LoraSet *unet_lora, *vae_lora;
    DodModulation mod;
    AdmEncoder *adm;               // extractor ADM: the frozen guided-diffusion encoder (owned), else NULL
    DodDetail detail;              // stage 2 only
    bool has_detail;
    Device device;                 // where every tensor of the model lives (dod_model_to_device)
    // The UNet's adapters (dod_model_set_unet_adapters). Under activation recomputation a backward re-runs
    // the hook, so the setting of a forward must still hold when its backward runs.
    DodUnetAdapters unet_adapters;
    LoraSet *regulariser_lora;     // the VSD regulariser's adapters (not owned; NULL: none attached)
    Tensor *train_latent;          // x0 (scaled latent) of the last TRAIN forward: arena, until ag_step_reset
} DodModel;

// Loads the base model (frozen), creates and initialises every trainable tensor (LoRA per PEFT's
// gaussian init, modulation and detail module per their init rules), sets requires_grad for the stage.
// Fatal with the file / key at fault on any error (bad stage, missing files, prompt width not the UNet's
// cross_attention_dim, lpips_weight without an LPIPS network, unsupported prediction type).
DodModel *dod_model_create(const DodModelConfig *cfg);
void dod_model_free(DodModel *m);

ParamStore *dod_model_params(DodModel *m);
// Moves every tensor of the model (frozen UNet/VAE weights, trainable tensors, the prompt embedding)
// to `device` in place (tensor_move_to: pointers held elsewhere stay valid, gradients move too). On
// CUDA the forward then expects its inputs there too (tensor_to_device), and its outputs and losses
// are CUDA tensors (tensor_item reads a loss back). Models are created on the CPU.
void dod_model_to_device(DodModel *m, Device device);
// The trainable tensors of the model's stage (requires_grad), in registration order, into out (cap
// entries); returns how many there are.
int dod_model_trainable(const DodModel *m, Tensor **out, int cap);

// Copies (=) every tensor of the safetensors file whose name is `prefix` + a model tensor name into
// that tensor (f32/f16/bf16 files; shapes must agree). Names in the file that are not model tensors are
// ignored. require_all: fatal, listing them, when a model tensor is missing from the file. Returns the
// number copied. (Loads a stage-1 checkpoint into a stage-2 model, or a test fixture.)
int dod_model_load_tensors(DodModel *m, const char *path, const char *prefix, bool require_all);

// The restored image (= new arena tensor [N, 3, H, W]).
//  TRAIN: H, W must be multiples of 8 (fatal otherwise); the posterior is sampled with eps from a
//         counter-based RNG keyed by noise_seed; clamped when cfg.clamp_train. Records the tape when
//         grad mode is on.
//  EVAL:  input clamped to [-1, 1], H, W reflect-padded to dod_model_pad_multiple, posterior mean (or with
//         cfg.eval_sample a sample, noise keyed by cfg.eval_seed), output cropped back and clamped; runs
//         with grad mode off. noise_seed unused.
Tensor *dod_model_forward(DodModel *m, Tensor *lq, DodMode mode, uint64_t noise_seed);
// ---- the forward's stages, one by one (the restoration path, eval/restore.h, runs them in tiles) ----
// gamma[k], beta[k] [N, r] for the LoRA blocks from lq (= new tensors): the degradation modulation.
void dod_model_modulation(DodModel *m, Tensor *lq, Tensor **gamma, Tensor **beta);
// The modulation the UNet's conditional adapters use from now on (not copied: must outlive their use;
// lora_set_modulation). NULL clears it.
void dod_model_set_modulation(DodModel *m, Tensor *const *gamma, Tensor *const *beta);
// z = scaling_factor * (VAE encoder + LoRA)(x) (= new tensor): the posterior mean, or with eps the
// sample mean + exp(logvar / 2) eps. *enc receives the encoder's outputs (skips when want_skips).
Tensor *dod_model_encode(DodModel *m, Tensor *x, Tensor *eps, bool want_skips, VaeEncoded *enc);
// The UNet's prediction at t = 999 with the prompt embedding, for z [N, 4, h, w] (= new tensor).
Tensor *dod_model_predict(DodModel *m, Tensor *z);
// The one-step estimate in the VAE's latent space: (x0_z z - x0_pred pred) / scaling_factor (= new).
Tensor *dod_model_x0(const DodModel *m, Tensor *z, Tensor *pred);
// VAE decoder (+ the detail module in stage 2, which reads enc's skip features, so enc must come from
// dod_model_encode(want_skips) on the matching image) of latent (= new tensor, unclamped).
Tensor *dod_model_decode(DodModel *m, Tensor *latent, const VaeEncoded *enc);
// EVAL's posterior noise for the padded image x (= new tensor on x's device): N(0, 1) of the latent's
// shape keyed by cfg.eval_seed with cfg.eval_sample, else NULL (the posterior mean). dod_model_forward
// and the staged restoration path (eval/restore.c) both draw it here.
Tensor *dod_model_eval_noise(const DodModel *m, const Tensor *x);
// The multiple eval mode pads H and W to: 8, or the VAE's downscaling factor when larger.
int dod_model_pad_multiple(const DodModel *m);

// TRAIN mode with an explicit posterior noise eps [N, latent_channels, H/f, W/f] (tests, parity).
Tensor *dod_model_forward_eps(DodModel *m, Tensor *lq, Tensor *eps);
// Every forward sets DOD_UNET_GENERATOR first; TRAIN also records its one-step latent x0 (spec step 6,
// before / scaling_factor) in m->train_latent, the tensor the VSD regulariser pulls on.

// Sets which adapters the UNet applies from now on (see DodUnetAdapters; fatal for REGULARISER without
// an attached regulariser_lora).
void dod_model_set_unet_adapters(DodModel *m, DodUnetAdapters which);
// Validation: dod_model_forward(m, lq, DOD_MODE_EVAL, 0).
Tensor *dod_model_restore(DodModel *m, Tensor *lq);

// The model's loss weights (cfg.mse_weight, ssim_weight, lpips_weight with cfg.lpips; vsd 0): what
// dod_model_loss passes to dod_loss, for callers of dod_loss_terms (layers/dod_loss.h).
DodLossWeights dod_model_loss_weights(const DodModel *m);
// The stage's loss of out against hq ([N, 3, H, W] in [-1, 1]) (= new tensors): dod_loss
// (layers/dod_loss.h) with the model's weights (SSIM only in stage 2, whose ssim_weight is > 0; LPIPS
// when lpips_weight > 0, through cfg.lpips).
DodLoss dod_model_loss(const DodModel *m, Tensor *out, Tensor *hq);
// forward (TRAIN, noise from step_seed) + loss: what one training step back-propagates.
DodLoss dod_model_forward_loss(DodModel *m, Tensor *lq, Tensor *hq, uint64_t step_seed);
