// Stable Diffusion weights: the table of tensors a config implies, and loading them from the layouts
// users have into a ParamStore under diffusers names.
//
// Layouts:
//  - a diffusers directory: unet/ and vae/ each with config.json and diffusion_pytorch_model.safetensors
//    (or the .fp16.safetensors variant), scheduler/scheduler_config.json;
//  - an original single-file checkpoint (.safetensors, CompVis/LDM names: model.diffusion_model.*,
//    first_stage_model.*) plus a diffusers directory holding just the three config files.
//
// Memory: a tensor whose stored dtype equals the requested one is a zero-copy view into the
// read-only file mapping (no heap memory; pages come from the page cache as they are touched). Any
// other tensor is converted once into a heap copy and its source pages are dropped from the mapping
// right after, so loading costs the size of the weights in the requested dtype plus one tensor.
// Views are read-only: writing to a frozen weight faults; call sd_tensor_make_owned() on a tensor
// before training it in full (e.g. the UNet's conv_in).
#pragma once
#include <stdbool.h>
#include <stdint.h>

#include "autograd/params.h"
#include "layers/safetensors.h"
#include "layers/sd_config.h"

#define SD_NAME_LEN 128

// Shape rules for weights that are either a Linear [O, I] or a 1x1 conv [O, I, 1, 1] (same bytes).
enum {
    SD_SHAPE_EXACT = 0,
    SD_SHAPE_1X1_KEEP = 1,     // accept both; keep the file's form. UNet proj_in / proj_out: the forward
                               // pass must check ndim (2: Linear over tokens, 4: 1x1 conv), not the config.
    SD_SHAPE_1X1_LINEAR = 2,   // accept both; always stored as [O, I]. VAE mid-block attention q/k/v/out
                               // (1x1 convs in LDM checkpoints, Linear in diffusers).
};

typedef struct {
    char name[SD_NAME_LEN];      // diffusers name, e.g. "down_blocks.0.resnets.0.conv1.weight"
    char ldm_name[SD_NAME_LEN];  // original checkpoint name, e.g. "model.diffusion_model.input_blocks.1.0.in_layers.2.weight"
    int ndim;
    int64_t shape[4];            // the config's form (proj_in/proj_out: [C, C] if use_linear_projection else [C, C, 1, 1])
    int rule;                    // SD_SHAPE_*
} SdTensorSpec;

typedef struct {
    SdTensorSpec *items;
    int n, cap;
} SdTensorTable;

// Every parameter of the model the config describes, in forward order, with diffusers and LDM names
// and shapes (=, table is reset first). This is the contract between the loader and the forward pass.
void sd_unet_tensor_table(const SdUNetConfig *cfg, SdTensorTable *table);
void sd_vae_tensor_table(const SdVaeConfig *cfg, SdTensorTable *table);
// transformers' CLIPTextModel (text_encoder/): text_model.embeddings.{token,position}_embedding.weight,
// text_model.encoder.layers.<i>.{layer_norm1,self_attn.{q,k,v,out}_proj,layer_norm2,mlp.fc1,mlp.fc2}.*,
// text_model.final_layer_norm.*. No LDM names (single-file text encoders are not read).
void sd_text_encoder_tensor_table(const SdTextEncoderConfig *cfg, SdTensorTable *table);
const SdTensorSpec *sd_table_find(const SdTensorTable *table, const char *name);
void sd_table_free(SdTensorTable *table);

// What a load found. Lists hold every offending name (not just the first).
typedef struct {
    int n_missing;      char **missing;      // diffusers names absent from the file
    int n_mismatch;     char **mismatch;     // "NAME: file has [..], config expects [..]"
    int n_unexpected;   char **unexpected;   // file names in the part's namespace that nothing expects
    int n_zero_copy, n_converted;
    int64_t bytes_zero_copy, bytes_converted;
} SdLoadReport;

typedef enum { SD_NAMES_DIFFUSERS, SD_NAMES_LDM } SdNaming;

// Loads every tensor of table from st (names per naming; a diffusers VAE file may use the deprecated
// attention names query/key/value/proj_attn) as dtype into ps (+=: ps may already hold the other
// part), adding counts and lists to rep. Returns 0, or -1 when something is missing or mismatched
// (then nothing is added to ps and *err is a malloc'd message, caller frees, naming the file, every
// missing tensor and every mismatch with both shapes), or when a tensor holds NaN or an infinity
// (then *err names it; the tensors read before it are in ps). unexpected_prefix (single-file loads: the
// part's LDM prefix) limits "unexpected" to names starting with it; NULL: every unused name.
int sd_load_tensors(const SafeTensors *st, const SdTensorTable *table, SdNaming naming, const char *unexpected_prefix,
                    DType dtype, ParamStore *ps, SdLoadReport *rep, char **err);

typedef struct {
    SdUNetConfig unet_cfg;
    SdVaeConfig vae_cfg;
    SdSchedulerConfig sched_cfg;
    ParamStore *unet, *vae;     // diffusers names, without "unet."/"vae." prefixes
    SafeTensors *files[2];      // mappings backing zero-copy views (NULL when nothing is a view)
    SdLoadReport unet_report, vae_report;
    int n_other_tensors;        // single file: tensors of other components (text encoder, EMA, buffers)
} SdModel;

// Loads a diffusers directory. dtype: what every tensor is stored as after loading. Returns 0, or -1
// with *err malloc'd (caller frees); m is left empty on failure.
int sd_model_load_diffusers(const char *dir, DType dtype, SdModel *m, char **err);
// Loads an original single-file checkpoint; configs come from config_dir (a diffusers layout with
// unet/config.json, vae/config.json, scheduler/scheduler_config.json; weights there are not read).
int sd_model_load_single_file(const char *ckpt, const char *config_dir, DType dtype, SdModel *m, char **err);
// Frees the parameter stores, then unmaps the files.
void sd_model_free(SdModel *m);
// Prints one line per part: tensors, zero-copy / converted bytes, unexpected names (to stderr).
void sd_model_print_summary(const SdModel *m);

// Gives t its own heap copy of its data if it is a view into a file mapping (=); a no-op otherwise.
void sd_tensor_make_owned(Tensor *t);

void sd_report_free(SdLoadReport *rep);
