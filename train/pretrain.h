// Pretraining a tiny Stable-Diffusion-shaped base model from scratch on the engine: the VAE as an
// autoencoder (reconstruction + small KL), then the UNet on the diffusion (epsilon or v) objective in the
// frozen VAE's latent space. DOD adapts a frozen pretrained SD model; a genuinely pretrained tiny
// base lets the whole DOD pipeline train and restore offline on a CPU (docs/tiny-base.md).
//
// Parameters are built from the tensor tables of layers/sd_weights.h, so the names and shapes are
// exactly what unet_load / vae_load expect, and the outputs are diffusers directories.
#pragma once
#include <stdbool.h>
#include <stdint.h>

#include "autograd/params.h"
#include "data/image.h"
#include "layers/sd_weights.h"
#include "layers/unet.h"
#include "layers/vae.h"

// ---- images and crops --------------------------------------------------------------------------
typedef struct {
    int n, cap;
    Image *img;      // RGB, each at least crop x crop (smaller ones are resized up on load)
    char **path;
} PretrainImages;

// Adds `path` (=): an image file, or every .png/.jpg/.jpeg/.bmp file of a directory in name order.
// Images smaller than min_side on a side are resized up (aspect kept). Fatal naming the file at fault.
void pretrain_images_add(PretrainImages *set, const char *path, int min_side);
void pretrain_images_free(PretrainImages *set);

// out [n, 3, crop, crop] (=, f32, values in [-1, 1]): crop i comes from a random image at a random
// position with random horizontal / vertical flips, all drawn from a stream keyed by (key, i).
void pretrain_random_crops(const PretrainImages *set, int crop, uint64_t key, Tensor *out);
// Deterministic evaluation crops (=): per image, `per_image` crops spaced evenly along its diagonal.
// Returns a persistent tensor [set->n * per_image, 3, crop, crop] (caller tensor_free's it).
Tensor *pretrain_grid_crops(const PretrainImages *set, int crop, int per_image);

// ---- parameters --------------------------------------------------------------------------------
// A new store with every tensor of table (persistent f32, requires_grad), initialised as PyTorch
// initialises a fresh diffusers model: conv / linear weights and biases U(-1/sqrt(fan_in),
// 1/sqrt(fan_in)) (kaiming_uniform with a = sqrt(5)), GroupNorm / LayerNorm weight 1 and bias 0.
// Each tensor's stream is keyed by (seed, its name), so the values do not depend on table order.
ParamStore *pretrain_init_params(const SdTensorTable *table, uint64_t seed);

// Writes every tensor of table from ps to <dir>/diffusion_pytorch_model.safetensors (atomically,
// in table order) and `config_json` (a complete JSON text) to <dir>/config.json (atomically),
// creating dir. Fatal naming the file on failure.
void pretrain_save_part(const char *dir, ParamStore *ps, const SdTensorTable *table, const char *config_json);
// Writes text to <dir>/<file> (=, atomically), creating dir.
void pretrain_save_part_text(const char *dir, const char *file, const char *text);
// Writes text to path via path.tmp.<pid> + rename (=). Fatal naming the file on failure.
void pretrain_write_text(const char *path, const char *text);
// The whole file as a NUL-terminated heap string; fatal naming the file on failure.
char *pretrain_read_text(const char *path);

// ---- the diffusion objective ---------------------------------------------------------------------
// z_t = sqrt(abar_t) z0 + sqrt(1 - abar_t) eps, with sample b of the batch at timestep t[b] (=, new arena
// tensor; abar: the scheduler's alphas_cumprod).
Tensor *pretrain_add_noise(const double *abar, Tensor *z0, Tensor *eps, const float *t);
// What the UNet learns to predict for that z_t (=): eps itself for epsilon prediction (returned as is),
// a new arena tensor v = sqrt(abar_t) eps - sqrt(1 - abar_t) z0 for v_prediction (diffusers'
// get_velocity). DOD reads v back as x0 = sqrt(abar) z_t - sqrt(1 - abar) v (layers/dod_model.h).
Tensor *pretrain_unet_target(SdPrediction pred, const double *abar, Tensor *z0, Tensor *eps, const float *t);

// ---- training ----------------------------------------------------------------------------------
typedef struct {
    const char *config_dir;   // diffusers root with unet/config.json, vae/config.json, scheduler/...
    const char *out_dir;      // diffusers root written: vae/ (vae command) or unet/ + scheduler/ (unet)
    const char *vae_dir;      // unet command: the trained VAE (a root holding vae/ or the part dir)
    int steps, batch, crop;
    uint64_t seed;
    float lr;                 // peak learning rate (linear warm-up, cosine decay to 0)
    int warmup;
    float weight_decay, clip_norm;
    // VAE loss: l1 * |x - x'| + mse * (x - x')^2 + kl * KL + ssim * (1 - SSIM)
    float l1_weight, mse_weight, kl_weight, ssim_weight;
    // UNet: fraction of each batch whose timestep is drawn from [high_t_from, 1000) instead of [0, 1000)
    float high_t_frac;
    int high_t_from;
    int log_every, eval_every;
    int eval_per_image;       // held-out crops per validation image
    const PretrainImages *train, *val;   // val may be empty (then evaluation uses training crops)
    // TensorBoard event files (eval/tfevents.h) in this folder; NULL: none. Tags <part>/loss (mean of
    // the log window), <part>/lr, <part>/grad_norm, <part>/it_per_s every log_every steps; held-out scores
    // vae/heldout_psnr (step 0, each evaluation, the end), unet/heldout_eps_mse (spread t; step 0 and the
    // end) and unet/heldout_eps_mse_t999 (each evaluation and the end).
    const char *tb_dir;
} PretrainOptions;

PretrainOptions pretrain_defaults(void);

typedef struct {
    double first_loss, last_loss;    // mean training loss over the first / last log window
    double val_psnr, val_psnr_init;  // VAE: reconstruction PSNR (dB) of posterior means on held-out crops
    double latent_std;               // VAE: std of posterior means over evaluation crops
    double scaling_factor;           // VAE: 1 / latent_std, written into vae/config.json
    double eps_mse_init, eps_mse;    // UNet: held-out eps-MSE over spread timesteps, before / after
    double obj_mse_init, obj_mse;    // UNet: the same for the training objective (eps, or v)
    double eps_mse_999, eps_mse_zero, eps_mse_linear;  // UNet at t = 999: model, 0, linear-MMSE predictor
    double seconds;
} PretrainReport;

// Trains the VAE from scratch and writes <out>/vae (config with the measured scaling_factor).
// ps_out (may be NULL) receives the trained store (caller params_free's it); otherwise it is freed.
void pretrain_vae(const PretrainOptions *o, PretrainReport *rep, ParamStore **ps_out);
// Trains the UNet from scratch on the frozen VAE's latents and writes <out>/unet and <out>/scheduler.
void pretrain_unet(const PretrainOptions *o, PretrainReport *rep, ParamStore **ps_out);
