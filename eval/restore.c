// Whole-image and tiled restoration (see eval/restore.h).
#include "eval/restore.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/ops.h"

int restore_check_tiles(const TileOptions *t, char *err, size_t errlen) {
    if (t->tile == 0) return 0;
    if (t->tile < 8 || t->tile % 8) {
        snprintf(err, errlen, "tile size %d: must be 0 (off) or a positive multiple of 8", t->tile);
        return -1;
    }
    if (t->overlap < 0 || t->overlap >= t->tile) {
        snprintf(err, errlen, "tile overlap %d: must be in [0, tile size %d)", t->overlap, t->tile);
        return -1;
    }
    return 0;
}

int restore_tile_count(int len, const TileOptions *t) {
    if (t->tile == 0 || len <= t->tile) return 1;
    int stride = t->tile - t->overlap;
    return 1 + (len - t->tile + stride - 1) / stride;   // the last start is clamped to len - tile
}

int restore_tile_start(int len, int k, const TileOptions *t) {
    if (t->tile == 0 || len <= t->tile) return 0;
    int s = k * (t->tile - t->overlap);
    return s + t->tile > len ? len - t->tile : s;
}

float restore_tile_weight(int len, int k, int i, const TileOptions *t) {
    int n = restore_tile_count(len, t);
    if (n == 1 || t->overlap == 0) return 1.0f;
    // outer quarter of the overlap: context only (0); middle half: linear cross-fade; then 1
    const float q = 0.25f * (float)t->overlap, ramp = 0.5f * (float)t->overlap;
    float w = 1.0f;
    if (k > 0) w = fminf(w, ((float)i + 0.5f - q) / ramp);
    if (k < n - 1) w = fminf(w, ((float)(t->tile - i) - 0.5f - q) / ramp);
    return w < 0.0f ? 0.0f : w;
}

void restore_image_to_chw(const Image *img, float *out) {
    size_t plane = (size_t)img->w * img->h;
    for (size_t p = 0; p < plane; p++)
        for (int c = 0; c < 3; c++) out[c * plane + p] = img->pix[p * 3 + c] / 127.5f - 1.0f;
}

void restore_image_to_unit(const Image *img, float *out) {
    size_t plane = (size_t)img->w * img->h;
    for (size_t p = 0; p < plane; p++)
        for (int c = 0; c < 3; c++) out[c * plane + p] = img->pix[p * 3 + c] / 255.0f;
}

// Runs m on the th x tw crop at (y0, x0) of the CHW input (H x W); writes (=) the output crop.
static int restore_crop(Model *m, const float *in, int H, int W, int y0, int x0, int th, int tw, float *out,
                        char *err, size_t errlen) {
    Tensor *x = tensor_new4(1, 3, th, tw);
    float *xd = tensor_data_f32(x);
    for (int c = 0; c < 3; c++)
        for (int y = 0; y < th; y++)
            memcpy(xd + ((size_t)c * th + y) * tw, in + ((size_t)c * H + y0 + y) * W + x0, sizeof(float) * (size_t)tw);
    bool prev = ag_set_grad_enabled(false);
    Tensor *yt = m->forward(m->self, x, 0, false);
    ag_set_grad_enabled(prev);
    if (yt->ndim != 4 || yt->shape[0] != 1 || yt->shape[1] != 3 || yt->shape[2] != th || yt->shape[3] != tw) {
        snprintf(err, errlen, "the %s model returned %s for a [1, 3, %d, %d] input", m->kind, shape_str(yt), th, tw);
        ag_step_reset();
        return -1;
    }
    const float *yd = tensor_f32(yt);
    size_t n = (size_t)3 * th * tw;
    for (size_t i = 0; i < n; i++)
        if (!isfinite(yd[i])) {
            snprintf(err, errlen, "the %s model returned a non-finite value (%g) at channel %zu, pixel (%zu, %zu) of a "
                     "%dx%d tile at (%d, %d)", m->kind, yd[i], i / ((size_t)th * tw), (i / tw) % th, i % tw, tw, th, x0, y0);
            ag_step_reset();
            return -1;
        }
    memcpy(out, yd, sizeof(float) * n);
    ag_step_reset();
    return 0;
}

int restore_image(Model *m, const Image *img, const TileOptions *t, float *out_chw, int *n_tiles, char *err,
                  size_t errlen) {
    const int H = img->h, W = img->w;
    const size_t plane = (size_t)H * W;
    float *in = dod_malloc(sizeof(float) * plane * 3, "restore input");
    restore_image_to_chw(img, in);
    const int ny = restore_tile_count(H, t), nx = restore_tile_count(W, t);
    if (n_tiles) *n_tiles = ny * nx;
    int rc = 0;
    if (ny * nx == 1) {
        rc = restore_crop(m, in, H, W, 0, 0, H, W, out_chw, err, errlen);
        free(in);
        return rc;
    }
    const int th = ny > 1 ? t->tile : H, tw = nx > 1 ? t->tile : W;
    float *tile_out = dod_malloc(sizeof(float) * 3 * (size_t)th * tw, "restore tile");
    float *wsum = dod_calloc(sizeof(float) * plane, "restore weights");
    float *wy = dod_malloc(sizeof(float) * (size_t)th, "restore weights"), *wx = dod_malloc(sizeof(float) * (size_t)tw, "restore weights");
    memset(out_chw, 0, sizeof(float) * plane * 3);
    for (int ky = 0; ky < ny && !rc; ky++) {
        const int y0 = restore_tile_start(H, ky, t);
        for (int i = 0; i < th; i++) wy[i] = ny > 1 ? restore_tile_weight(H, ky, i, t) : 1.0f;
        for (int kx = 0; kx < nx && !rc; kx++) {
            const int x0 = restore_tile_start(W, kx, t);
            for (int i = 0; i < tw; i++) wx[i] = nx > 1 ? restore_tile_weight(W, kx, i, t) : 1.0f;
            if ((rc = restore_crop(m, in, H, W, y0, x0, th, tw, tile_out, err, errlen))) break;
            // accumulate (+=) the weighted tile and its weights
            for (int y = 0; y < th; y++)
                for (int x = 0; x < tw; x++) {
                    const float w = wy[y] * wx[x];
                    const size_t p = (size_t)(y0 + y) * W + x0 + x;
                    wsum[p] += w;
                    for (int c = 0; c < 3; c++) out_chw[c * plane + p] += w * tile_out[((size_t)c * th + y) * tw + x];
                }
        }
    }
    for (size_t p = 0; p < plane && !rc; p++) {
        if (!(wsum[p] > 0.0f)) {   // cannot happen for tile >= 8, overlap < tile; kept as a guard
            snprintf(err, errlen, "tiling %dx%d with tile %d overlap %d leaves pixel (%zu, %zu) without weight", W, H,
                     t->tile, t->overlap, p % W, p / W);
            rc = -1;
            break;
        }
        for (int c = 0; c < 3; c++) out_chw[c * plane + p] /= wsum[p];
    }
    free(wx);
    free(wy);
    free(wsum);
    free(tile_out);
    free(in);
    return rc;
}

void restore_output_to_unit(const float *out_chw, size_t n, float *unit_chw) {
    for (size_t i = 0; i < n; i++) {
        float v = (out_chw[i] + 1.0f) * 0.5f;
        unit_chw[i] = v < 0.0f ? 0.0f : v > 1.0f ? 1.0f : v;
    }
}

Image restore_unit_to_image(const float *unit_chw, int h, int w) {
    Image img = image_alloc(w, h, 3);
    const size_t plane = (size_t)h * w;
    for (size_t p = 0; p < plane; p++)
        for (int c = 0; c < 3; c++) {
            float v = unit_chw[c * plane + p];
            v = v < 0.0f ? 0.0f : v > 1.0f ? 1.0f : v;
            img.pix[p * 3 + c] = (uint8_t)nearbyintf(v * 255.0f);
        }
    return img;
}
