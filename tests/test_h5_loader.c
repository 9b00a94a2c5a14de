// The threaded loader: batches are a pure function of (seed, rank, world, step) (same across thread
// counts, prefetch depths and call orders, different across ranks and seeds), per-task counts,
// crops that really are (flipped) crops of the stored images with LQ/HQ aligned, noise on the fly,
// epoch coverage and rank sharding, resizing of small images, and configuration errors.
#include "tests/check.h"
#include "tests/data_test_util.h"

#include "data/h5ds.h"
#include "data/loader.h"
#include "data/pack.h"

#define CROP 48

static char root[256], file_path[512];

// Dataset: the real-photo fixtures plus generated images (sizes 64..150) synthesised into derain
// and dehaze, and a denoise recipe task (sigmas 15, 50).
static void build_dataset(void) {
    char clean[512], err[2048];
    data_scratch_dir("h5loader", root, sizeof root);
    data_mkdir(root, "clean", clean, sizeof clean);
    for (int k = 0; k < DATA_N_FIXTURES; k++) {
        char src[1024], dst[1024];
        data_fixture_path(data_fixture_names[k], src, sizeof src);
        snprintf(dst, sizeof dst, "%s/%s", clean, data_fixture_names[k]);
        data_copy_file(src, dst);
    }
    for (int k = 0; k < 6; k++) {
        char dst[1024];
        snprintf(dst, sizeof dst, "%s/gen%02d.png", clean, k);
        Image img = data_generated_image(64 + 17 * k, 150 - 13 * k, 100 + k);
        image_save_png(dst, &img, err, sizeof err);
        image_free(&img);
    }
    snprintf(file_path, sizeof file_path, "%s/mix.h5", root);
    SynthOptions s = {.out_path = file_path, .clean_dir = clean, .n_kinds = 3,
                      .kinds = {DEG_RAIN, DEG_HAZE, DEG_NOISE}, .seed = 3, .n_sigmas = 2, .sigmas = {15, 50},
                      .deflate = 1, .quiet = 1};
    CHECK(synth_run(&s, err, sizeof err) == 0, "synth: %s", err);
}

static LoaderConfig config(int threads, int prefetch, int rank, int world, uint64_t seed) {
    LoaderConfig c;
    loader_config_default(&c);
    char err[256];
    CHECK(loader_parse_tasks(&c, "dehaze:3,derain:2,denoise:2", err, sizeof err) == 0, "%s", err);
    c.path = file_path;
    c.crop = CROP;
    c.n_threads = threads;
    c.prefetch = prefetch;
    c.rank = rank;
    c.world_size = world;
    c.seed = seed;
    return c;
}

static int batches_equal(const Batch *a, const Batch *b) {
    size_t px = (size_t)a->n * a->crop * a->crop * 3;
    return a->n == b->n && !memcmp(a->lq_u8, b->lq_u8, px) && !memcmp(a->hq_u8, b->hq_u8, px) &&
           !memcmp(a->lq, b->lq, px * 4) && !memcmp(a->hq, b->hq, px * 4) &&
           !memcmp(a->sample, b->sample, sizeof(int64_t) * a->n) && !memcmp(a->task, b->task, sizeof(int) * a->n) &&
           !memcmp(a->sigma, b->sigma, sizeof(float) * a->n);
}

// Fetches steps [0, n) of a loader into out[] (each batch_init'ed here) in the given order.
static void fetch_steps(const LoaderConfig *c, const int64_t *order, int n, Batch *out) {
    char err[1024];
    Loader *L = loader_open(c, err, sizeof err);
    CHECK(L != NULL, "loader_open: %s", err);
    if (!L) exit(check_summary());
    for (int i = 0; i < n; i++) {
        loader_batch_init(L, &out[order[i]]);
        CHECK(loader_get(L, order[i], &out[order[i]], err, sizeof err) == 0, "step %lld: %s", (long long)order[i], err);
        CHECK(out[order[i]].step == order[i], "batch step %lld != %lld", (long long)out[order[i]].step,
              (long long)order[i]);
    }
    loader_close(L);
}

#define NSTEPS 6

static void test_determinism(void) {
    int64_t seq[NSTEPS] = {0, 1, 2, 3, 4, 5}, jumpy[NSTEPS] = {3, 4, 0, 5, 1, 2};
    Batch a[NSTEPS], b[NSTEPS], c[NSTEPS], r1[NSTEPS], s2[NSTEPS];
    LoaderConfig ca = config(2, 2, 0, 2, 11), cb = config(0, 1, 0, 2, 11), cc = config(3, 4, 0, 2, 11);
    LoaderConfig cr = config(2, 2, 1, 2, 11), cs = config(2, 2, 0, 2, 12);
    fetch_steps(&ca, seq, NSTEPS, a);
    fetch_steps(&cb, seq, NSTEPS, b);     // no threads
    fetch_steps(&cc, jumpy, NSTEPS, c);   // 3 threads, prefetch 4, resumed out of order
    fetch_steps(&cr, seq, NSTEPS, r1);    // rank 1
    fetch_steps(&cs, seq, NSTEPS, s2);    // another seed
    for (int s = 0; s < NSTEPS; s++) {
        CHECK(batches_equal(&a[s], &b[s]), "step %d: 2 threads vs none differ", s);
        CHECK(batches_equal(&a[s], &c[s]), "step %d: differs when resumed out of order with 3 threads", s);
        CHECK(!batches_equal(&a[s], &r1[s]), "step %d: ranks 0 and 1 got the same batch", s);
        CHECK(!batches_equal(&a[s], &s2[s]), "step %d: seeds 11 and 12 got the same batch", s);
        if (s > 0) CHECK(!batches_equal(&a[s], &a[s - 1]), "steps %d and %d are equal", s - 1, s);
        // per-task counts: 3 dehaze, 2 derain, 2 denoise, in config order
        int want_task[7] = {0, 0, 0, 1, 1, 2, 2}, ok = a[s].n == 7;
        for (int k = 0; ok && k < 7; k++) ok = a[s].task[k] == want_task[k];
        CHECK(ok, "step %d: task layout", s);
        // ranks never share a sample of a task within an epoch (11 samples per task): position
        // p = (step * world + rank) * count + j, epoch p / 11
        int first[3] = {0, 3, 5}, count[3] = {3, 2, 2};
        for (int k = 0; k < 7; k++)
            for (int j = 0; j < 7; j++) {
                int t = a[s].task[k];
                int64_t pk = ((int64_t)s * 2 + 0) * count[t] + (k - first[t]);
                int64_t pj = ((int64_t)s * 2 + 1) * count[t] + (j - first[t]);
                if (r1[s].task[j] == t && pk / 11 == pj / 11)
                    CHECK(a[s].sample[k] != r1[s].sample[j], "step %d: ranks 0 and 1 share sample %lld of task %d",
                          s, (long long)a[s].sample[k], t);
            }
        // sigma only on the recipe task, from its list
        for (int k = 0; k < 7; k++)
            CHECK(k < 5 ? a[s].sigma[k] == 0 : (a[s].sigma[k] == 15 || a[s].sigma[k] == 50), "sigma %g at %d",
                  a[s].sigma[k], k);
    }
    for (int s = 0; s < NSTEPS; s++) {
        batch_free(&a[s]);
        batch_free(&b[s]);
        batch_free(&c[s]);
        batch_free(&r1[s]);
        batch_free(&s2[s]);
    }
}

// Finds crop (of side CROP, HWC) in img at some position under some flip; returns the flip state
// (bit 0 horizontal, bit 1 vertical) and position, or -1.
static int locate_crop(const Image *img, const uint8_t *crop, int *py, int *px) {
    for (int flip = 0; flip < 4; flip++)
        for (int y = 0; y + CROP <= img->h; y++)
            for (int x = 0; x + CROP <= img->w; x++) {
                int same = 1;
                for (int r = 0; r < CROP && same; r++)
                    for (int q = 0; q < CROP && same; q++) {
                        int sr = flip & 2 ? CROP - 1 - r : r, sq = flip & 1 ? CROP - 1 - q : q;
                        same = !memcmp(crop + ((size_t)r * CROP + q) * 3,
                                       img->pix + ((size_t)(y + sr) * img->w + x + sq) * 3, 3);
                    }
                if (same) {
                    *py = y;
                    *px = x;
                    return flip;
                }
            }
    return -1;
}

static void test_crop_contents(void) {
    LoaderConfig c = config(2, 2, 0, 1, 5);
    char err[1024];
    Loader *L = loader_open(&c, err, sizeof err);
    CHECK(L != NULL, "%s", err);
    if (!L) return;
    H5ds *f = h5ds_open(file_path, err, sizeof err);
    Batch b;
    loader_batch_init(L, &b);
    int flips_seen = 0;
    double noise_sq[2] = {0, 0};
    long noise_n[2] = {0, 0};
    for (int step = 0; step < 3; step++) {
        CHECK(loader_get(L, step, &b, err, sizeof err) == 0, "%s", err);
        for (int k = 0; k < b.n; k++) {
            int ft = h5ds_find_task(f, c.tasks[b.task[k]].name, NULL, 0);
            Image lq, hq;
            CHECK(h5ds_read_image(f, ft, b.sample[k], H5DS_HQ, &hq, err, sizeof err) == 0, "%s", err);
            const uint8_t *hq_crop = b.hq_u8 + (size_t)k * CROP * CROP * 3, *lq_crop = b.lq_u8 + (size_t)k * CROP * CROP * 3;
            int y, x, flip = locate_crop(&hq, hq_crop, &y, &x);
            CHECK(flip >= 0, "step %d sample %d: HQ crop is not a (flipped) crop of sample %lld", step, k,
                  (long long)b.sample[k]);
            flips_seen |= 1 << (flip < 0 ? 0 : flip);
            if (flip >= 0 && h5ds_task(f, ft)->lq_mode == LQ_STORED) {   // the LQ crop is the same window
                CHECK(h5ds_read_image(f, ft, b.sample[k], H5DS_LQ, &lq, err, sizeof err) == 0, "%s", err);
                int ly, lx;
                CHECK(locate_crop(&lq, lq_crop, &ly, &lx) >= 0 && ly == y && lx == x, "LQ crop misaligned");
                image_free(&lq);
            } else if (flip >= 0) {
                int s = b.sigma[k] == 50;
                for (int i = 0; i < CROP * CROP * 3; i++)
                    if (hq_crop[i] > 60 && hq_crop[i] < 195) {
                        double d = (double)lq_crop[i] - hq_crop[i] + 0.5;
                        noise_sq[s] += d * d;
                        noise_n[s]++;
                    }
            }
            // the float planes are the bytes, NCHW, scaled to [-1, 1]
            int fok = 1;
            for (int ch = 0; ch < 3; ch++)
                for (int i = 0; i < CROP * CROP; i += 97) {
                    float want = hq_crop[i * 3 + ch] / 127.5f - 1.0f, got = b.hq[((size_t)k * 3 + ch) * CROP * CROP + i];
                    float want_l = lq_crop[i * 3 + ch] / 127.5f - 1.0f, got_l = b.lq[((size_t)k * 3 + ch) * CROP * CROP + i];
                    fok &= fabsf(want - got) < 1e-6f && fabsf(want_l - got_l) < 1e-6f;
                }
            CHECK(fok, "float NCHW planes do not match the bytes");
            image_free(&hq);
        }
    }
    CHECK(__builtin_popcount(flips_seen) >= 2, "flips never vary (seen mask %x)", flips_seen);
    if (noise_n[0]) CHECK_NEAR(sqrt(noise_sq[0] / noise_n[0]), 15.0, 2.5, "sigma 15 noise std");
    if (noise_n[1]) CHECK_NEAR(sqrt(noise_sq[1] / noise_n[1]), 50.0, 6.0, "sigma 50 noise std");
    CHECK(noise_n[0] + noise_n[1] > 0, "no denoise samples seen");
    batch_free(&b);
    h5ds_close(f);
    loader_close(L);
}

// Over one epoch (n positions of a task, all ranks together) every sample is seen exactly once.
static void test_epoch_coverage(void) {
    char err[1024];
    for (int world = 1; world <= 2; world++) {
        int64_t n = 0;
        char *seen = NULL;
        int steps_needed = 0;
        for (int rank = 0; rank < world; rank++) {
            LoaderConfig c = config(0, 1, rank, world, 9);
            loader_parse_tasks(&c, "derain:3", err, sizeof err);
            c.crop = 16;
            Loader *L = loader_open(&c, err, sizeof err);
            CHECK(L != NULL, "%s", err);
            if (!L) return;
            n = loader_task_samples(L, 0);
            if (!seen) seen = calloc(n, 1);
            steps_needed = (int)((n + 3 * world - 1) / (3 * world));
            Batch b;
            loader_batch_init(L, &b);
            for (int step = 0; step < steps_needed; step++) {
                loader_get(L, step, &b, err, sizeof err);
                for (int j = 0; j < 3; j++) {
                    int64_t p = ((int64_t)step * world + rank) * 3 + j;
                    if (p < n) seen[b.sample[j]]++;
                }
            }
            batch_free(&b);
            loader_close(L);
        }
        int all_once = 1;
        for (int64_t i = 0; i < n; i++) all_once &= seen[i] == 1;
        CHECK(all_once, "world %d: epoch 0 does not visit each of the %lld samples once", world, (long long)n);
        free(seen);
    }
}

static void test_small_images_and_errors(void) {
    char err[1024];
    // crop 128 > hubble (72x96) and others: resized up by default ...
    LoaderConfig c = config(1, 1, 0, 1, 1);
    loader_parse_tasks(&c, "derain:4", err, sizeof err);
    c.crop = 128;
    Loader *L = loader_open(&c, err, sizeof err);
    CHECK(L != NULL, "%s", err);
    Batch b;
    int ok = 1;
    if (L) {
        loader_batch_init(L, &b);
        for (int step = 0; step < 4 && ok; step++) ok = loader_get(L, step, &b, err, sizeof err) == 0;
        CHECK(ok && b.crop == 128, "resize_small: %s", err);
        batch_free(&b);
        loader_close(L);
    }
    // ... or an error naming the sample when resize_small is off
    c.resize_small = 0;
    L = loader_open(&c, err, sizeof err);
    if (L) {
        loader_batch_init(L, &b);
        int failed = 0;
        for (int step = 0; step < 4 && !failed; step++) failed = loader_get(L, step, &b, err, sizeof err) != 0;
        CHECK(failed && strstr(err, "smaller than the 128x128 crop") && strstr(err, "derain/"), "small: %s", err);
        // the loader keeps working after a failed batch
        c.crop = 16;
        batch_free(&b);
        loader_close(L);
    }
    // a missing task names what is there
    c = config(1, 1, 0, 1, 1);
    loader_parse_tasks(&c, "derain:1,deblur:2", err, sizeof err);
    CHECK(!loader_open(&c, err, sizeof err) && strstr(err, "no task 'deblur'") && strstr(err, "dehaze"),
          "missing task: %s", err);
    // a bad rank, a bad task list, a missing file
    c = config(1, 1, 2, 2, 1);
    CHECK(!loader_open(&c, err, sizeof err) && strstr(err, "rank 2 of 2"), "rank: %s", err);
    CHECK(loader_parse_tasks(&c, "derain:0", err, sizeof err) == -1 && strstr(err, "derain:0"), "parse: %s", err);
    CHECK(loader_parse_tasks(&c, "derain", err, sizeof err) == -1, "parse without count");
    c = config(1, 1, 0, 1, 1);
    c.path = "/nonexistent/x.h5";
    CHECK(!loader_open(&c, err, sizeof err) && strstr(err, "/nonexistent/x.h5"), "missing file: %s", err);
}

int main(void) {
    build_dataset();
    test_determinism();
    test_crop_contents();
    test_epoch_coverage();
    test_small_images_and_errors();
    data_rm_rf(root);
    return check_summary();
}
