// Stable Diffusion model configs as diffusers writes them: unet/config.json (UNet2DConditionModel),
// vae/config.json (AutoencoderKL) and scheduler/scheduler_config.json, with diffusers 0.21 defaults
// for absent keys.
//
// Only what this toolkit implements is accepted: a value that would change the architecture in a way
// the forward pass does not support (class embeddings, dual cross attention, fourier time
// embedding, ...) is an error naming the file and the key. Keys starting with '_' are ignored;
// unknown keys are warned about on stderr (newer diffusers versions add keys with neutral defaults).
#pragma once
#include <stdbool.h>

#define SD_MAX_LEVELS 8
#define SD_CONFIG_ERR_LEN 512

typedef struct {
    char path[512];                          // the file it was read from (for messages)
    int sample_size;                         // latent resolution it was trained at; 0 when null
    int in_channels, out_channels;
    int n_levels;                            // len(block_out_channels)
    int block_out_channels[SD_MAX_LEVELS];
    // Per-level lists are indexed by DOWN level; up block i mirrors down level n_levels - 1 - i
    // (diffusers reverses every list for the up path).
    bool down_attn[SD_MAX_LEVELS];           // down_block_types[i] == "CrossAttnDownBlock2D" (else "DownBlock2D")
    bool up_attn[SD_MAX_LEVELS];             // up_block_types[i] == "CrossAttnUpBlock2D" (else "UpBlock2D"), by UP index
    int layers_per_block[SD_MAX_LEVELS];     // resnets per down block; up blocks have one more
    int transformer_layers[SD_MAX_LEVELS];   // transformer_layers_per_block
    // Attention heads per level. diffusers 0.21 reads the config key `attention_head_dim` as the
    // number of heads (a historical misnaming it keeps for compatibility: SD 2.1's [5, 10, 20, 20]
    // means 5..20 heads of 64 channels; SD 1.5's 8 means 8 heads of 40..160 channels). An explicit
    // `num_attention_heads` takes precedence. Head width = block_out_channels[i] / num_heads[i].
    int num_heads[SD_MAX_LEVELS];
    int cross_attention_dim[SD_MAX_LEVELS];  // width of encoder_hidden_states per level
    bool mid_attn;                           // mid_block_type "UNetMidBlock2DCrossAttn" (the only one supported)
    int norm_num_groups;
    float norm_eps;
    bool flip_sin_to_cos;
    int freq_shift;
    bool use_linear_projection;              // proj_in/proj_out are Linear (SD 2.x) rather than 1x1 conv (SD 1.x)
    bool upcast_attention;
    int time_embed_dim;                      // time_embedding_dim or 4 * block_out_channels[0]
    int conv_in_kernel, conv_out_kernel;
    int downsample_padding;
    float mid_block_scale_factor;
} SdUNetConfig;

typedef struct {
    char path[512];
    int in_channels, out_channels, latent_channels;
    int n_levels;
    int block_out_channels[SD_MAX_LEVELS];
    int layers_per_block;                    // resnets per encoder block; decoder blocks have one more
    int norm_num_groups;                     // GroupNorm eps is 1e-6 throughout the VAE (fixed in diffusers)
    int sample_size;
    float scaling_factor;
    bool mid_block_add_attention;            // absent in 0.21 configs: true
    bool use_quant_conv, use_post_quant_conv;// absent in 0.21 configs: true
} SdVaeConfig;

typedef enum { SD_BETA_LINEAR, SD_BETA_SCALED_LINEAR, SD_BETA_SQUAREDCOS_CAP_V2 } SdBetaSchedule;
typedef enum { SD_PRED_EPSILON, SD_PRED_V, SD_PRED_SAMPLE } SdPrediction;

typedef struct {
    char path[512];
    int num_train_timesteps;                 // default 1000
    double beta_start, beta_end;             // defaults 0.0001, 0.02
    SdBetaSchedule beta_schedule;            // default linear
    SdPrediction prediction_type;            // default epsilon
} SdSchedulerConfig;

// Each returns 0, or -1 with err = "<file>: <key>: <what is wrong>".
int sd_unet_config_load(const char *path, SdUNetConfig *cfg, char err[SD_CONFIG_ERR_LEN]);
int sd_vae_config_load(const char *path, SdVaeConfig *cfg, char err[SD_CONFIG_ERR_LEN]);
int sd_scheduler_config_load(const char *path, SdSchedulerConfig *cfg, char err[SD_CONFIG_ERR_LEN]);

// The cumulative product of (1 - beta_t) for t = 0..num_train_timesteps-1 into out (=), as diffusers'
// DDPM/DDIM/PNDM schedulers compute alphas_cumprod (in double here).
void sd_scheduler_alphas_cumprod(const SdSchedulerConfig *cfg, double *out);

const char *sd_prediction_name(SdPrediction p);

// ---- the text encoder: text_encoder/config.json (transformers CLIPTextConfig, 4.33 defaults) ----------
typedef enum { SD_TEXT_ACT_QUICK_GELU, SD_TEXT_ACT_GELU, SD_TEXT_ACT_GELU_TANH } SdTextAct;

typedef struct {
    char path[512];
    int vocab_size;                 // token embedding rows (49408)
    int hidden_size;                // width: 768 (SD 1.x, CLIP ViT-L/14), 1024 (SD 2.x, OpenCLIP ViT-H/14)
    int intermediate_size;          // MLP width
    int num_layers;                 // num_hidden_layers: 12 (SD 1.x); 23 in SD 2.x's diffusers files (the
                                    // penultimate layer of OpenCLIP's 24, which SD 2.x conditions on)
    int num_heads;                  // num_attention_heads (divides hidden_size)
    int max_positions;              // max_position_embeddings (77)
    SdTextAct act;                  // hidden_act: quick_gelu (SD 1.x), gelu (erf; SD 2.x), gelu_new /
                                    // gelu_pytorch_tanh (tanh form)
    float layer_norm_eps;           // 1e-5
} SdTextEncoderConfig;

// Unknown keys are not warned about (transformers writes many generic PretrainedConfig keys); the
// one that would change the output, use_attention_mask = true (diffusers' pipeline would then mask the
// pad tokens), is an error naming the file and the key.
int sd_text_encoder_config_load(const char *path, SdTextEncoderConfig *cfg, char err[SD_CONFIG_ERR_LEN]);
