// The batch feed (train/batch_feed.h) on the CPU: batches fetched ahead are the loader's batches, bit for
// bit, whatever the order of gets and prefetches (a prefetch of another index is fetched again), and a
// loader error while fetching ahead surfaces at the get of that batch, not at the prefetch.
#include "tests/check.h"
#include "tests/data_test_util.h"

#include "data/loader.h"
#include "data/pack.h"
#include "train/batch_feed.h"

static char root[256], file_path[512];

static Loader *open_loader(int crop, int resize_small) {
    LoaderConfig c;
    loader_config_default(&c);
    char err[1024];
    CHECK(loader_parse_tasks(&c, "dehaze:2,denoise:1", err, sizeof err) == 0, "%s", err);
    c.path = file_path;
    c.crop = crop;
    c.resize_small = resize_small;
    c.n_threads = 1;
    c.seed = 5;
    Loader *L = loader_open(&c, err, sizeof err);
    CHECK(L != NULL, "loader_open: %s", err);
    if (!L) exit(check_summary());
    return L;
}

// Batch b's lq / hq as the loader gives them, against the feed's tensors.
static void check_batch(Loader *ref, int64_t b, const Tensor *lq, const Tensor *hq) {
    Batch want;
    loader_batch_init(ref, &want);
    char err[1024];
    CHECK(loader_get(ref, b, &want, err, sizeof err) == 0, "reference batch %ld: %s", (long)b, err);
    size_t bytes = sizeof(float) * (size_t)want.n * 3 * (size_t)want.crop * (size_t)want.crop;
    CHECK(lq->device == DEV_CPU && lq->numel * sizeof(float) == bytes && lq->shape[0] == want.n && lq->shape[1] == 3 &&
              lq->shape[2] == want.crop && !memcmp(lq->data, want.lq, bytes) && !memcmp(hq->data, want.hq, bytes),
          "batch %ld differs from the loader's", (long)b);
    batch_free(&want);
}

int main(void) {
    char clean[512], err[1024];
    data_scratch_dir("batchfeed", root, sizeof root);
    snprintf(clean, sizeof clean, "%s/tests/fixtures/data", DOD_SOURCE_DIR);
    snprintf(file_path, sizeof file_path, "%s/feed.h5", root);
    SynthOptions s = {.out_path = file_path, .clean_dir = clean, .n_kinds = 2, .kinds = {DEG_HAZE, DEG_NOISE},
                      .seed = 3, .n_sigmas = 1, .sigmas = {25}, .deflate = 1, .quiet = 1};
    CHECK(synth_run(&s, err, sizeof err) == 0, "synth: %s", err);

    Loader *L = open_loader(32, 1), *ref = open_loader(32, 1);
    BatchFeed *f = batch_feed_new(L, DEV_CPU);
    // get 0; prefetch 1, get 1; prefetch 2, get 2; prefetch 5 but get 3 (fetched again), get 5, get 5 again
    int64_t order[][2] = {{-1, 0}, {1, 1}, {2, 2}, {5, 3}, {-1, 5}, {-1, 5}, {6, 6}};
    for (size_t i = 0; i < sizeof order / sizeof order[0]; i++) {
        if (order[i][0] >= 0) batch_feed_prefetch(f, order[i][0]);
        Tensor *lq, *hq;
        CHECK(batch_feed_get(f, order[i][1], &lq, &hq, err, sizeof err) == 0, "get %ld: %s", (long)order[i][1], err);
        check_batch(ref, order[i][1], lq, hq);
        ag_step_reset();
    }
    batch_feed_free(f);
    loader_close(L);
    loader_close(ref);

    // Crops larger than every image, no resizing: every batch fails in the loader. The prefetch keeps
    // the error; the get of that batch reports it (naming the sample), another get fetches anew.
    L = open_loader(4096, 0);
    f = batch_feed_new(L, DEV_CPU);
    batch_feed_prefetch(f, 1);
    Tensor *lq = NULL, *hq = NULL;
    err[0] = 0;
    CHECK(batch_feed_get(f, 1, &lq, &hq, err, sizeof err) == -1 && strstr(err, "4096") && !lq,
          "the prefetched batch's loader error at its get: '%s'", err);
    err[0] = 0;
    CHECK(batch_feed_get(f, 2, &lq, &hq, err, sizeof err) == -1 && err[0], "batch 2 fetched anew fails too: '%s'", err);
    batch_feed_free(f);
    loader_close(L);
    data_rm_rf(root);
    return check_summary();
}
