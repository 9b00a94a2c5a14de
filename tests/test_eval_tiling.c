// Tiled restoration (eval/restore.h): tile geometry, every pixel weighted, and tiled == untiled for
// models whose receptive field fits in a quarter of the overlap (a pointwise map, a 5x5 box filter,
// the toy restoration model), while a too-small overlap shows seams (so the comparison can fail).
#include "tests/check.h"

#include "eval/restore.h"
#include "eval/grid.h"

// ---- two test models: pointwise, and a 5x5 box filter with zero padding (radius 2) -------------
static ParamStore *no_params(void *self) { (void)self; return NULL; }
static void no_destroy(void *self) { (void)self; }

static Tensor *pointwise_forward(void *self, Tensor *lq, uint64_t seed, bool training) {
    (void)self, (void)seed, (void)training;
    Tensor *out = tensor_like(lq);
    const float *x = tensor_f32(lq);
    float *y = tensor_data_f32(out);
    for (int64_t i = 0; i < lq->numel; i++) y[i] = 0.5f * x[i] * x[i] - 0.25f * x[i] + 0.1f;
    return out;
}

static Tensor *box_forward(void *self, Tensor *lq, uint64_t seed, bool training) {
    (void)self, (void)seed, (void)training;
    const int64_t C = lq->shape[1], H = lq->shape[2], W = lq->shape[3];
    Tensor *out = tensor_like(lq);
    const float *x = tensor_f32(lq);
    float *y = tensor_data_f32(out);
    for (int64_t c = 0; c < C; c++)
        for (int64_t i = 0; i < H; i++)
            for (int64_t j = 0; j < W; j++) {
                float s = 0;
                for (int64_t di = -2; di <= 2; di++)
                    for (int64_t dj = -2; dj <= 2; dj++) {
                        int64_t a = i + di, b = j + dj;
                        if (a >= 0 && a < H && b >= 0 && b < W) s += x[(c * H + a) * W + b] * (1.0f + 0.1f * (float)(di + 2 * dj));
                    }
                y[(c * H + i) * W + j] = s / 25.0f;
            }
    return out;
}

static Image random_image(int w, int h, uint32_t seed) {
    Image im = image_alloc(w, h, 3);
    uint32_t s = seed;
    for (size_t i = 0; i < (size_t)w * h * 3; i++) {
        s = s * 1664525u + 1013904223u;
        im.pix[i] = (uint8_t)(s >> 24);
    }
    return im;
}

// max |tiled - untiled| over the image for model m.
static double tiled_vs_whole(Model *m, const Image *im, TileOptions t, int *n_tiles) {
    size_t n = (size_t)3 * im->w * im->h;
    float *a = malloc(sizeof(float) * n), *b = malloc(sizeof(float) * n);
    char err[512];
    TileOptions whole = {0, 0};
    CHECK(restore_image(m, im, &whole, a, NULL, err, sizeof err) == 0, "%s", err);
    CHECK(restore_image(m, im, &t, b, n_tiles, err, sizeof err) == 0, "%s", err);
    double d = 0;
    for (size_t i = 0; i < n; i++) d = fmax(d, fabs((double)a[i] - b[i]));
    free(a);
    free(b);
    return d;
}

static void test_geometry(void) {
    TileOptions t = {32, 8};
    CHECK(restore_tile_count(100, &t) == 4, "100 px, tile 32, overlap 8: %d tiles", restore_tile_count(100, &t));
    CHECK(restore_tile_start(100, 1, &t) == 24 && restore_tile_start(100, 2, &t) == 48, "regular starts");
    CHECK(restore_tile_start(100, 3, &t) == 68, "the last tile is flush with the edge: %d", restore_tile_start(100, 3, &t));
    CHECK(restore_tile_count(32, &t) == 1 && restore_tile_count(20, &t) == 1, "an axis no longer than a tile is one tile");
    TileOptions off = {0, 0};
    CHECK(restore_tile_count(5000, &off) == 1, "tile 0 never tiles");
    char err[256];
    CHECK(restore_check_tiles(&(TileOptions){30, 4}, err, sizeof err) != 0, "tile 30 is not a multiple of 8");
    CHECK(restore_check_tiles(&(TileOptions){32, 32}, err, sizeof err) != 0, "overlap must be below the tile");
    CHECK(restore_check_tiles(&(TileOptions){32, 31}, err, sizeof err) == 0, "%s", err);
    // every pixel of every axis gets weight from some tile, for many geometries
    int bad = 0;
    for (int tile = 8; tile <= 48; tile += 8)
        for (int ov = 0; ov < tile; ov++)
            for (int len = 1; len <= 130; len++) {
                TileOptions g = {tile, ov};
                int n = restore_tile_count(len, &g);
                for (int x = 0; x < len; x++) {
                    float w = 0;
                    for (int k = 0; k < n; k++) {
                        int s = restore_tile_start(len, k, &g), tl = len < tile ? len : tile;
                        if (x >= s && x < s + tl) w += n > 1 ? restore_tile_weight(len, k, x - s, &g) : 1.0f;
                    }
                    if (!(w > 0)) bad++;
                }
            }
    CHECK(bad == 0, "%d (length, tile, overlap, pixel) cases without weight", bad);
    // linear cross-fade: with overlap 8 the first 2 pixels of a following tile are context only
    TileOptions g = {32, 8};
    CHECK(restore_tile_weight(100, 1, 0, &g) == 0.0f && restore_tile_weight(100, 1, 1, &g) == 0.0f, "context quarter");
    CHECK_NEAR(restore_tile_weight(100, 1, 2, &g), 0.125, 1e-7, "ramp start");
    CHECK_NEAR(restore_tile_weight(100, 1, 5, &g), 0.875, 1e-7, "ramp end");
    CHECK(restore_tile_weight(100, 1, 6, &g) == 1.0f && restore_tile_weight(100, 0, 0, &g) == 1.0f, "full weight");
}

static void test_tiled_equals_untiled(void) {
    Model point = {.kind = "pointwise", .params = no_params, .forward = pointwise_forward, .destroy = no_destroy};
    Model box = {.kind = "box", .params = no_params, .forward = box_forward, .destroy = no_destroy};
    Image im = random_image(77, 58, 7);   // neither side a multiple of 8 or of the tile stride
    int tiles = 0;
    double d = tiled_vs_whole(&point, &im, (TileOptions){24, 8}, &tiles);
    CHECK(tiles == 5 * 4, "77x58 in 24 px tiles, stride 16: 5 x 4 tiles, got %d", tiles);
    CHECK(d < 1e-6, "pointwise model: tiled differs from untiled by %g", d);
    d = tiled_vs_whole(&box, &im, (TileOptions){24, 8}, &tiles);
    CHECK(d < 1e-6, "5x5 box, overlap 8 (context 2 px): tiled differs from untiled by %g", d);
    d = tiled_vs_whole(&box, &im, (TileOptions){32, 16}, &tiles);
    CHECK(d < 1e-6, "5x5 box, tile 32 overlap 16: tiled differs from untiled by %g", d);
    double seams = tiled_vs_whole(&box, &im, (TileOptions){24, 4}, &tiles);
    CHECK(seams > 1e-3, "5x5 box, overlap 4 (context 1 px < radius 2) should show seams, max diff %g", seams);
    seams = tiled_vs_whole(&box, &im, (TileOptions){24, 0}, &tiles);
    CHECK(seams > 1e-2, "5x5 box, no overlap should show seams, max diff %g", seams);
    // the toy restoration model (two 3x3 convolutions: radius 2), perturbed so its output is far from
    // the identity
    ModelOptions o = {.kind = MODEL_TOY, .stage = 1, .toy_width = 6, .seed = 3};
    char err[256];
    Model *toy = model_create(&o, err, sizeof err);
    CHECK(toy != NULL, "%s", err);
    if (toy) {
        ParamStore *ps = toy->params(toy->self);
        tensor_randn(params_get(ps, "conv_out.weight"), 11, 0.3f);
        d = tiled_vs_whole(toy, &im, (TileOptions){24, 8}, &tiles);
        CHECK(d < 1e-5, "toy model, overlap 8: tiled differs from untiled by %g", d);
        seams = tiled_vs_whole(toy, &im, (TileOptions){24, 0}, &tiles);
        CHECK(seams > 1e-3, "toy model without overlap should show seams, max diff %g", seams);
        model_free(toy);
    }
    image_free(&im);
}

static void test_conversions_and_grid(void) {
    // [0, 1] -> u8 rounds half to even in float32, like BasicSR's tensor2img
    float unit[3] = {0.5f / 255.0f, 1.5f / 255.0f, 1.2f};
    Image px = restore_unit_to_image(unit, 1, 1);
    CHECK(px.pix[0] == 0 && px.pix[1] == 2 && px.pix[2] == 255, "quantised %d %d %d", px.pix[0], px.pix[1], px.pix[2]);
    image_free(&px);
    float model_out[3] = {-1.5f, 0.0f, 0.9f}, u[3];
    restore_output_to_unit(model_out, 3, u);
    CHECK(u[0] == 0.0f && u[1] == 0.5f && fabsf(u[2] - 0.95f) < 1e-7f, "[-1, 1] -> [0, 1] clamped");
    Image a = random_image(4, 3, 1), b = random_image(2, 5, 2);
    const Image *cells[4] = {&a, &b, &b, &a};
    Image g = grid_make(cells, 2, 2);
    CHECK(g.w == 6 && g.h == 10, "grid %dx%d, expected 6x10", g.w, g.h);
    CHECK(!memcmp(g.pix + ((size_t)5 * g.w + 2) * 3, a.pix, 4 * 3), "second row, second cell starts after the first");
    CHECK(g.pix[((size_t)4 * g.w) * 3] == 0, "unfilled grid area is black");
    image_free(&g);
    image_free(&a);
    image_free(&b);
}

int main(void) {
    test_geometry();
    test_tiled_equals_untiled();
    test_conversions_and_grid();
    return check_summary();
}
