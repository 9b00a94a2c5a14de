// dod-bench data: loader throughput (crops/s at 256 x 256 with 2 threads, batch 3 dehaze + 2 derain
// + 2 denoise) against the rate a GPU training step consumes them.
//
// It builds a temporary dataset (synth of 512 x 512 images: the real-photo fixtures resized up,
// else generated pictures), runs the loader flat out with nothing consuming, and prints
// crops/s, batches/s and the headroom = loader batches/s * step time. The step time is an option;
// its default, 0.5 s per step for SD 2.1 at batch 7, 256 x 256, on one H100, is an ASSUMPTION
// until the training benchmark measures it. Headroom > 1 means the loader is never the bottleneck.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tests/bench/bench.h"

#ifdef DOD_HAVE_HDF5
#include <sys/stat.h>

#include "data/image.h"
#include "data/keyed_rng.h"
#include "data/loader.h"
#include "data/pack.h"

static const char *fixture_names[] = {"astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg", "hubble.bmp"};

// Writes n_images size x size PNGs into dir: fixtures resized up, or generated gradients + noise.
static void make_clean_dir(const char *dir, int n_images, int size) {
    char err[1024], path[4096];
    for (int i = 0; i < n_images; i++) {
        Image src, img;
        snprintf(path, sizeof path, "%s/tests/fixtures/data/%s", DOD_SOURCE_DIR, fixture_names[i % 5]);
        if (image_load(path, &src, err, sizeof err) == 0) {
            img = image_resize(&src, size, size);
            image_free(&src);
        } else {
            img = image_alloc(size, size, 3);
            KeyedRng r = keyed_rng((uint64_t)i);
            for (size_t k = 0; k < (size_t)size * size * 3; k++)
                img.pix[k] = (uint8_t)((k / 3 % size) * 200 / size + rng_below(&r, 40));
        }
        snprintf(path, sizeof path, "%s/img%03d.png", dir, i);
        if (image_save_png(path, &img, err, sizeof err)) fprintf(stderr, "dod-bench data: %s\n", err);
        image_free(&img);
    }
}

static double run_loader(const char *path, int threads, int crop, int steps, char *err, size_t errlen) {
    LoaderConfig cfg;
    loader_config_default(&cfg);
    if (loader_parse_tasks(&cfg, "dehaze:3,derain:2,denoise:2", err, errlen)) return -1;
    cfg.path = path;
    cfg.crop = crop;
    cfg.n_threads = threads;
    cfg.prefetch = 2;
    Loader *L = loader_open(&cfg, err, errlen);
    if (!L) return -1;
    Batch b;
    loader_batch_init(L, &b);
    double t0 = 0;
    int rc = 0;
    for (int step = 0; step < steps + 2 && !rc; step++) {
        if (step == 2) t0 = dod_now_seconds();   // two warm-up batches (thread start, page cache)
        rc = loader_get(L, step, &b, err, errlen);
    }
    double dt = dod_now_seconds() - t0;
    batch_free(&b);
    loader_close(L);
    return rc ? -1 : steps / dt;
}

static int bench_data_main(int argc, char **argv) {
    int threads = 2, crop = 256, steps = 40, size = 512, n_images = 6;
    double step_time = 0.5;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help")) {
            printf("dod-bench data [--threads 2] [--crop 256] [--steps 40] [--size 512] [--images 6]\n"
                   "               [--step-time 0.5]   seconds per training step the loader feeds\n"
                   "The default step time (SD 2.1, batch 7 at 256x256, one H100) is an assumption until measured.\n");
            return 0;
        }
        if (!v) {
            fprintf(stderr, "dod-bench data: %s needs a value\n", a);
            return 2;
        }
        if (!strcmp(a, "--threads")) threads = atoi(v);
        else if (!strcmp(a, "--crop")) crop = atoi(v);
        else if (!strcmp(a, "--steps")) steps = atoi(v);
        else if (!strcmp(a, "--size")) size = atoi(v);
        else if (!strcmp(a, "--images")) n_images = atoi(v);
        else if (!strcmp(a, "--step-time")) step_time = atof(v);
        else {
            fprintf(stderr, "dod-bench data: unknown option %s\n", a);
            return 2;
        }
        i++;
    }
    if (threads < 1 || crop < 8 || steps < 1 || size < 8 || n_images < 1 || !(step_time > 0)) {
        fprintf(stderr, "dod-bench data: need threads >= 1, crop >= 8, steps >= 1, size >= 8, images >= 1, step time > 0\n");
        return 2;
    }
    char dir[] = "/tmp/dod_bench_data_XXXXXX", clean[256], path[256], err[2048];
    if (!mkdtemp(dir)) {
        perror("dod-bench data: mkdtemp");
        return 1;
    }
    snprintf(clean, sizeof clean, "%s/clean", dir);
    snprintf(path, sizeof path, "%s/bench.h5", dir);
    mkdir(clean, 0755);
    make_clean_dir(clean, n_images, size);
    SynthOptions so = {.out_path = path, .clean_dir = clean, .n_kinds = 3, .kinds = {DEG_HAZE, DEG_RAIN, DEG_NOISE},
                       .seed = 1, .n_sigmas = 3, .sigmas = {15, 25, 50}, .deflate = 4, .quiet = 1};
    double t_synth = dod_now_seconds();
    int rc = synth_run(&so, err, sizeof err);
    t_synth = dod_now_seconds() - t_synth;
    double rate1 = rc ? -1 : run_loader(path, 0, crop, steps / 4 + 1, err, sizeof err);
    double rate = rate1 < 0 ? -1 : run_loader(path, threads, crop, steps, err, sizeof err);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "dod-bench data: could not remove %s\n", dir);
    if (rc || rate < 0) {
        fprintf(stderr, "dod-bench data: %s\n", err);
        return 1;
    }
    int batch = 7;
    double need = 1.0 / step_time;
    printf("dataset: %d images %dx%d, tasks dehaze+derain (stored) + denoise (noise on the fly), synth %.2f s\n",
           n_images, size, size, t_synth);
    printf("loader, no threads:  %7.1f crops/s  %6.2f batches/s  (crop %d, batch %d = 3+2+2)\n", rate1 * batch, rate1,
           crop, batch);
    printf("loader, %d threads:   %7.1f crops/s  %6.2f batches/s\n", threads, rate * batch, rate);
    printf("training consumes:   %7.1f crops/s  %6.2f batches/s  (step time %.3f s: SD 2.1 batch 7 on one H100, "
           "an assumption until measured; --step-time to change)\n",
           need * batch, need, step_time);
    printf("headroom: %.1fx  -> the loader %s the bottleneck of a training step\n", rate / need,
           rate >= need ? "is not" : "IS");
    return 0;
}
#else
static int bench_data_main(int argc, char **argv) {
    (void)argc;
    (void)argv;
    fprintf(stderr, "dod-bench data: built without HDF5; the loader is not available\n");
    return 1;
}
#endif

BENCH_REGISTER(data, "loader throughput (crops/s at 256x256, 2 threads) vs a training step", bench_data_main);
