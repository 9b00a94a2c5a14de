// Restoring one full image of any size with a Model in evaluation mode: the one restoration path of
// `dod-restore`, `dod-eval run` and training validation (docs/restore.md, "How an image is restored").
//
// DOD models run stage by stage (layers/dod_model.h), each on the whole image or in tiles as memory
// allows (--max-memory):
//   1. clamp to [-1, 1]; reflect-pad H and W to dod_model_pad_multiple (cropped back at the end);
//   2. the degradation modulation on the whole image (downscaled by an integer factor if even that
//      does not fit: its features are global averages);
//   3. the VAE encoder (+ LoRA): whole, or in tiles (below) -> z;
//   4. the UNet in LATENT tiles as the public OSEDiff/DOD code: whole when h * w <= tile^2 (latent
//      pixels), else square tiles of min(tile, h, w) starting at 0, tile - overlap, ..., the last flush
//      with the far edge, each prediction weighted by the public code's Gaussian (var 0.01 of the
//      tile: exp(-(i - c)^2 / (2 var T^2)), c = (T - 1) / 2 across, T / 2 down) and normalised by the
//      summed weights; the blended prediction gives x0 (layers/dod_model.h dod_model_x0);
//   5. the VAE decoder (+ the stage-2 detail module): whole, or in tiles;
//   6. crop, clamp to [-1, 1].
// VAE tiles: square tiles of vae_tile pixels overlapping by vae_overlap, placed as the UNet's,
// blended with the weights of restore_tile_weight (outer quarter of the overlap context only, linear
// cross-fade over its middle half). Every VAE GroupNorm normalises a tile with statistics of the
// whole image, measured beforehand by a pass over the image downscaled to fit (exact when it fits at
// full size); what remains tile-local is the receptive field beyond the overlap and the VAE's
// mid-block attention.
// The VAE (and the extractor) run whole while the estimate (eval/restore_plan.c) fits max_memory and
// the VAE's mid-block attention sees at most RESTORE_VAE_MAX_TOKENS latent pixels (its cost is
// quadratic in them); with no memory limit (max_memory 0) they always run whole. Automatic VAE tiles
// are the largest square that fits, up to RESTORE_VAE_TILE_TOKENS latent pixels.
//
// Per-image LoRA merge (CPU): for an image whose UNet work is large enough, every UNet adapter is merged
// with this image's modulation into its base layer (W0 + s B diag(1 + gamma) A, bias b0 + s B beta;
// layers/lora.h lora_merge_all) and the UNet runs without adapters: measured on SD 2.1-base shapes
// (dod-bench restore --merge-study, docs/benchmarks.md) a merged UNet is 8-17% faster per tile and the
// merge pays from about 3800-7200 latent pixels of UNet work, hence RESTORE_MERGE_MIN_LATENT_PIXELS
// (64 x 64); it needs the merged layers' weights in f32 on top of the base's (budgeted). On CUDA the adapters run (the merge is a host computation; not measured on a GPU).
//
// Other models (the toy model) run whole through model_host_io.
#pragma once
#include <stdbool.h>
#include <stddef.h>

#include <stdio.h>

#include "data/image.h"
#include "layers/model.h"
#include "layers/sd_config.h"

#define RESTORE_VAE_MAX_TOKENS (128 * 128)
// Automatic VAE tiles are at most this many latent pixels (64 x 64: 512-pixel tiles for SD, the size of
// diffusers' tiled VAE), which bounds the attention's quadratic cost per image area.
#define RESTORE_VAE_TILE_TOKENS (64 * 64)
#define RESTORE_MERGE_MIN_LATENT_PIXELS (64 * 64)

typedef enum { RESTORE_MERGE_AUTO = 0, RESTORE_MERGE_ON = 1, RESTORE_MERGE_OFF = 2 } RestoreMerge;

// The placement of tiles along one axis: tiles of `tile` starting at 0, tile - overlap, ..., the last
// one flush with the far edge. tile 0: one tile, the whole axis.
typedef struct {
    int tile, overlap;
} TileGrid;

// Number of tiles along an axis of length len (1 when untiled) and the start of tile k.
int restore_tile_count(int len, const TileGrid *g);
int restore_tile_start(int len, int k, const TileGrid *g);
// Blend weight of pixel i of tile k along an axis of length len: where tile k has a neighbour before
// it, its first overlap/4 pixels get 0 (context only), the next overlap/2 rise linearly from 0 to 1
// ((i + 0.5 - overlap/4) / (overlap/2)); mirrored at its far end when a tile follows; 1 elsewhere.
float restore_tile_weight(int len, int k, int i, const TileGrid *g);
// The public code's Gaussian weight of pixel i of a latent tile of side T, across (down = false) or
// down (true) the tile; see the header.
double restore_gauss_weight(int T, int i, bool down);
// The UNet's tiles for an h x w latent by the public rule (=): g->tile 0 (whole) when tile is 0 or
// h * w <= tile^2, else min(tile, h, w) with the given overlap; an overlap not below that tile becomes
// half of it (ours: the public code's loop never ends there).
void restore_unet_grid(int h, int w, int tile, int overlap, TileGrid *g);

typedef struct {
    int tile, overlap;       // UNet tiles in latent pixels (public code: 96, 32); tile 0: never tile
    double max_memory_gib;   // budget for weights + activations (+ the image buffers on the CPU); <= 0: none
    int vae_tile;            // > 0: VAE tiles of this many pixels whenever the image is larger (forces tiling);
                             // 0: chosen from max_memory when the VAE does not fit whole
    int vae_overlap;         // pixels shared by neighbouring VAE tiles
    RestoreMerge merge;      // per-image LoRA merge of the UNet: auto (the rule above), on (CPU), off
} RestoreOptions;

#define RESTORE_DEFAULT_TILE 96
#define RESTORE_DEFAULT_OVERLAP 32
#define RESTORE_DEFAULT_MAX_MEMORY_GIB 8.0
#define RESTORE_DEFAULT_VAE_OVERLAP 64
// The defaults above.
RestoreOptions restore_options_default(void);
// "auto", "on", "off" -> RestoreMerge; -1 otherwise.
int restore_merge_parse(const char *s);
// Checks the options. 0, or -1 with a message naming the option.
int restore_check_options(const RestoreOptions *o, char *err, size_t errlen);

// What restore_chw decided and measured for one image.
typedef struct {
    int pad_h, pad_w;            // the padded size
    int unet_tiles;              // 1: whole latent
    int vae_tiles;               // 1: whole image
    int vae_tile;                // the VAE tile side in pixels (0: whole)
    int extractor_scale;         // 1: the extractor saw the whole image; k: downscaled k times
    int stats_scale;             // tiled VAE: GroupNorm statistics from the image downscaled this many times
    bool merged;                 // the UNet ran with its adapters merged
    double estimate_gib;         // the plan's estimated peak (weights + largest stage)
} RestoreStats;

// 8-bit HWC -> [-1, 1] CHW floats: out[c * h * w + p] = pix[p * 3 + c] / 127.5 - 1 (=).
void restore_image_to_chw(const Image *img, float *out);
// 8-bit HWC -> [0, 1] CHW floats, as the metrics score ground truth and inputs:
// out[c * h * w + p] = pix[p * 3 + c] / 255 (=).
void restore_image_to_unit(const Image *img, float *out);

// Restores the 3 x h x w image in_chw ([-1, 1]) with m (any device; no grad, eval mode): writes (=)
// out_chw, 3 x h x w floats, clamped to [-1, 1] for DOD models, as returned otherwise. *st (may be
// NULL) receives what was decided. Rewinds the activation arena. 0, or -1 with a message when the
// model returns a wrong shape or non-finite values, or max_memory cannot hold even the smallest tiles.
int restore_chw(Model *m, const float *in_chw, int h, int w, const RestoreOptions *o, float *out_chw, RestoreStats *st,
                char *err, size_t errlen);
// restore_chw of an 8-bit image (restore_image_to_chw).
int restore_image(Model *m, const Image *img, const RestoreOptions *o, float *out_chw, RestoreStats *st, char *err,
                  size_t errlen);
// Model output ([-1, 1] CHW) -> the [0, 1] CHW image the metrics score: (x + 1) / 2 clamped (=).
void restore_output_to_unit(const float *out_chw, size_t n, float *unit_chw);
// [0, 1] CHW -> 8-bit HWC image (=, allocated): round(x * 255) half to even in float32, the
// quantisation of BasicSR's tensor2img, so a saved PNG scores exactly like the basicsr profile's
// float path (metrics_pair_f32).
Image restore_unit_to_image(const float *unit_chw, int h, int w);

// ---- memory estimates and the plan (eval/restore_plan.c) -----------------------------------------
struct DodModel;
// What the estimates need to know of a DOD model: its configs and sizes.
typedef struct {
    const SdUNetConfig *unet;
    const SdVaeConfig *vae;
    int stage;                   // 2: the detail module runs in the decoder
    bool vae_extractor;          // the extractor is the VAE encoder (else the cnn)
    int cnn_channels0;           // the cnn extractor's first width
    double weight_bytes;         // every tensor of the model as stored
    double merged_bytes;         // the UNet's adapted layers' weights and biases in f32 (a merged copy)
    bool cuda;                   // the model runs on CUDA (no merge)
    int act_bytes;               // bytes per activation element: 4 (f32) or 2 (bf16 storage)
    bool count_host_buffers;     // the model runs on the CPU: the image buffers share the budget
} RestoreShapes;

// The shapes of a built DOD model on its device (=).
void restore_shapes_of(const struct DodModel *m, RestoreShapes *s);
// Estimated peak bytes of one stage's activations (weights not included) on an H x W image (pixels)
// or an h x w latent; skips: the encoder keeps its skip features (stage 2 whole: held until decoding).
double restore_estimate_extractor(const RestoreShapes *s, int64_t H, int64_t W);
double restore_estimate_encoder(const RestoreShapes *s, int64_t H, int64_t W, bool skips);
double restore_estimate_unet(const RestoreShapes *s, int64_t h, int64_t w);
double restore_estimate_decoder(const RestoreShapes *s, int64_t H, int64_t W);
// The image buffers restore keeps on the host for an H x W (padded) image.
double restore_estimate_host_buffers(int64_t H, int64_t W);

typedef struct {
    int H, W;                    // padded image
    int extractor_scale;         // >= 1
    bool vae_whole;
    int vae_tile, vae_overlap;   // pixels (tiled)
    int stats_scale;             // >= 1 (tiled)
    TileGrid unet;               // tile 0: whole latent
    bool merge;                  // merge the UNet's adapters for the image
    double weights, buffers;     // bytes
    double extractor, encoder, unet_tile, decoder, stats;   // bytes: each stage's estimate as planned
    double peak;                 // weights + buffers + the largest stage
} RestorePlan;

// How an H x W (padded) image is restored under o (=). 0, or -1 with a message when even the smallest
// tiles exceed o->max_memory_gib.
int restore_plan(const RestoreShapes *s, int H, int W, const RestoreOptions *o, RestorePlan *p, char *err, size_t errlen);
// Prints the plan's stages and estimates (GiB) for an H x W image as a table to f.
void restore_plan_print(FILE *f, const RestorePlan *p, int H, int W);
