// Degradation-aware modulation (DOD, after S3Diff): from the degraded image y to the per-block
// LoRA modulation gamma_k, beta_k (layers/lora.h).
//
//   d        = F(y)                                   degradation feature [N, D]
//   e        = ReLU(W_de d + b_de)                    [N, 256]
//   b_k      = ReLU(W_blk E_k + b_blk)                [64] for the 10 block embeddings E [10, 64]
//   [g ; bt] = W_fuse [e ; b_k] + b_fuse              [N, 2r]: gamma_k = first r, beta_k = last r
//
// W_fuse [e ; b_k] is computed as W_fuse[:, :256] e + W_fuse[:, 256:] b_k (the same sum, without
// materialising the concatenation per block).
//
// F, the feature extractor, is pluggable (DodExtractor): the built-in "cnn" is a small trainable conv
// encoder (ours, see dod_modulation_init); other extractors (pooled frozen VAE-encoder features, a
// frozen diffusion encoder as in the paper) plug in through a function pointer.
//
// Parameters are registered in a ParamStore under "<prefix>" + the names below, all trainable f32:
//   cnn.{0..3}.weight/.bias, de_mlp.weight/.bias, block_embeddings.weight, block_mlp.weight/.bias,
//   fuse_mlp.weight/.bias
#pragma once
#include "autograd/ops.h"
#include "autograd/params.h"
#include "layers/lora.h"

#define DOD_CNN_LAYERS 4

typedef enum {
    DOD_EXTRACTOR_CNN = 0,       // built-in trainable conv encoder
    DOD_EXTRACTOR_EXTERNAL = 1,  // a caller-supplied function
    DOD_EXTRACTOR_VAE = 2,       // pooled frozen VAE-encoder features (layers/dod_extract_vae.h; the
                                 // DOD model attaches it as an external function)
    DOD_EXTRACTOR_ADM = 3,       // the paper's: pooled frozen guided-diffusion encoder (layers/adm_encoder.h;
                                 // attached as an external function likewise)
} DodExtractorKind;

// An external extractor: y [N, 3, H, W] in [-1, 1] -> d [N, feature_dim] (= new tensor).
typedef Tensor *(*DodExtractFn)(void *ctx, Tensor *y);

typedef struct {
    int rank;                          // LoRA rank r (8 in DOD): the fuse MLP has 2r outputs
    int feature_dim;                   // D, the width of d (for the cnn: its last channel count)
    int de_dim;                        // 256
    int block_dim;                     // 64 (width of E_k and b_k)
    int in_channels;                   // 3
    int cnn_channels[DOD_CNN_LAYERS];  // cnn widths; the last must equal feature_dim
    float mlp_init_scale;              // 1e-5: MLP weights = their init * this, biases 0
    bool public_init;                  // the MLP weights' init: the public code's Kaiming normal (true, the
                                       // default) or PyTorch's default Linear init (false; see dod_modulation_init)
} DodModulationConfig;

typedef struct {
    DodModulationConfig cfg;
    DodExtractorKind extractor;
    DodExtractFn extract_fn;           // EXTERNAL only
    void *extract_ctx;
    Tensor *cnn_w[DOD_CNN_LAYERS], *cnn_b[DOD_CNN_LAYERS];
    Tensor *de_w, *de_b, *block_emb, *blk_w, *blk_b, *fuse_w, *fuse_b;
} DodModulation;

// DOD defaults: rank 8, cnn 32-64-128-256 (feature_dim 256), de 256, block 64, 3 channels, init
// scale 1e-5, the public code's init. There are always LORA_N_BLOCKS block embeddings.
DodModulationConfig dod_modulation_default_config(int rank);

// Creates the parameters in `store` under `prefix` and initialises them (seeded):
//  - cnn convs (3x3, stride 2, padding 1, SiLU after each): PyTorch's default Conv2d init,
//    weight and bias ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (kaiming_uniform with a = sqrt(5));
//  - de_mlp, block_mlp, fuse_mlp: weights times mlp_init_scale, biases 0 (so gamma, beta start near 0);
//    the weights from public_init ? N(0, 2 / in) (the public code's basicsr default_init_weights:
//    kaiming_normal_ with a = 0, fan_in) : U(-1/sqrt(in), 1/sqrt(in)) (PyTorch's default Linear init);
//  - block_embeddings: N(0, 1) (nn.Embedding's default).
// extractor == DOD_EXTRACTOR_CNN creates the cnn; EXTERNAL needs dod_modulation_set_extractor.
void dod_modulation_init(DodModulation *m, const DodModulationConfig *cfg, DodExtractorKind extractor,
                         ParamStore *store, const char *prefix, uint64_t seed);
// Looks the parameters up in `store` (e.g. loaded from a checkpoint), checking every shape.
void dod_modulation_bind(DodModulation *m, const DodModulationConfig *cfg, DodExtractorKind extractor,
                         ParamStore *store, const char *prefix);
void dod_modulation_set_extractor(DodModulation *m, DodExtractFn fn, void *ctx);

// d = F(y): [N, feature_dim] (= new tensor). y [N, in_channels, H, W].
Tensor *dod_modulation_features(const DodModulation *m, Tensor *y);
// gamma[k], beta[k] [N, r] for k = 0..LORA_N_BLOCKS-1 (= new tensors) from d [N, feature_dim].
void dod_modulation_from_features(const DodModulation *m, Tensor *d, Tensor **gamma, Tensor **beta);
// Both steps: y -> gamma, beta.
void dod_modulation_forward(const DodModulation *m, Tensor *y, Tensor **gamma, Tensor **beta);
