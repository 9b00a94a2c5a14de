// The adapter file: a trained DOD model without its base, for inference (`dod-export` writes it,
// `dod-restore` and `dod-eval run --adapter` read it; docs/restore.md lists every tensor and key).
//
// One safetensors file holding what training changed and the fixed inputs, under the names the DOD
// model registers (layers/dod_model.h), which for the LoRA are diffusers' PEFT-backend names:
//   unet.<layer>.lora_A.weight / .lora_B.weight        conditional LoRA of the UNet (conv: A is a conv
//   vae.encoder.<layer>.lora_A.weight / .lora_B.weight   with the base kernel, B a 1x1 conv)
//   unet.conv_in.weight / .bias                          the UNet's conv_in (trained in full)
//   mod.*                                                the modulation (extractor, MLPs, block embeddings)
//   detail.*                                             the detail module (stage 2 only)
//   prompt_embeds [L, D]                                 the fixed prompt embedding
// and string metadata: format "dod-adapter", format_version, the model's hyper-parameters (stage, LoRA
// rank / alpha / targets / block rule, timestep, prediction type, extractor, modulation sizes), where it
// came from (checkpoint, step), the identity of the base it was trained on (content hash of its config
// files, hash of its weights) and a hash of the file's own tensors (so a corrupted file is refused).
// An adapter of a model with the adm extractor holds no guided-diffusion weights: it records the
// encoder's flags and the identity of its weights file (AdmIdentity), and loading it needs that file.
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "layers/dod_model.h"
#include "layers/model.h"

#define ADAPTER_FORMAT "dod-adapter"
#define ADAPTER_FORMAT_VERSION 1
#define ADAPTER_ERR_LEN 4096
#define ADAPTER_PROMPT_TENSOR "prompt_embeds"

// Which base model an adapter belongs to.
//   config_hash:  the bytes of unet/config.json, vae/config.json, scheduler/scheduler_config.json
//   weights_hash: every UNet and VAE tensor, by name in sorted order: its name, shape and values
//                 rounded to bf16 (so the same weights stored in f32 or bf16 hash alike; an f16 copy
//                 has other values and hashes differently)
// Both are 64-bit hashes printed as 16 hex digits (fast and stable, not cryptographic).
typedef struct {
    char config_hash[17];
    char weights_hash[17];
} BaseIdentity;

// Which guided-diffusion weights an adm extractor was trained with.
//   hash: every tensor the encoder reads (time_embed.*, input_blocks.*, middle_block.*), after loading:
//         by name in sorted order, its name, shape and values rounded to bf16 (as BaseIdentity's
//         weights_hash), so the same weights in another file format or dtype hash alike; the identity
//   file, bytes: the file's name (no folder) and size, for messages only (a re-saved copy may differ)
typedef struct {
    char hash[17];
    char file[256];
    long long bytes;
} AdmIdentity;

typedef struct {
    int stage;                       // 1 or 2
    int rank;
    float alpha;
    DodExtractorKind extractor;      // DOD_EXTRACTOR_CNN, DOD_EXTRACTOR_VAE or DOD_EXTRACTOR_ADM
    DodModulationConfig modulation;  // the recorded sizes: rank, feature_dim, de_dim, block_dim, cnn_channels
                                     // (cnn only; else the defaults), the rest dod_modulation_default_config's
    int detail_growth;               // the detail module's RRDB growth (stage 2; 0 in stage 1)
    AdmEncoderConfig adm;            // extractor adm: head_channels, groups, num_res_blocks, timestep
    AdmIdentity adm_weights;         // extractor adm: the weights it was trained with
    int n_unet_lora, n_vae_lora;     // adapters listed in the metadata
    char prediction_type[32];        // the base scheduler's, at export
    BaseIdentity base;
    char base_dir[1024];             // the base directory given at export (for messages)
    char source[1024];               // the checkpoint it was exported from
    long long step;                  // that checkpoint's step
    char dtype[8];                   // F32, BF16 or F16 (safetensors' names): the tensors' storage
} AdapterInfo;

// The identity of the base model in base_dir whose weights m holds (=): config files read from base_dir,
// weights hashed from m's frozen UNet and VAE (host tensors: call before moving m to a device). 0, or
// -1 naming the config file that cannot be read.
int adapter_base_identity(const DodModel *m, const char *base_dir, BaseIdentity *id, char *err, size_t errlen);

typedef struct {
    const char *base_dir;     // the base m was built on (its config files are hashed)
    const char *checkpoint;   // recorded as the source
    long long step;
    const char *prompt;       // the prompt text the embedding was made from, or NULL (no `prompt` key)
    DType dtype;              // DT_F32, DT_BF16 or DT_F16: storage of every tensor
} AdapterExportOptions;

// Writes the adapter of m (every tensor of dod_model_params(m), host, and its prompt embedding) to path,
// atomically. 0, or -1 with a message naming the file or tensor.
int adapter_export(const DodModel *m, const char *path, const AdapterExportOptions *o, char *err, size_t errlen);

// Opens path and checks it is an adapter: a valid safetensors file (truncation, a bad header), the
// format and version, every metadata key, the tensors' hash (so a flipped byte is caught), the prompt
// embedding. Fills *info (=). 0, or -1 naming the file and what is wrong.
int adapter_read_info(const char *path, AdapterInfo *info, char *err, size_t errlen);

// "cnn", "vae" or "adm": the metadata's name of an extractor kind.
const char *adapter_extractor_name(DodExtractorKind k);

// The identity of the adm encoder e (=; host tensors) loaded from the file at path (its name and size).
// 0, or -1 naming the file when it cannot be stat'ed.
int adapter_adm_identity(const AdmEncoder *e, const char *path, AdmIdentity *id, char *err, size_t errlen);

// The DOD model of the adapter at path on the base in base_dir, its trained tensors loaded, on the CPU
// (=; dod_model_to_device to move it). frozen_dtype: storage of the base weights (DT_F32, DT_BF16).
// The model is built with the recorded modulation sizes and detail growth. adm_weights: the
// guided-diffusion weights file of an adapter whose extractor is adm (required for those, a message
// naming the adapter and --adm-weights otherwise; ignored for the others; may be NULL).
// Refuses, naming both, a base whose config files or weights differ from the ones the adapter was made
// for, and adm weights other than those it was trained with. *info (may be NULL) receives the adapter's
// metadata. NULL with a message on any error (a base directory or adm file that cannot be loaded is
// fatal, with its file named, as dod_model_create is).
DodModel *adapter_load(const char *base_dir, const char *path, const char *adm_weights, DType frozen_dtype,
                       AdapterInfo *info, char *err, size_t errlen);
// adapter_load as a Model on `device`: on the CPU f32 weights and activations; on CUDA bf16 frozen
// weights, mixed precision and bf16 activation storage (set process-wide, as model_create does). NULL
// with a message (no CUDA device, or adapter_load's).
Model *adapter_model_load(const char *base_dir, const char *path, const char *adm_weights, Device device,
                          AdapterInfo *info, char *err, size_t errlen);
