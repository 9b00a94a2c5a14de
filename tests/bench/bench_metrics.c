// dod-bench metrics: PSNR+SSIM speed of eval/metrics (promptir and basicsr profiles) against
// scikit-image measured in the same run (scripts/bench_metrics_skimage.py), on real photos.
//
// Photos: scikit-image's data folder when a Python with scikit-image is found (astronaut, coffee,
// chelsea, rocket), else the small crops in tests/fixtures/metrics/gt. Each photo gets a
// deterministic sigma-15 noisy twin; both are written as PNG to a temp folder so that the C code
// and Python score the very same pixels. Times are best-of-N per pair, conversions included.
#include <cjson/cJSON.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "data/image.h"
#include "eval/metrics.h"
#include "tests/bench/bench.h"

#define MAX_PAIRS 16

typedef struct {
    char name[64], pred[512], gt[512];
    int w, h;
    double sec[2][2];    // [profile][0: 1 thread, 1: all threads]
    double psnr[2], ssim[2];
    double ref_sec[2], ref_psnr[2], ref_ssim[2];
    int have_ref;
} BenchPair;

static uint64_t rng_next(uint64_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

// Standard normal (Box-Muller) from the xorshift stream.
static double rng_normal(uint64_t *s) {
    double u1 = ((rng_next(s) >> 11) + 1.0) / 9007199254740993.0, u2 = (rng_next(s) >> 11) / 9007199254740992.0;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

// Run a shell command and return its whole stdout (heap), or NULL when it fails.
static char *run_capture(const char *cmd) {
    FILE *p = popen(cmd, "r");
    if (!p) return NULL;
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    size_t got;
    while ((got = fread(buf + len, 1, cap - len - 1, p)) > 0) {
        len += got;
        if (cap - len < 2) buf = realloc(buf, cap *= 2);
    }
    buf[len] = 0;
    if (pclose(p) != 0) {
        free(buf);
        return NULL;
    }
    return buf;
}

static void time_ours(BenchPair *bp, const Image *pred, const Image *gt, int repeat) {
    char err[512];
#ifdef _OPENMP
    const int all_threads = omp_get_max_threads();
#endif
    for (int prof = 0; prof < 2; prof++) {
        MetricOpts o = metrics_opts_default((MetricProfile)prof);
        for (int t = 0; t < 2; t++) {
#ifdef _OPENMP
            omp_set_num_threads(t == 0 ? 1 : all_threads);
#endif
            double best = INFINITY;
            for (int r = 0; r < repeat; r++) {
                double t0 = dod_now_seconds();
                if (metrics_pair(pred, gt, &o, &bp->psnr[prof], &bp->ssim[prof], err, sizeof err)) {
                    fprintf(stderr, "dod-bench metrics: %s: %s\n", bp->name, err);
                    exit(1);
                }
                double dt = dod_now_seconds() - t0;
                if (dt < best) best = dt;
            }
            bp->sec[prof][t] = best;
        }
    }
#ifdef _OPENMP
    omp_set_num_threads(all_threads);
#endif
}

static int threads_available(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

int bench_metrics_main(int argc, char **argv) {
    int repeat = 5;
    const char *python = bench_python();
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--repeat") && i + 1 < argc) repeat = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--python") && i + 1 < argc) python = argv[++i];
        else {
            printf("usage: dod-bench metrics [--repeat N] [--python PATH]\n"
                   "Times PSNR+SSIM (promptir and basicsr profiles) on real photos, 1 thread and all\n"
                   "threads, against scikit-image run by PATH (default $PYTHON, else python3).\n");
            return strcmp(argv[i], "--help") ? 2 : 0;
        }
    }
    if (repeat < 1) repeat = 1;
    const char *script = DOD_SOURCE_DIR "/scripts/bench_metrics_skimage.py";

    // Where the photos come from.
    char cmd[4096], photo_dir[1024] = "";
    // A Python that cannot run the script (not installed, no scikit-image) fails this first call.
    snprintf(cmd, sizeof cmd, "'%s' '%s' --data-dir 2>/dev/null", python, script);
    char *dir = run_capture(cmd);
    int have_python = dir != NULL;
    if (dir) {
        dir[strcspn(dir, "\n")] = 0;
        snprintf(photo_dir, sizeof photo_dir, "%s", dir);
        free(dir);
    }
    static const char *skimage_photos[] = {"astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg"};
    static const char *fixture_photos[] = {"astronaut.png", "coffee.png", "chelsea.png", "rocket.png"};
    char src_dir[1024];
    const char **photos = skimage_photos;
    if (photo_dir[0]) {
        snprintf(src_dir, sizeof src_dir, "%s", photo_dir);
    } else {
        snprintf(src_dir, sizeof src_dir, "%s", DOD_SOURCE_DIR "/tests/fixtures/metrics/gt");
        photos = fixture_photos;
    }
    if (!have_python)
        printf("scikit-image not available through %s (set PYTHON=...): printing our timings only\n", python);

    char tmpdir[] = "/tmp/dod-bench-metrics.XXXXXX";
    if (!mkdtemp(tmpdir)) {
        perror("dod-bench metrics: mkdtemp");
        return 1;
    }
    BenchPair pairs[MAX_PAIRS];
    int n = 0;
    char err[1024];
    uint64_t seed = 0x243F6A8885A308D3ull;
    for (int i = 0; i < 4; i++) {
        char path[2048];
        snprintf(path, sizeof path, "%s/%s", src_dir, photos[i]);
        Image gt;
        if (image_load(path, &gt, err, sizeof err)) {
            fprintf(stderr, "dod-bench metrics: skipping %s\n", err);
            continue;
        }
        Image pred = image_alloc(gt.w, gt.h, gt.c);
        for (size_t k = 0; k < (size_t)gt.w * gt.h * gt.c; k++) {
            double v = gt.pix[k] + 15.0 * rng_normal(&seed);
            pred.pix[k] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);  // truncating, as PromptIR's astype
        }
        BenchPair *bp = &pairs[n];
        memset(bp, 0, sizeof *bp);
        char stem[64];
        snprintf(stem, sizeof stem, "%.*s", (int)strcspn(photos[i], "."), photos[i]);
        snprintf(bp->name, sizeof bp->name, "%s", stem);
        snprintf(bp->gt, sizeof bp->gt, "%s/%s_gt.png", tmpdir, stem);
        snprintf(bp->pred, sizeof bp->pred, "%s/%s_pred.png", tmpdir, stem);
        bp->w = gt.w;
        bp->h = gt.h;
        if (image_save_png(bp->gt, &gt, err, sizeof err) || image_save_png(bp->pred, &pred, err, sizeof err)) {
            fprintf(stderr, "dod-bench metrics: %s\n", err);
            return 1;
        }
        time_ours(bp, &pred, &gt, repeat);
        image_free(&gt);
        image_free(&pred);
        n++;
    }

    if (have_python && n > 0) {
        int len = snprintf(cmd, sizeof cmd, "'%s' '%s' --repeat %d", python, script, repeat);
        for (int i = 0; i < n; i++) len += snprintf(cmd + len, sizeof cmd - len, " '%s:%s'", pairs[i].pred, pairs[i].gt);
        char *text = run_capture(cmd);
        cJSON *doc = text ? cJSON_Parse(text) : NULL;
        const cJSON *arr = doc ? cJSON_GetObjectItemCaseSensitive(doc, "pairs") : NULL;
        if (!arr || cJSON_GetArraySize(arr) != n) {
            printf("scikit-image run failed (%s): printing our timings only\n", cmd);
        } else {
            const cJSON *ver = cJSON_GetObjectItemCaseSensitive(doc, "skimage");
            printf("reference: scikit-image %s via %s (single-threaded, best of %d)\n",
                   cJSON_IsString(ver) ? ver->valuestring : "?", python, repeat);
            for (int i = 0; i < n; i++) {
                const cJSON *e = cJSON_GetArrayItem(arr, i);
                const char *keys[2] = {"promptir", "basicsr"};
                for (int p = 0; p < 2; p++) {
                    const cJSON *r = cJSON_GetObjectItemCaseSensitive(e, keys[p]);
                    pairs[i].ref_sec[p] = cJSON_GetObjectItemCaseSensitive(r, "sec")->valuedouble;
                    pairs[i].ref_psnr[p] = cJSON_GetObjectItemCaseSensitive(r, "psnr")->valuedouble;
                    pairs[i].ref_ssim[p] = cJSON_GetObjectItemCaseSensitive(r, "ssim")->valuedouble;
                }
                pairs[i].have_ref = 1;
            }
        }
        cJSON_Delete(doc);
        free(text);
    }
    for (int i = 0; i < n; i++) {
        remove(pairs[i].gt);
        remove(pairs[i].pred);
    }
    rmdir(tmpdir);

    const int nt = threads_available();
    static const char *titles[2] = {
        "promptir (skimage SSIM 7x7 uniform, float32) vs skimage compute_psnr_ssim calls",
        "basicsr (11x11 Gaussian, float64) vs skimage gaussian_weights=True (BasicSR-equivalent)"};
    for (int p = 0; p < 2; p++) {
        printf("\n%s\n", titles[p]);
        printf("%-10s %9s %11s %11s %11s %9s %9s %10s\n", "image", "size", "ours 1T ms", "ours ms", "skimage ms",
               "x (1T)", "x", "|dSSIM|");
        double tot1 = 0, totn = 0, totr = 0;
        for (int i = 0; i < n; i++) {
            const BenchPair *bp = &pairs[i];
            char size[32];
            snprintf(size, sizeof size, "%dx%d", bp->w, bp->h);
            printf("%-10s %9s %11.2f %11.2f", bp->name, size, bp->sec[p][0] * 1e3, bp->sec[p][1] * 1e3);
            tot1 += bp->sec[p][0];
            totn += bp->sec[p][1];
            if (bp->have_ref) {
                totr += bp->ref_sec[p];
                printf(" %11.2f %9.2f %9.2f %10.2g\n", bp->ref_sec[p] * 1e3, bp->ref_sec[p] / bp->sec[p][0],
                       bp->ref_sec[p] / bp->sec[p][1], fabs(bp->ref_ssim[p] - bp->ssim[p]));
            } else {
                printf(" %11s %9s %9s %10s\n", "-", "-", "-", "-");
            }
        }
        if (n && pairs[0].have_ref)
            printf("%-10s %9s %11.2f %11.2f %11.2f %9.2f %9.2f\n", "total", "", tot1 * 1e3, totn * 1e3, totr * 1e3,
                   totr / tot1, totr / totn);
    }
    printf("\n\"ours\" uses %d thread(s); x = skimage time / our time (higher is faster).\n", nt);
    return n > 0 ? 0 : 1;
}

BENCH_REGISTER(metrics, "SSIM/PSNR speed vs scikit-image", bench_metrics_main);
