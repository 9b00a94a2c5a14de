// Restoring an image of any size; see eval/restore.h and docs/restore.md.
#include "eval/restore.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/cuda/cuda_backend.h"
#include "autograd/ops.h"
#include "layers/dod_model.h"

// ---- tile geometry ---------------------------------------------------------------------------------
int restore_tile_count(int len, const TileGrid *g) {
    if (g->tile <= 0 || len <= g->tile) return 1;
    int stride = g->tile - g->overlap;
    return 1 + (len - g->tile + stride - 1) / stride;   // the last start is clamped to len - tile
}

int restore_tile_start(int len, int k, const TileGrid *g) {
    if (g->tile <= 0 || len <= g->tile) return 0;
    int s = k * (g->tile - g->overlap);
    return s + g->tile > len ? len - g->tile : s;
}

float restore_tile_weight(int len, int k, int i, const TileGrid *g) {
    int n = restore_tile_count(len, g);
    if (n == 1 || g->overlap == 0) return 1.0f;
    // outer quarter of the overlap: context only (0); middle half: linear cross-fade; then 1
    const float q = 0.25f * (float)g->overlap, ramp = 0.5f * (float)g->overlap;
    float w = 1.0f;
    if (k > 0) w = fminf(w, ((float)i + 0.5f - q) / ramp);
    if (k < n - 1) w = fminf(w, ((float)(g->tile - i) - 0.5f - q) / ramp);
    return w < 0.0f ? 0.0f : w;
}

double restore_gauss_weight(int T, int i, bool down) {
    const double var = 0.01, mid = down ? T / 2.0 : (T - 1) / 2.0;   // as the public code (see restore.h)
    const double d = (double)i - mid;
    return exp(-d * d / ((double)T * T) / (2.0 * var)) / sqrt(2.0 * M_PI * var);
}

void restore_unet_grid(int h, int w, int tile, int overlap, TileGrid *g) {
    if (tile <= 0 || (int64_t)h * w <= (int64_t)tile * tile) {
        *g = (TileGrid){0, 0};
        return;
    }
    int t = tile < h ? tile : h;
    t = t < w ? t : w;
    *g = (TileGrid){t, overlap < t ? overlap : t / 2};
}

// ---- options ----------------------------------------------------------------------------------------
RestoreOptions restore_options_default(void) {
    return (RestoreOptions){.tile = RESTORE_DEFAULT_TILE, .overlap = RESTORE_DEFAULT_OVERLAP,
                            .max_memory_gib = RESTORE_DEFAULT_MAX_MEMORY_GIB, .vae_tile = 0,
                            .vae_overlap = RESTORE_DEFAULT_VAE_OVERLAP, .merge = RESTORE_MERGE_AUTO};
}

int restore_merge_parse(const char *s) {
    if (!strcmp(s, "auto")) return RESTORE_MERGE_AUTO;
    if (!strcmp(s, "on")) return RESTORE_MERGE_ON;
    if (!strcmp(s, "off")) return RESTORE_MERGE_OFF;
    return -1;
}

int restore_check_options(const RestoreOptions *o, char *err, size_t errlen) {
    if (o->tile < 0 || (o->tile > 0 && o->tile < 4)) {
        snprintf(err, errlen, "latent tile %d: must be 0 (never tile) or at least 4 latent pixels", o->tile);
        return -1;
    }
    if (o->overlap < 0 || (o->tile > 0 && o->overlap >= o->tile)) {
        snprintf(err, errlen, "latent tile overlap %d: must be in [0, tile %d)", o->overlap, o->tile);
        return -1;
    }
    if (!(o->max_memory_gib >= 0) || o->max_memory_gib > 1e6) {
        snprintf(err, errlen, "max memory %g GiB: must be >= 0 (0: no limit)", o->max_memory_gib);
        return -1;
    }
    if (o->vae_tile < 0 || o->vae_tile % 8 || (o->vae_tile > 0 && o->vae_tile < 64)) {
        snprintf(err, errlen, "VAE tile %d: must be 0 (automatic) or a multiple of 8 of at least 64 pixels", o->vae_tile);
        return -1;
    }
    if (o->vae_overlap < 0 || o->vae_overlap % 8 || (o->vae_tile > 0 && o->vae_overlap >= o->vae_tile)) {
        snprintf(err, errlen, "VAE tile overlap %d: must be a multiple of 8 in [0, VAE tile)", o->vae_overlap);
        return -1;
    }
    return 0;
}

// ---- conversions ---------------------------------------------------------------------------------------
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

// ---- host buffers and the device -------------------------------------------------------------------------
// The activation arenas (host, and the device's on CUDA) as one mark.
typedef struct {
    size_t host, dev;
} Mark;
static Mark mark_now(Device d) { return (Mark){arena_mark(), d == DEV_CUDA ? cuda_arena_mark() : 0}; }
static void mark_release(Mark m, Device d) {
    arena_release(m.host);
    if (d == DEV_CUDA) cuda_arena_release(m.dev);
}

// [1, C, h, w] f32 arena tensor on dev holding src (=).
static Tensor *upload(const float *src, int64_t C, int64_t h, int64_t w, Device dev) {
    int64_t shape[4] = {1, C, h, w};
    Tensor *t = tensor_new_on(dev, 4, shape, DT_F32);
    device_copy(t->data, dev, src, DEV_CPU, sizeof(float) * (size_t)(C * h * w));
    return t;
}

// t's values as floats into dst (=).
static void download(Tensor *t, float *dst) {
    device_copy(dst, DEV_CPU, tensor_f32(t), t->device, sizeof(float) * (size_t)t->numel);
}

// dst (C x h x w) = the window at (y0, x0) of src (C x H x W).
static void crop_chw(const float *src, int C, int H, int W, int y0, int x0, int h, int w, float *dst) {
    for (int c = 0; c < C; c++)
        for (int y = 0; y < h; y++)
            memcpy(dst + ((size_t)c * h + y) * w, src + ((size_t)c * H + y0 + y) * W + x0, sizeof(float) * (size_t)w);
}

// Torch's reflect index for i in [0, n + pad): i < n stays, n + k maps to n - 2 - k; bounced again
// for pads longer than the axis (an image a few pixels wide), and 0 for a 1-pixel axis.
static int reflect_index(int i, int n) {
    if (n == 1) return 0;
    int period = 2 * (n - 1), k = i % period;
    return k < n ? k : period - k;
}

// Separable area-weighted resize of src (C x H x W) to dst (C x h x w) (=): output pixel i covers the
// source interval [i H / h, (i + 1) H / h), each source pixel weighted by its overlap with it.
static void resize_area(const float *src, int C, int H, int W, int h, int w, float *dst) {
    float *tmp = dod_malloc(sizeof(float) * (size_t)C * H * w, "restore resize");
    for (int pass = 0; pass < 2; pass++) {
        const int n_in = pass ? H : W, n_out = pass ? h : w;
        const double r = (double)n_in / n_out;
        for (int o = 0; o < n_out; o++) {
            const double a = o * r, b = (o + 1) * r;
            for (int c = 0; c < C; c++) {
                if (!pass) {   // along x: src -> tmp (C x H x w)
                    for (int y = 0; y < H; y++) {
                        const float *row = src + ((size_t)c * H + y) * W;
                        double acc = 0;
                        for (int i = (int)a; i < n_in && i < b; i++) acc += row[i] * (fmin(b, i + 1.0) - fmax(a, (double)i));
                        tmp[((size_t)c * H + y) * w + o] = (float)(acc / r);
                    }
                } else {       // along y: tmp -> dst (C x h x w)
                    for (int x = 0; x < w; x++) {
                        double acc = 0;
                        for (int i = (int)a; i < n_in && i < b; i++)
                            acc += tmp[((size_t)c * H + i) * w + x] * (fmin(b, i + 1.0) - fmax(a, (double)i));
                        dst[((size_t)c * h + o) * w + x] = (float)(acc / r);
                    }
                }
            }
        }
    }
    free(tmp);
}

static int round_up(int x, int m) { return (x + m - 1) / m * m; }

// ---- GroupNorm statistics of the whole image for VAE tiles ------------------------------------------------
// Per norm layer: the mean and 1/sqrt(var + eps) of each group, measured (record) on the whole image (or
// a downscaled copy) and then applied to every tile as an affine map per channel.
typedef struct {
    char layer[SD_NAME_MAX];
    int channels, groups;
    double *mean, *rstd;
} NormStat;

typedef struct {
    NormStat *items;
    int n, cap;
    bool record;
    char missing[SD_NAME_MAX];   // apply mode: a layer never recorded (a bug), named
} NormStats;

static NormStat *stats_find(NormStats *s, const char *layer) {
    for (int i = 0; i < s->n; i++)
        if (!strcmp(s->items[i].layer, layer)) return &s->items[i];
    return NULL;
}

static void stats_free(NormStats *s) {
    for (int i = 0; i < s->n; i++) {
        free(s->items[i].mean);
        free(s->items[i].rstd);
    }
    free(s->items);
    memset(s, 0, sizeof *s);
}

// SdGroupNormFn: record (the plain GroupNorm, and its statistics) or apply the recorded ones.
static Tensor *stats_group_norm(void *ctx, const char *layer, Tensor *x, int groups, float eps, Tensor *gamma,
                                Tensor *beta) {
    NormStats *s = ctx;
    DOD_CHECK(x->ndim == 4 && x->shape[0] == 1 && x->shape[1] % groups == 0, layer,
              "tiled restoration normalises one image [1, C, H, W], got %s", shape_str(x));
    const int64_t C = x->shape[1], hw = x->shape[2] * x->shape[3], cg = C / groups;
    NormStat *st = stats_find(s, layer);
    if (s->record) {
        if (!st) {
            if (s->n == s->cap) {
                s->cap = s->cap ? 2 * s->cap : 64;
                s->items = realloc(s->items, sizeof(NormStat) * (size_t)s->cap);
                DOD_CHECK(s->items, "restore", "out of memory for %d norm statistics", s->cap);
            }
            st = &s->items[s->n++];
            memset(st, 0, sizeof *st);
            snprintf(st->layer, sizeof st->layer, "%s", layer);
            st->mean = dod_malloc(sizeof(double) * (size_t)groups, "norm statistics");
            st->rstd = dod_malloc(sizeof(double) * (size_t)groups, "norm statistics");
        }
        st->channels = (int)C;
        st->groups = groups;
        float *own = NULL;
        const float *xs = tensor_f32(x);
        if (x->device != DEV_CPU) {
            own = dod_malloc(sizeof(float) * (size_t)x->numel, "norm statistics host copy");
            download(x, own);
            xs = own;
        }
        for (int g = 0; g < groups; g++) {   // two passes in double, as the mean of the squared deviations
            const float *p = xs + (size_t)g * cg * hw;
            const int64_t n = cg * hw;
            double sum = 0, sq = 0;
            for (int64_t i = 0; i < n; i++) sum += p[i];
            const double mean = sum / (double)n;
            for (int64_t i = 0; i < n; i++) sq += (p[i] - mean) * (p[i] - mean);
            st->mean[g] = mean;
            st->rstd[g] = 1.0 / sqrt(sq / (double)n + eps);
        }
        free(own);
        return op_group_norm(x, groups, gamma, beta, eps);
    }
    if (!st || st->channels != C || st->groups != groups) {   // a layer the whole-image pass never ran
        snprintf(s->missing, sizeof s->missing, "%s", layer);
        return op_group_norm(x, groups, gamma, beta, eps);
    }
    // y = x a_c + b_c with a_c = gamma_c rstd_g, b_c = beta_c - mean_g a_c
    float *ab = dod_malloc(sizeof(float) * 2 * (size_t)C, "norm affine");
    float *gh = dod_malloc(sizeof(float) * 2 * (size_t)C, "norm affine");
    download(gamma, gh);
    download(beta, gh + C);
    for (int64_t c = 0; c < C; c++) {
        const int g = (int)(c / cg);
        const double a = gh[c] * st->rstd[g];
        ab[c] = (float)a;
        ab[C + c] = (float)(gh[C + c] - st->mean[g] * a);
    }
    Tensor *A = upload(ab, C, 1, 1, x->device), *B = upload(ab + C, C, 1, 1, x->device);
    free(ab);
    free(gh);
    return op_add(op_mul(x, A), B);
}

// ---- the DOD model, stage by stage -----------------------------------------------------------------------
typedef struct {
    DodModel *m;
    Device dev;
    int f;              // the VAE's downscaling factor
    int H, W, h, w;     // padded image, latent
    int lc;             // latent channels
    const float *x;     // padded input, 3 x H x W
    const float *z;     // the encoder's latent (lc x h x w), once made
    const float *lat;   // x0 in VAE space (lc x h x w), once made
} Job;

// Records the VAE's GroupNorm statistics on the image downscaled to the latent size (hl, wl) (encoder),
// and on x0 (lat, decoder; NULL: not yet) likewise. Stage 2's decoder needs the encoder's skips of the
// same downscaled image, so the encoder runs again there.
static void record_stats(const Job *j, int hl, int wl, const float *lat, NormStats *stats) {
    Mark mk = mark_now(j->dev);
    float *img = NULL;
    if (!lat || j->m->has_detail) {
        img = dod_malloc(sizeof(float) * 3 * (size_t)j->f * hl * j->f * wl, "restore statistics image");
        resize_area(j->x, 3, j->H, j->W, j->f * hl, j->f * wl, img);
    }
    stats->record = true;
    VaeEncoded enc = {0};
    if (!lat || j->m->has_detail)
        dod_model_encode(j->m, upload(img, 3, (int64_t)j->f * hl, (int64_t)j->f * wl, j->dev), NULL, lat != NULL, &enc);
    if (lat) {
        float *small = dod_malloc(sizeof(float) * (size_t)j->lc * hl * wl, "restore statistics latent");
        resize_area(lat, j->lc, j->h, j->w, hl, wl, small);
        dod_model_decode(j->m, upload(small, j->lc, hl, wl, j->dev), &enc);
        free(small);
    }
    stats->record = false;
    free(img);
    mark_release(mk, j->dev);
}

// Accumulates (+=) w_y[y] w_x[x] * tile into acc (C x H x W) and the weights into wsum (H x W).
static void blend_add(float *acc, float *wsum, int C, int H, int W, const float *tile, int y0, int x0, int th, int tw,
                      const double *wy, const double *wx) {
    for (int y = 0; y < th; y++)
        for (int x = 0; x < tw; x++) {
            const double wgt = wy[y] * wx[x];
            const size_t p = (size_t)(y0 + y) * W + x0 + x;
            wsum[p] += (float)wgt;
            for (int c = 0; c < C; c++) acc[c * (size_t)H * W + p] += (float)(tile[((size_t)c * th + y) * tw + x] * wgt);
        }
}

// One tile: the output (oc x os th x os tw, see run_tiles) of the th x tw tile at (y0, x0) of the grid (=).
typedef void (*TileFn)(const Job *j, int y0, int x0, int th, int tw, float *out);
typedef enum { BLEND_RAMP, BLEND_GAUSS } BlendKind;   // restore_tile_weight, or the public Gaussian

// Runs fn on every tile of g over a gh x gw grid and blends the outputs, oc channels at os times the
// grid's resolution, into acc (=, oc x os gh x os gw): sum(w tile) / sum(w). Each tile's activations
// are given back after it.
static void run_tiles(const Job *j, const TileGrid *g, int gh, int gw, int oc, int os, BlendKind kind, TileFn fn,
                      float *acc) {
    const int ny = restore_tile_count(gh, g), nx = restore_tile_count(gw, g);
    const int th = ny > 1 ? g->tile : gh, tw = nx > 1 ? g->tile : gw, H = gh * os, W = gw * os;
    const TileGrid go = {g->tile * os, g->overlap * os};   // the same tiles at the output's resolution
    float *tile = dod_malloc(sizeof(float) * (size_t)oc * os * th * os * tw, "restore tile");
    float *wsum = dod_calloc(sizeof(float) * (size_t)H * W, "restore weights");
    double *wy = dod_malloc(sizeof(double) * (size_t)os * th, "restore weights");
    double *wx = dod_malloc(sizeof(double) * (size_t)os * tw, "restore weights");
    memset(acc, 0, sizeof(float) * (size_t)oc * H * W);
    for (int ky = 0; ky < ny; ky++) {
        const int y0 = restore_tile_start(gh, ky, g);
        for (int i = 0; i < os * th; i++) wy[i] = kind == BLEND_GAUSS ? restore_gauss_weight(th, i, true) : restore_tile_weight(H, ky, i, &go);
        for (int kx = 0; kx < nx; kx++) {
            const int x0 = restore_tile_start(gw, kx, g);
            for (int i = 0; i < os * tw; i++) wx[i] = kind == BLEND_GAUSS ? restore_gauss_weight(tw, i, false) : restore_tile_weight(W, kx, i, &go);
            Mark mk = mark_now(j->dev);
            fn(j, y0, x0, th, tw, tile);
            mark_release(mk, j->dev);
            blend_add(acc, wsum, oc, H, W, tile, y0 * os, x0 * os, os * th, os * tw, wy, wx);
        }
    }
    const size_t plane = (size_t)H * W;
    for (int c = 0; c < oc; c++)
        for (size_t p = 0; p < plane; p++) acc[c * plane + p] /= wsum[p];
    free(wx);
    free(wy);
    free(wsum);
    free(tile);
}

// The pixels under latent tile (y0, x0, th x tw), on the device.
static Tensor *pixels_of(const Job *j, int y0, int x0, int th, int tw) {
    const int f = j->f;
    float *px = dod_malloc(sizeof(float) * 3 * (size_t)f * th * f * tw, "restore tile");
    crop_chw(j->x, 3, j->H, j->W, f * y0, f * x0, f * th, f * tw, px);
    Tensor *t = upload(px, 3, (int64_t)f * th, (int64_t)f * tw, j->dev);
    free(px);
    return t;
}

// A latent window of src (lc x h x w), on the device.
static Tensor *latent_of(const Job *j, const float *src, int y0, int x0, int th, int tw) {
    float *buf = dod_malloc(sizeof(float) * (size_t)j->lc * th * tw, "restore tile");
    crop_chw(src, j->lc, j->h, j->w, y0, x0, th, tw, buf);
    Tensor *t = upload(buf, j->lc, th, tw, j->dev);
    free(buf);
    return t;
}

// TileFns: the encoder's z, the UNet's prediction, the decoder's pixels (stage 2: the detail module reads
// the encoder's skips of the same pixels, encoded again).
static void encode_tile(const Job *j, int y0, int x0, int th, int tw, float *out) {
    VaeEncoded enc;
    download(dod_model_encode(j->m, pixels_of(j, y0, x0, th, tw), NULL, false, &enc), out);
}

static void predict_tile(const Job *j, int y0, int x0, int th, int tw, float *out) {
    download(dod_model_predict(j->m, latent_of(j, j->z, y0, x0, th, tw)), out);
}

static void decode_tile(const Job *j, int y0, int x0, int th, int tw, float *out) {
    VaeEncoded enc = {0};
    if (j->m->has_detail) dod_model_encode(j->m, pixels_of(j, y0, x0, th, tw), NULL, true, &enc);
    download(dod_model_decode(j->m, latent_of(j, j->lat, y0, x0, th, tw), &enc), out);
}

// The UNet's store with every adapted layer merged for the current modulation (weight and bias, f32,
// owned) and every other tensor borrowed (a view of the base's): swapped in while the adapters are off.
static ParamStore *merged_unet(DodModel *m) {
    ParamStore *base = m->unet->net.ps, *out = params_new();
    lora_merge_all(m->unet_lora, base, m->unet->net.prefix, 0, out);
    for (int i = 0; i < params_count(base); i++) {
        Tensor *t = params_at(base, i);
        if (!params_get(out, t->name)) params_add(out, t->name, tensor_wrap_persistent(t->name, t->ndim, t->shape, t->dtype, t->data));
    }
    return out;
}

// The UNet's prediction for j->z into pred (=), whole or in the public code's latent tiles. z_dev: z
// already on the device (whole only; NULL: uploaded). Returns the tile count.
static int predict(const Job *j, const TileGrid *g, Tensor *z_dev, float *pred) {
    if (g->tile == 0) {
        Mark mk = mark_now(j->dev);
        download(dod_model_predict(j->m, z_dev ? z_dev : upload(j->z, j->lc, j->h, j->w, j->dev)), pred);
        mark_release(mk, j->dev);
        return 1;
    }
    run_tiles(j, g, j->h, j->w, j->lc, 1, BLEND_GAUSS, predict_tile, pred);
    return restore_tile_count(j->h, g) * restore_tile_count(j->w, g);
}

static int restore_dod(DodModel *m, const float *in, int H0, int W0, const RestoreOptions *o, float *out,
                       RestoreStats *rs, char *err, size_t errlen) {
    const int mult = dod_model_pad_multiple(m), f = 1 << (m->vae->cfg.n_levels - 1);
    Job j = {.m = m, .dev = m->device, .f = f, .H = round_up(H0, mult), .W = round_up(W0, mult),
             .lc = m->vae->cfg.latent_channels};
    j.h = j.H / f;
    j.w = j.W / f;
    RestoreShapes shapes;
    restore_shapes_of(m, &shapes);
    RestorePlan plan;
    if (restore_plan(&shapes, j.H, j.W, o, &plan, err, errlen)) return -1;
    if (m->cfg.eval_sample && !plan.vae_whole) {   // a tiled encoder has no one posterior to sample
        snprintf(err, errlen, "[eval] latent = sample needs the VAE encoder on the whole %dx%d image, and the "
                 "memory plan tiles it: raise the memory budget (--max-memory) or use [eval] latent = mean", j.W, j.H);
        return -1;
    }
    *rs = (RestoreStats){.pad_h = j.H, .pad_w = j.W, .vae_tiles = 1, .extractor_scale = plan.extractor_scale,
                         .estimate_gib = plan.peak / (1024.0 * 1024.0 * 1024.0)};

    // 1. clamp and reflect-pad on the host
    const size_t plane = (size_t)j.H * j.W;
    float *x = dod_malloc(sizeof(float) * 3 * plane, "restore input");
    for (int c = 0; c < 3; c++)
        for (int y = 0; y < j.H; y++)
            for (int xx = 0; xx < j.W; xx++) {
                float v = in[((size_t)c * H0 + reflect_index(y, H0)) * W0 + reflect_index(xx, W0)];
                x[(size_t)c * plane + (size_t)y * j.W + xx] = v < -1.0f ? -1.0f : (v > 1.0f ? 1.0f : v);
            }
    j.x = x;
    bool prev = ag_set_grad_enabled(false);
    Mark m0 = mark_now(j.dev);

    // 2. the modulation, its (small) outputs kept at the bottom of the arena
    const int r = m->cfg.lora_rank;
    Tensor *gamma[LORA_N_BLOCKS], *beta[LORA_N_BLOCKS];
    float *gb = dod_malloc(sizeof(float) * 2 * LORA_N_BLOCKS * (size_t)r, "restore modulation");
    {
        Tensor *xe;
        if (plan.extractor_scale == 1) {
            xe = upload(x, 3, j.H, j.W, j.dev);
        } else {
            int he = round_up((j.H + plan.extractor_scale - 1) / plan.extractor_scale, mult);
            int we = round_up((j.W + plan.extractor_scale - 1) / plan.extractor_scale, mult);
            float *small = dod_malloc(sizeof(float) * 3 * (size_t)he * we, "restore extractor input");
            resize_area(x, 3, j.H, j.W, he, we, small);
            xe = upload(small, 3, he, we, j.dev);
            free(small);
        }
        dod_model_modulation(m, xe, gamma, beta);
        for (int k = 0; k < LORA_N_BLOCKS; k++) {
            download(gamma[k], gb + (size_t)(2 * k) * r);
            download(beta[k], gb + (size_t)(2 * k + 1) * r);
        }
        mark_release(m0, j.dev);
        for (int k = 0; k < LORA_N_BLOCKS; k++) {
            int64_t shape[2] = {1, r};
            gamma[k] = tensor_new_on(j.dev, 2, shape, DT_F32);
            beta[k] = tensor_new_on(j.dev, 2, shape, DT_F32);
            device_copy(gamma[k]->data, j.dev, gb + (size_t)(2 * k) * r, DEV_CPU, sizeof(float) * (size_t)r);
            device_copy(beta[k]->data, j.dev, gb + (size_t)(2 * k + 1) * r, DEV_CPU, sizeof(float) * (size_t)r);
        }
    }
    dod_model_set_modulation(m, gamma, beta);
    Mark m1 = mark_now(j.dev);

    // 3. the VAE encoder
    const size_t lplane = (size_t)j.h * j.w;
    float *z = dod_malloc(sizeof(float) * (size_t)j.lc * lplane, "restore latent");
    float *pred = dod_malloc(sizeof(float) * (size_t)j.lc * lplane, "restore prediction");
    float *y = dod_malloc(sizeof(float) * 3 * plane, "restore output");
    VaeEncoded enc = {0};
    Tensor *z_dev = NULL;
    NormStats stats = {0};
    TileGrid vg = {0, 0};
    if (plan.vae_whole) {
        Tensor *x_dev = upload(x, 3, j.H, j.W, j.dev);
        z_dev = dod_model_encode(m, x_dev, dod_model_eval_noise(m, x_dev), m->has_detail, &enc);
        download(z_dev, z);
        if (m->has_detail) m1 = mark_now(j.dev);   // stage 2: the skips stay until decoding
        else {
            mark_release(m1, j.dev);
            z_dev = NULL;
        }
    } else {
        vg = (TileGrid){plan.vae_tile / f, plan.vae_overlap / f};
        rs->vae_tile = plan.vae_tile;
        rs->vae_tiles = restore_tile_count(j.h, &vg) * restore_tile_count(j.w, &vg);
        rs->stats_scale = plan.stats_scale;
        m->vae->net.group_norm = m->detail.group_norm = stats_group_norm;
        m->vae->net.group_norm_ctx = m->detail.group_norm_ctx = &stats;
        const int hl = (j.h + plan.stats_scale - 1) / plan.stats_scale, wl = (j.w + plan.stats_scale - 1) / plan.stats_scale;
        record_stats(&j, hl, wl, NULL, &stats);
        run_tiles(&j, &vg, j.h, j.w, j.lc, 1, BLEND_RAMP, encode_tile, z);
    }

    // 4. the UNet, whole or in latent tiles (its adapters merged for this image, or not), and x0
    ParamStore *unet_ps = m->unet->net.ps, *merged = NULL;
    if (plan.merge) {
        merged = merged_unet(m);
        m->unet->net.ps = merged;
        lora_set_enabled(m->unet_lora, false);
    }
    rs->merged = plan.merge;
    j.z = z;
    rs->unet_tiles = predict(&j, &plan.unet, z_dev, pred);
    if (merged) {
        m->unet->net.ps = unet_ps;
        lora_set_enabled(m->unet_lora, true);
        params_free(merged);
    }
    Tensor *lat = dod_model_x0(m, z_dev ? z_dev : upload(z, j.lc, j.h, j.w, j.dev), upload(pred, j.lc, j.h, j.w, j.dev));

    // 5. the VAE decoder
    if (plan.vae_whole) {
        download(dod_model_decode(m, lat, &enc), y);
    } else {
        float *lat_host = dod_malloc(sizeof(float) * (size_t)j.lc * lplane, "restore latent");
        download(lat, lat_host);
        mark_release(m1, j.dev);
        const int hl = (j.h + plan.stats_scale - 1) / plan.stats_scale, wl = (j.w + plan.stats_scale - 1) / plan.stats_scale;
        record_stats(&j, hl, wl, lat_host, &stats);
        j.lat = lat_host;
        run_tiles(&j, &vg, j.h, j.w, 3, f, BLEND_RAMP, decode_tile, y);
        free(lat_host);
        m->vae->net.group_norm = m->detail.group_norm = NULL;
        m->vae->net.group_norm_ctx = m->detail.group_norm_ctx = NULL;
    }
    dod_model_set_modulation(m, NULL, NULL);
    mark_release(m0, j.dev);
    ag_step_reset();
    ag_set_grad_enabled(prev);
    int rc = 0;
    if (stats.missing[0]) {
        snprintf(err, errlen, "tiled VAE: GroupNorm %s has no whole-image statistics", stats.missing);
        rc = -1;
    }
    stats_free(&stats);

    // 6. crop and clamp
    for (int c = 0; c < 3 && !rc; c++)
        for (int yy = 0; yy < H0 && !rc; yy++)
            for (int xx = 0; xx < W0; xx++) {
                float v = y[(size_t)c * plane + (size_t)yy * j.W + xx];
                if (!isfinite(v)) {
                    snprintf(err, errlen, "the dod model returned a non-finite value (%g) at channel %d, pixel (%d, %d) "
                             "of a %dx%d image", v, c, xx, yy, W0, H0);
                    rc = -1;
                    break;
                }
                out[((size_t)c * H0 + yy) * W0 + xx] = v < -1.0f ? -1.0f : (v > 1.0f ? 1.0f : v);
            }
    free(y);
    free(pred);
    free(z);
    free(gb);
    free(x);
    return rc;
}

// ---- any other model: one forward through the host-I/O view ---------------------------------------------
static int restore_whole(Model *m, const float *in, int h, int w, float *out, char *err, size_t errlen) {
    Model io = model_host_io(m);
    Tensor *x = tensor_new4(1, 3, h, w);
    memcpy(tensor_data_f32(x), in, sizeof(float) * 3 * (size_t)h * w);
    bool prev = ag_set_grad_enabled(false);
    Tensor *yt = io.forward(io.self, x, 0, false);
    ag_set_grad_enabled(prev);
    int rc = 0;
    if (yt->ndim != 4 || yt->shape[0] != 1 || yt->shape[1] != 3 || yt->shape[2] != h || yt->shape[3] != w) {
        snprintf(err, errlen, "the %s model returned %s for a [1, 3, %d, %d] input", m->kind, shape_str(yt), h, w);
        rc = -1;
    } else {
        const float *yd = tensor_f32(yt);
        size_t n = (size_t)3 * h * w;
        for (size_t i = 0; i < n && !rc; i++)
            if (!isfinite(yd[i])) {
                snprintf(err, errlen, "the %s model returned a non-finite value (%g) at channel %zu, pixel (%zu, %zu) of "
                         "a %dx%d image", m->kind, yd[i], i / ((size_t)h * w), i % w, (i / w) % h, w, h);
                rc = -1;
            }
        if (!rc) memcpy(out, yd, sizeof(float) * n);
    }
    ag_step_reset();
    return rc;
}

int restore_chw(Model *m, const float *in_chw, int h, int w, const RestoreOptions *o, float *out_chw, RestoreStats *st,
                char *err, size_t errlen) {
    RestoreStats local;
    if (!st) st = &local;
    if (h <= 0 || w <= 0) {
        snprintf(err, errlen, "a %dx%d image has no pixels", w, h);
        return -1;
    }
    if (strcmp(m->kind, "dod") == 0) return restore_dod(m->self, in_chw, h, w, o, out_chw, st, err, errlen);
    *st = (RestoreStats){.pad_h = h, .pad_w = w, .unet_tiles = 1, .vae_tiles = 1, .extractor_scale = 1};
    return restore_whole(m, in_chw, h, w, out_chw, err, errlen);
}

int restore_image(Model *m, const Image *img, const RestoreOptions *o, float *out_chw, RestoreStats *st, char *err,
                  size_t errlen) {
    float *in = dod_malloc(sizeof(float) * 3 * (size_t)img->w * img->h, "restore input");
    restore_image_to_chw(img, in);
    int rc = restore_chw(m, in, img->h, img->w, o, out_chw, st, err, errlen);
    free(in);
    return rc;
}
