// Synthetic degradations (see data/degrade.h; formulas in docs/data-format.md).
#include "data/degrade.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/base.h"
#include "data/keyed_rng.h"

static const char *kind_names[DEG_COUNT] = {"noise", "rain", "haze", "blur", "lowlight"};
static const char *task_names[DEG_COUNT] = {"denoise", "derain", "dehaze", "deblur", "lowlight"};

const char *degrade_kind_name(DegradeKind kind) { return kind >= 0 && kind < DEG_COUNT ? kind_names[kind] : "?"; }
const char *degrade_task_name(DegradeKind kind) { return kind >= 0 && kind < DEG_COUNT ? task_names[kind] : "?"; }

int degrade_kind_from_name(const char *name) {
    for (int k = 0; k < DEG_COUNT; k++)
        if (!strcmp(name, kind_names[k]) || !strcmp(name, task_names[k])) return k;
    return -1;
}

static inline uint8_t round_clip_u8(double v) {
    if (!(v > 0.0)) return 0;   // also catches NaN
    if (v >= 255.0) return 255;
    return (uint8_t)(v + 0.5);
}

void degrade_gaussian_noise(const uint8_t *clean, uint8_t *noisy, size_t n_values, double sigma, uint64_t key) {
    KeyedRng rng = keyed_rng(key);
    for (size_t i = 0; i < n_values; i++) {
        double v = (double)clean[i] + sigma * rng_normal(&rng);
        if (v < 0.0) v = 0.0;
        if (v > 255.0) v = 255.0;
        noisy[i] = (uint8_t)v;   // truncating cast, as numpy astype(uint8) after np.clip
    }
}

// Separable [1 2 1]/4 blur of a float plane, in place (borders replicate). Softens drawn streaks.
static void blur121(float *plane, int w, int h) {
    float *tmp = dod_malloc(sizeof(float) * (size_t)w * h, "rain blur scratch");
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            const float *row = plane + (size_t)y * w;
            int xl = x > 0 ? x - 1 : 0, xr = x < w - 1 ? x + 1 : w - 1;
            tmp[(size_t)y * w + x] = 0.25f * row[xl] + 0.5f * row[x] + 0.25f * row[xr];
        }
    for (int y = 0; y < h; y++) {
        int yu = y > 0 ? y - 1 : 0, yd = y < h - 1 ? y + 1 : h - 1;
        for (int x = 0; x < w; x++)
            plane[(size_t)y * w + x] = 0.25f * tmp[(size_t)yu * w + x] + 0.5f * tmp[(size_t)y * w + x] +
                                       0.25f * tmp[(size_t)yd * w + x];
    }
    free(tmp);
}

Image degrade_rain(const Image *clean, uint64_t key, char *params, size_t params_len) {
    KeyedRng rng = keyed_rng(key);
    int w = clean->w, h = clean->h;
    double scale = fmin(w, h) / 256.0;
    double angle = rng_range(&rng, -30.0, 30.0) * M_PI / 180.0;  // from vertical, shared by all streaks
    double length = rng_range(&rng, 12.0, 36.0) * fmax(scale, 0.75);   // long streaks even on small images
    double density = rng_range(&rng, 0.003, 0.008);                     // streaks per pixel
    double alpha = rng_range(&rng, 0.6, 0.9);
    int thickness = scale > 1.5 ? (int)(scale + 0.5) : 1;
    long n_streaks = lround(density * w * h);
    float *layer = dod_calloc(sizeof(float) * (size_t)w * h, "rain layer");
    for (long s = 0; s < n_streaks; s++) {
        // Starts range over a band above the image too, so streaks enter from the top edge.
        double x0 = rng_range(&rng, -length, w + length), y0 = rng_range(&rng, -length, h);
        double theta = angle + rng_range(&rng, -3.0, 3.0) * M_PI / 180.0;
        double len = length * rng_range(&rng, 0.7, 1.3), bright = rng_range(&rng, 0.4, 1.0);
        double dx = sin(theta), dy = cos(theta);
        for (double t = 0; t <= len; t += 0.5) {
            float v = (float)(bright * sqrt(sin(M_PI * t / len)));   // tapered ends
            int px = (int)floor(x0 + t * dx), py = (int)floor(y0 + t * dy);
            for (int k = 0; k < thickness; k++) {
                int qx = px + k;
                if (qx < 0 || qx >= w || py < 0 || py >= h) continue;
                float *dst = &layer[(size_t)py * w + qx];
                if (v > *dst) *dst = v;
            }
        }
    }
    blur121(layer, w, h);
    Image out = image_alloc(w, h, 3);
    for (size_t i = 0; i < (size_t)w * h; i++)
        for (int c = 0; c < 3; c++)
            out.pix[i * 3 + c] = round_clip_u8(clean->pix[i * 3 + c] + 255.0 * alpha * layer[i]);
    free(layer);
    snprintf(params, params_len, "rain: angle=%.1fdeg length=%.1fpx density=%.4f streaks=%ld alpha=%.3f",
             angle * 180.0 / M_PI, length, density, n_streaks, alpha);
    return out;
}

// Box mean of a float plane over a (2r+1)^2 window clamped to the image, through an integral image.
static void box_mean(const float *src, float *dst, int w, int h, int r) {
    double *sat = dod_calloc(sizeof(double) * (size_t)(w + 1) * (h + 1), "haze integral image");
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            sat[(size_t)(y + 1) * (w + 1) + x + 1] = src[(size_t)y * w + x] + sat[(size_t)y * (w + 1) + x + 1] +
                                                      sat[(size_t)(y + 1) * (w + 1) + x] - sat[(size_t)y * (w + 1) + x];
    for (int y = 0; y < h; y++) {
        int y0 = y - r < 0 ? 0 : y - r, y1 = y + r + 1 > h ? h : y + r + 1;
        for (int x = 0; x < w; x++) {
            int x0 = x - r < 0 ? 0 : x - r, x1 = x + r + 1 > w ? w : x + r + 1;
            double s = sat[(size_t)y1 * (w + 1) + x1] - sat[(size_t)y0 * (w + 1) + x1] - sat[(size_t)y1 * (w + 1) + x0] +
                       sat[(size_t)y0 * (w + 1) + x0];
            dst[(size_t)y * w + x] = (float)(s / ((double)(y1 - y0) * (x1 - x0)));
        }
    }
    free(sat);
}

Image degrade_haze(const Image *clean, uint64_t key, char *params, size_t params_len) {
    KeyedRng rng = keyed_rng(key);
    int w = clean->w, h = clean->h;
    size_t n = (size_t)w * h;
    double beta = rng_range(&rng, 0.5, 1.6);
    double airlight = rng_range(&rng, 0.75, 0.95);
    double tint[3];
    for (int c = 0; c < 3; c++) tint[c] = airlight + rng_range(&rng, -0.02, 0.02);
    // Depth proxy (no depth sensor): far at the top of the frame, and bright smooth regions (sky,
    // distant walls) farther than dark detailed ones: d = 0.6 (1 - y/(h-1)) + 0.4 boxmean(lum).
    float *lum = dod_malloc(sizeof(float) * n, "haze luminance");
    float *depth = dod_malloc(sizeof(float) * n, "haze depth");
    for (size_t i = 0; i < n; i++)
        lum[i] = (0.299f * clean->pix[i * 3] + 0.587f * clean->pix[i * 3 + 1] + 0.114f * clean->pix[i * 3 + 2]) / 255.0f;
    int radius = (w > h ? w : h) / 16;
    box_mean(lum, depth, w, h, radius < 1 ? 1 : radius);
    float dmin = INFINITY, dmax = -INFINITY;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            float *d = &depth[(size_t)y * w + x];
            *d = 0.6f * (h > 1 ? 1.0f - (float)y / (h - 1) : 0.5f) + 0.4f * *d;
            if (*d < dmin) dmin = *d;
            if (*d > dmax) dmax = *d;
        }
    Image out = image_alloc(w, h, 3);
    for (size_t i = 0; i < n; i++) {
        double d = dmax > dmin ? (depth[i] - dmin) / (dmax - dmin) : 0.5;
        double t = exp(-beta * d);
        for (int c = 0; c < 3; c++)
            out.pix[i * 3 + c] = round_clip_u8(clean->pix[i * 3 + c] * t + 255.0 * tint[c] * (1.0 - t));
    }
    free(lum);
    free(depth);
    snprintf(params, params_len, "haze: beta=%.3f airlight=%.3f,%.3f,%.3f depth=0.6*(1-y/(h-1))+0.4*boxmean(luma,r=%d)",
             beta, tint[0], tint[1], tint[2], radius < 1 ? 1 : radius);
    return out;
}

static inline int reflect_index(int i, int n) {
    if (n == 1) return 0;
    while (i < 0 || i >= n) i = i < 0 ? -i : 2 * (n - 1) - i;
    return i;
}

Image degrade_motion_blur(const Image *clean, uint64_t key, char *params, size_t params_len) {
    KeyedRng rng = keyed_rng(key);
    int w = clean->w, h = clean->h;
    double scale = fmin(w, h) / 256.0;
    int half = (int)lround(rng_range(&rng, 4.0, 10.0) * fmax(scale, 0.5));
    if (half < 2) half = 2;
    if (half > 30) half = 30;
    int ksize = 2 * half + 1;
    // Camera-shake trajectory: a random walk with momentum (direction drifts by N(0, 0.35 rad)
    // per step), then centred and scaled to fit the kernel, splatted bilinearly.
    enum { STEPS = 96 };
    double px[STEPS], py[STEPS];
    double heading = rng_range(&rng, 0.0, 2.0 * M_PI), x = 0, y = 0;
    for (int s = 0; s < STEPS; s++) {
        px[s] = x;
        py[s] = y;
        heading += 0.35 * rng_normal(&rng);
        x += cos(heading);
        y += sin(heading);
    }
    double mx = 0, my = 0;
    for (int s = 0; s < STEPS; s++) mx += px[s] / STEPS, my += py[s] / STEPS;
    double extent = 1e-9;
    for (int s = 0; s < STEPS; s++) extent = fmax(extent, fmax(fabs(px[s] - mx), fabs(py[s] - my)));
    double fit = (half - 1e-6) / extent;
    double *kernel = dod_calloc(sizeof(double) * ksize * ksize, "blur kernel");
    for (int s = 0; s < STEPS; s++) {
        double kx = (px[s] - mx) * fit + half, ky = (py[s] - my) * fit + half;
        int ix = (int)floor(kx), iy = (int)floor(ky);
        double fx = kx - ix, fy = ky - iy;
        for (int dy = 0; dy < 2; dy++)
            for (int dx = 0; dx < 2; dx++) {
                int qx = ix + dx, qy = iy + dy;
                if (qx < 0 || qx >= ksize || qy < 0 || qy >= ksize) continue;
                kernel[qy * ksize + qx] += (dx ? fx : 1 - fx) * (dy ? fy : 1 - fy);
            }
    }
    // Only the non-zero taps take part in the convolution (the kernel is a thin curve).
    int n_taps = 0;
    double total = 0;
    for (int i = 0; i < ksize * ksize; i++) total += kernel[i];
    int *tap_dx = dod_malloc(sizeof(int) * ksize * ksize, "blur taps");
    int *tap_dy = dod_malloc(sizeof(int) * ksize * ksize, "blur taps");
    double *tap_w = dod_malloc(sizeof(double) * ksize * ksize, "blur taps");
    for (int i = 0; i < ksize * ksize; i++)
        if (kernel[i] > 1e-12) {
            tap_dx[n_taps] = i % ksize - half;
            tap_dy[n_taps] = i / ksize - half;
            tap_w[n_taps] = kernel[i] / total;
            n_taps++;
        }
    Image out = image_alloc(w, h, 3);
    for (int oy = 0; oy < h; oy++)
        for (int ox = 0; ox < w; ox++) {
            double acc[3] = {0, 0, 0};
            for (int t = 0; t < n_taps; t++) {
                const uint8_t *p = clean->pix + ((size_t)reflect_index(oy + tap_dy[t], h) * w +
                                                 reflect_index(ox + tap_dx[t], w)) * 3;
                acc[0] += tap_w[t] * p[0];
                acc[1] += tap_w[t] * p[1];
                acc[2] += tap_w[t] * p[2];
            }
            uint8_t *o = out.pix + ((size_t)oy * w + ox) * 3;
            for (int c = 0; c < 3; c++) o[c] = round_clip_u8(acc[c]);
        }
    free(kernel);
    free(tap_dx);
    free(tap_dy);
    free(tap_w);
    snprintf(params, params_len, "blur: kernel=%dx%d taps=%d trajectory_steps=%d", ksize, ksize, n_taps, STEPS);
    return out;
}

Image degrade_lowlight(const Image *clean, uint64_t key, char *params, size_t params_len) {
    KeyedRng rng = keyed_rng(key);
    double gain = rng_range(&rng, 0.15, 0.4), gamma = rng_range(&rng, 1.2, 2.0);
    double read_sigma = rng_range(&rng, 0.002, 0.01), shot = rng_range(&rng, 0.0005, 0.002);
    Image out = image_alloc(clean->w, clean->h, 3);
    size_t n = (size_t)clean->w * clean->h * 3;
    for (size_t i = 0; i < n; i++) {
        double y = gain * pow(clean->pix[i] / 255.0, gamma);
        y += sqrt(read_sigma * read_sigma + shot * y) * rng_normal(&rng);
        out.pix[i] = round_clip_u8(255.0 * y);
    }
    snprintf(params, params_len, "lowlight: gain=%.3f gamma=%.3f read_sigma=%.4f shot=%.5f", gain, gamma, read_sigma,
             shot);
    return out;
}

Image degrade_apply(DegradeKind kind, const Image *clean, uint64_t key, char *params, size_t params_len) {
    switch (kind) {
    case DEG_RAIN: return degrade_rain(clean, key, params, params_len);
    case DEG_HAZE: return degrade_haze(clean, key, params, params_len);
    case DEG_BLUR: return degrade_motion_blur(clean, key, params, params_len);
    case DEG_LOWLIGHT: return degrade_lowlight(clean, key, params, params_len);
    default: dod_fatal("degrade_apply", "kind %d (%s) has no image model here", (int)kind, degrade_kind_name(kind));
    }
}
