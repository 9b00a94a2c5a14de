// The restoration path (eval/restore.h): tile geometry and weights (the public code's UNet tiles and
// Gaussian, checked against numbers its numpy function gives), and on the tiny pretrained base
// (configs/tiny_base) with perturbed trained tensors: the staged whole-image path reproduces the
// model's eval forward bit for bit; VAE tiles with whole-image GroupNorm statistics stay within
// 40 dB PSNR of the whole image without seams (and without the overlap the seam metric sees them);
// latent UNet tiles; the memory estimates bound the measured arena peaks of every stage.
#include "tests/check.h"

#include "data/image.h"
#include "eval/restore.h"
#include "layers/dod_model.h"

// ---- geometry ---------------------------------------------------------------------------------------
static void test_geometry(void) {
    TileGrid t = {32, 8};
    CHECK(restore_tile_count(100, &t) == 4, "100 px, tile 32, overlap 8: %d tiles", restore_tile_count(100, &t));
    CHECK(restore_tile_start(100, 1, &t) == 24 && restore_tile_start(100, 2, &t) == 48, "regular starts");
    CHECK(restore_tile_start(100, 3, &t) == 68, "the last tile is flush with the edge: %d", restore_tile_start(100, 3, &t));
    CHECK(restore_tile_count(32, &t) == 1 && restore_tile_count(20, &t) == 1, "an axis no longer than a tile is one tile");
    TileGrid off = {0, 0};
    CHECK(restore_tile_count(5000, &off) == 1, "tile 0 never tiles");
    // every pixel gets a positive total weight, for many geometries
    int bad = 0;
    for (int len = 1; len < 140; len += 3)
        for (int tile = 8; tile <= 64; tile += 8)
            for (int ov = 0; ov < tile; ov += 4) {
                TileGrid g = {tile, ov};
                int n = restore_tile_count(len, &g);
                for (int x = 0; x < len; x++) {
                    float w = 0;
                    for (int k = 0; k < n; k++) {
                        int s = restore_tile_start(len, k, &g), tl = len < tile ? len : tile;
                        if (x >= s && x < s + tl) w += n > 1 ? restore_tile_weight(len, k, x - s, &g) : 1.0f;
                    }
                    bad += !(w > 0.0f);
                }
            }
    CHECK(bad == 0, "%d pixels without weight", bad);
    TileGrid g = {32, 8};
    CHECK(restore_tile_weight(100, 1, 0, &g) == 0.0f && restore_tile_weight(100, 1, 1, &g) == 0.0f, "context quarter");
    CHECK_NEAR(restore_tile_weight(100, 1, 2, &g), 0.125, 1e-7, "ramp start");
    CHECK_NEAR(restore_tile_weight(100, 1, 5, &g), 0.875, 1e-7, "ramp end");
    CHECK(restore_tile_weight(100, 1, 6, &g) == 1.0f && restore_tile_weight(100, 0, 0, &g) == 1.0f, "full weight");

    // the public code's UNet tiling: whole while h * w <= tile^2, square tiles of min(tile, h, w)
    TileGrid u;
    restore_unet_grid(64, 64, 96, 32, &u);
    CHECK(u.tile == 0, "64x64 latent: whole (%d)", u.tile);
    restore_unet_grid(96, 96, 96, 32, &u);
    CHECK(u.tile == 0, "96x96 latent: whole");
    restore_unet_grid(100, 100, 96, 32, &u);
    CHECK(u.tile == 96 && u.overlap == 32, "100x100: tiles of 96 (%d, %d)", u.tile, u.overlap);
    restore_unet_grid(40, 300, 96, 32, &u);   // area 12000 > 96^2: tiles of the short side
    CHECK(u.tile == 40 && u.overlap == 32 && restore_tile_count(300, &u) == 34, "40x300: %d tiles of %d",
          restore_tile_count(300, &u), u.tile);
    restore_unet_grid(20, 1000, 96, 32, &u);   // the public loop would never end: overlap halved
    CHECK(u.tile == 20 && u.overlap == 10, "20x1000: tile %d overlap %d", u.tile, u.overlap);
    restore_unet_grid(500, 500, 0, 32, &u);
    CHECK(u.tile == 0, "tile 0: whole");
    // _gaussian_weights(96, 96) and (20, 20) of the public code, evaluated with numpy
    const struct { int T, i; double across, down; } ref[] = {
        {96, 0, 1.926360275129547e-05, 1.4867195147342979e-05}, {96, 10, 0.0019386799581302507, 0.0015796454922698685},
        {96, 47, 3.9840154709437186, 3.9678374071687674},       {96, 48, 3.9840154709437186, 3.989422804014327},
        {96, 95, 1.926360275129547e-05, 2.4892463920454686e-05}, {20, 0, 5.0295072885924454e-05, 1.4867195147342979e-05},
        {20, 9, 3.8666811680284927, 3.5206532676429947},        {20, 19, 5.0295072885924454e-05, 0.00015983741106905477}};
    for (size_t k = 0; k < sizeof ref / sizeof ref[0]; k++) {
        CHECK_NEAR(restore_gauss_weight(ref[k].T, ref[k].i, false), ref[k].across, 1e-12 * ref[k].across, "gauss across");
        CHECK_NEAR(restore_gauss_weight(ref[k].T, ref[k].i, true), ref[k].down, 1e-12 * ref[k].down, "gauss down");
    }
    RestoreOptions o = restore_options_default();
    char err[256];
    CHECK(restore_check_options(&o, err, sizeof err) == 0, "defaults: %s", err);
    o.vae_tile = 60;
    CHECK(restore_check_options(&o, err, sizeof err) != 0 && strstr(err, "VAE tile 60"), "VAE tile not a multiple of 8");
    o = restore_options_default();
    o.overlap = 96;
    CHECK(restore_check_options(&o, err, sizeof err) != 0, "overlap must be below the tile");
}

// ---- the DOD model on the tiny base ---------------------------------------------------------------------
// The tiny base with every trained tensor moved off its initial value (LoRA B != 0, a modulation that
// matters), so the adapters and the modulation take part.
static DodModel *tiny_model(int stage) {
    DodModelConfig cfg = dod_model_default_config(stage);
    cfg.base_model_dir = DOD_SOURCE_DIR "/configs/tiny_base";
    cfg.prompt_path = DOD_SOURCE_DIR "/configs/tiny_base/prompt_embeds_zero.safetensors";   // it has no text encoder
    DodModel *m = dod_model_create(&cfg);
    ParamStore *ps = dod_model_params(m);
    for (int i = 0; i < params_count(ps); i++) {
        Tensor *t = params_at(ps, i);
        Tensor *d = tensor_new_persistent("noise", t->ndim, t->shape, DT_F32);
        tensor_randn(d, 1000 + (uint64_t)i, 0.02f);
        float *x = tensor_data_f32(t);
        const float *dx = tensor_data_f32(d);
        for (int64_t k = 0; k < t->numel; k++) x[k] += dx[k];
        tensor_free(d);
    }
    return m;
}

static float *load_chw(const char *name, int *w, int *h) {
    Image im;
    char err[512], path[1024];
    snprintf(path, sizeof path, "%s/tests/fixtures/data/%s", DOD_SOURCE_DIR, name);
    if (image_load(path, &im, err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        exit(1);
    }
    float *x = malloc(sizeof(float) * 3 * (size_t)im.w * im.h);
    restore_image_to_chw(&im, x);
    *w = im.w;
    *h = im.h;
    image_free(&im);
    return x;
}

static double psnr(const float *a, const float *b, size_t n) {   // images in [-1, 1]: peak-to-peak 2
    double se = 0;
    for (size_t i = 0; i < n; i++) se += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
    return 10.0 * log10(4.0 / (se / (double)n));
}

// Mean |a - b| (over channels) within `band` pixels of the centre lines of the tiles' overlaps, divided by
// the mean elsewhere: about 1 when the tiles leave no seam, large when they do.
static double seam_ratio(const float *a, const float *b, int W, int H, const TileGrid *g, int band) {
    double in = 0, out = 0;
    long n_in = 0, n_out = 0;
    const size_t plane = (size_t)W * H;
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            double d = 0;
            for (int c = 0; c < 3; c++) d += fabs((double)a[c * plane + (size_t)y * W + x] - b[c * plane + (size_t)y * W + x]);
            bool near = false;
            for (int axis = 0; axis < 2 && !near; axis++) {
                int len = axis ? H : W, pos = axis ? y : x, n = restore_tile_count(len, g);
                for (int k = 0; k + 1 < n && !near; k++) {
                    int centre = (restore_tile_start(len, k + 1, g) + restore_tile_start(len, k, g) + g->tile) / 2;
                    near = abs(pos - centre) <= band;
                }
            }
            if (near) in += d, n_in++;
            else out += d, n_out++;
        }
    return (in / (double)(n_in ? n_in : 1)) / (out / (double)(n_out ? n_out : 1) + 1e-12);
}

static void test_dod(int stage) {
    printf("-- stage %d\n", stage);
    DodModel *m = tiny_model(stage);
    Model *model = model_dod_wrap(m);
    char err[1024];
    int W, H;
    float *x = load_chw("coffee.png", &W, &H);   // 200 x 150: padded to 200 x 152
    const size_t n = (size_t)3 * W * H;
    float *whole = malloc(sizeof(float) * n), *tiled = malloc(sizeof(float) * n);

    // 1. the staged whole-image path is the model's eval forward
    RestoreOptions o = restore_options_default();
    o.max_memory_gib = 0;
    o.merge = RESTORE_MERGE_OFF;
    RestoreStats st;
    CHECK(restore_chw(model, x, H, W, &o, whole, &st, err, sizeof err) == 0, "%s", err);
    CHECK(st.unet_tiles == 1 && st.vae_tiles == 1 && st.pad_h == 152 && st.pad_w == 200, "whole: %d UNet, %d VAE tiles, %dx%d",
          st.unet_tiles, st.vae_tiles, st.pad_w, st.pad_h);
    Tensor *lq = tensor_new4(1, 3, H, W);
    memcpy(tensor_data_f32(lq), x, sizeof(float) * n);
    Tensor *ref = dod_model_restore(m, lq);
    CHECK(memcmp(tensor_data_f32(ref), whole, sizeof(float) * n) == 0, "staged path != dod_model_restore (max diff %g)",
          max_abs_diff(whole, tensor_data_f32(ref), (long)n, NULL));
    ag_step_reset();
    // the per-image merge (W0 + s B diag(1 + gamma) A, b0 + s B beta) gives the same image up to rounding
    o.merge = RESTORE_MERGE_ON;
    CHECK(restore_chw(model, x, H, W, &o, tiled, &st, err, sizeof err) == 0, "%s", err);
    double dm = max_abs_diff(tiled, whole, (long)n, NULL);
    printf("merged LoRA vs adapters: max |diff| %.3g\n", dm);
    CHECK(st.merged && dm < 1e-4 && dm > 0, "merged: %d, max diff %g", st.merged, dm);
    o.merge = RESTORE_MERGE_OFF;

    // 2. VAE tiles (64 px, overlap 32) with whole-image GroupNorm statistics
    o.vae_tile = stage == 1 ? 64 : 96;
    o.vae_overlap = stage == 1 ? 32 : 48;
    CHECK(restore_chw(model, x, H, W, &o, tiled, &st, err, sizeof err) == 0, "%s", err);
    TileGrid vg = {o.vae_tile, o.vae_overlap};
    double p = psnr(whole, tiled, n), seams = seam_ratio(whole, tiled, W, H, &vg, 3);
    printf("VAE tiles %d/%d (%d tiles, statistics at 1/%d): PSNR %.2f dB vs whole, seam ratio %.2f\n", vg.tile,
           vg.overlap, st.vae_tiles, st.stats_scale, p, seams);
    CHECK(st.vae_tiles == (stage == 1 ? 24 : 12) && st.stats_scale == 1, "%d VAE tiles, statistics scale %d", st.vae_tiles,
          st.stats_scale);
    // Stage 2 takes larger tiles and a lower bound (measured 39.2 dB): the detail module's RRDBs see further
    // than the overlap, here with random (perturbed initial) weights.
    const double bound = stage == 1 ? 40.0 : 37.0;
    CHECK(p > bound, "tiled VAE within %.0f dB of the whole image: %.2f dB", bound, p);
    CHECK(seams < 1.5, "no seam: energy along the overlaps' centres %.2f x elsewhere", seams);
    o.vae_overlap = 0;   // the same tiles butted together: the metric must see the seams
    CHECK(restore_chw(model, x, H, W, &o, tiled, &st, err, sizeof err) == 0, "%s", err);
    TileGrid v0 = {o.vae_tile, 0};
    double seams0 = seam_ratio(whole, tiled, W, H, &v0, 1);
    printf("VAE tiles %d/0: PSNR %.2f dB, seam ratio %.2f\n", o.vae_tile, psnr(whole, tiled, n), seams0);
    CHECK(seams0 > 2.0 * seams, "without overlap the seams show: ratio %.2f", seams0);

    // 3. latent UNet tiles (the public code's approximation: its attention sees one tile)
    o = restore_options_default();
    o.max_memory_gib = 0;
    o.merge = RESTORE_MERGE_OFF;
    o.tile = 24;
    o.overlap = 8;
    CHECK(restore_chw(model, x, H, W, &o, tiled, &st, err, sizeof err) == 0, "%s", err);
    p = psnr(whole, tiled, n);
    printf("UNet latent tiles 24/8 (%d tiles): PSNR %.2f dB vs whole\n", st.unet_tiles, p);
    CHECK(st.unet_tiles == 6, "50x38 latent, tile 24 overlap 8: %d tiles", st.unet_tiles);
    CHECK(p > 20.0, "latent tiles close to the whole latent: %.2f dB", p);

    // 4. the estimates bound what each stage uses (measured arena peaks), within a factor
    RestoreShapes s;
    restore_shapes_of(m, &s);
    bool prev = ag_set_grad_enabled(false);
    for (int size = 128; size <= 384; size += 256) {
        Tensor *img = tensor_new4(1, 3, size, size);
        tensor_rand_uniform(img, 7, -1.0f, 1.0f);
        Tensor *gamma[LORA_N_BLOCKS], *beta[LORA_N_BLOCKS];
        size_t base = arena_mark();
        arena_peak_reset();
        dod_model_modulation(m, img, gamma, beta);
        double meas_x = (double)arena_peak() - base;
        dod_model_set_modulation(m, gamma, beta);
        size_t mk = arena_mark();
        arena_peak_reset();
        VaeEncoded enc;
        Tensor *z = dod_model_encode(m, img, NULL, m->has_detail, &enc);
        double meas_e = (double)arena_peak() - mk;
        mk = arena_mark();
        arena_peak_reset();
        Tensor *pred = dod_model_predict(m, z);
        double meas_u = (double)arena_peak() - mk;
        Tensor *lat = dod_model_x0(m, z, pred);
        mk = arena_mark();
        arena_peak_reset();
        dod_model_decode(m, lat, &enc);
        double meas_d = (double)arena_peak() - mk;
        const int64_t lh = size / 4;
        double est[4] = {restore_estimate_extractor(&s, size, size), restore_estimate_encoder(&s, size, size, m->has_detail),
                         restore_estimate_unet(&s, lh, lh), restore_estimate_decoder(&s, size, size)};
        double meas[4] = {meas_x, meas_e, meas_u, meas_d};
        const char *what[4] = {"extractor", "encoder", "unet", "decoder"};
        for (int k = 0; k < 4; k++) {
            printf("%dx%d %-9s measured %7.1f MiB, estimate %7.1f MiB\n", size, size, what[k], meas[k] / 1048576.0,
                   est[k] / 1048576.0);
            CHECK(est[k] >= meas[k], "%s at %d: estimate %.1f MiB below the measured %.1f MiB", what[k], size,
                  est[k] / 1048576.0, meas[k] / 1048576.0);
            CHECK(est[k] <= 3.0 * meas[k] + 110.0 * 1048576.0, "%s at %d: estimate %.1f MiB far above the measured %.1f MiB",
                  what[k], size, est[k] / 1048576.0, meas[k] / 1048576.0);
        }
        dod_model_set_modulation(m, NULL, NULL);
        ag_step_reset();
    }
    ag_set_grad_enabled(prev);
    free(whole);
    free(tiled);
    free(x);
    model_free(model);
}

int main(void) {
    test_geometry();
    test_dod(1);
    test_dod(2);
    return check_summary();
}
