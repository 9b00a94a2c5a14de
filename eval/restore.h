// Restoring one full image with a Model in evaluation mode, whole or in overlapping tiles, and
// the conversions between 8-bit images, the model's [-1, 1] planar tensors and the [0, 1] planar
// images the metrics score. Shared by `dod-eval run` and training validation (eval/validate.c).
//
// Tiling (docs/evaluation.md): an image whose height or width exceeds tile is cut, along each such
// axis, into tiles of `tile` pixels starting at 0, tile - overlap, 2 (tile - overlap), ..., the
// last one flush with the far edge. Each tile is restored on its own (the model pads it to a
// multiple of 8 itself) and the outputs are blended with separable weights: along an axis, where a
// tile has a neighbour before it, its first overlap/4 pixels get weight 0 (context only), the next
// overlap/2 rise linearly from 0 to 1 ((i + 0.5 - overlap/4) / (overlap/2)); the same mirrored at
// its far end when a tile follows; 1 elsewhere and at the image borders. Out = sum(w * tile_out) /
// sum(w). So a model whose output depends only on pixels within overlap/4 gives exactly the
// untiled image (tests/test_eval_tiling.c), and the seams of a model with a global receptive field
// (the SD UNet's attention) are cross-faded over overlap/2 pixels.
#pragma once
#include <stdbool.h>
#include <stddef.h>

#include "data/image.h"
#include "layers/model.h"

typedef struct {
    int tile;      // 0: never tile; else tile side in pixels, a multiple of 8
    int overlap;   // pixels shared by neighbouring tiles, 0 <= overlap < tile
} TileOptions;

// Checks tile/overlap. 0, or -1 with a message.
int restore_check_tiles(const TileOptions *t, char *err, size_t errlen);
// Number of tiles along an axis of length len (1 when untiled) and the start of tile k.
int restore_tile_count(int len, const TileOptions *t);
int restore_tile_start(int len, int k, const TileOptions *t);
// Blend weight of pixel i of tile k along an axis of length len (see above).
float restore_tile_weight(int len, int k, int i, const TileOptions *t);

// 8-bit HWC -> [-1, 1] CHW floats: out[c * h * w + p] = pix[p * 3 + c] / 127.5 - 1 (=).
void restore_image_to_chw(const Image *img, float *out);
// 8-bit HWC -> [0, 1] CHW floats, as the metrics score ground truth and inputs:
// out[c * h * w + p] = pix[p * 3 + c] / 255 (=).
void restore_image_to_unit(const Image *img, float *out);
// Restores img with m (no grad, eval mode), whole or tiled: writes (=) out_chw, 3 x h x w floats as
// the model returned them (unclamped, [-1, 1] scale). *n_tiles (may be NULL) receives the tile
// count. Rewinds the activation arena after every tile. 0, or -1 with a message when the model
// returns a wrong shape or non-finite values.
int restore_image(Model *m, const Image *img, const TileOptions *t, float *out_chw, int *n_tiles, char *err,
                  size_t errlen);
// Model output ([-1, 1] CHW) -> the [0, 1] CHW image the metrics score: (x + 1) / 2 clamped (=).
void restore_output_to_unit(const float *out_chw, size_t n, float *unit_chw);
// [0, 1] CHW -> 8-bit HWC image (=, allocated): round(x * 255) half to even in float32, the
// quantisation of BasicSR's tensor2img, so a saved PNG scores exactly like the basicsr profile's
// float path (metrics_pair_f32).
Image restore_unit_to_image(const float *unit_chw, int h, int w);
