// Helpers shared by the training-loop tests (test_train_resume.c, test_train_device.c): a generated
// dataset, a per-step recorder that can stop the run with SIGINT, a toy configuration from `--set`
// style overrides, and one train_run call. Include after tests/check.h, inside the tests' HDF5 +
// iniparser guard.
#pragma once
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "data/h5ds.h"
#include "tests/data_test_util.h"
#include "train/loop.h"

// A dataset of 3 generated 40 x 36 images (keys key0, key0 + 1, key0 + 2) under a denoise task
// (gaussian_noise, sigma 15 or 25), preceded, when with_dehaze, by a dehaze task storing each
// image's hazy blend as its LQ. Fatal naming the file on failure.
static inline void train_test_dataset(const char *path, bool with_dehaze, uint64_t key0) {
    char err[512];
    H5ds *f = h5ds_begin_write(path, 0, err, sizeof err);
    if (!f) dod_fatal("train_test_dataset", "%s", err);
    int th = with_dehaze ? h5ds_define_task(f, "dehaze", LQ_STORED, NULL, 0, err, sizeof err) : -1;
    double sig[2] = {15, 25};
    int tn = h5ds_define_task(f, "denoise", LQ_GAUSSIAN_NOISE, sig, 2, err, sizeof err);
    for (int i = 0; i < 3; i++) {
        Image hq = data_generated_image(40, 36, key0 + (uint64_t)i), lq = {0};
        int rc = 0;
        if (with_dehaze) {
            lq = image_alloc(40, 36, 3);
            for (int p = 0; p < 40 * 36 * 3; p++) lq.pix[p] = (uint8_t)(hq.pix[p] * 0.6 + 90);
            rc = h5ds_append_sample(f, th, &hq, &lq, NULL, err, sizeof err) < 0;
        }
        if (rc || h5ds_append_sample(f, tn, &hq, NULL, NULL, err, sizeof err) < 0) dod_fatal("train_test_dataset", "%s", err);
        image_free(&hq);
        image_free(&lq);  // nothing without dehaze
    }
    if (h5ds_commit(f, err, sizeof err)) dod_fatal("train_test_dataset", "%s", err);
}

typedef struct {
    TrainStepStats s[16];
    int n;
    int64_t stop_at;   // raise SIGINT after this step (0: never)
} Record;

// The loop's on_step callback: records (=) the step's stats, stops the run at r->stop_at.
static inline void record_step(void *ctx, const TrainStepStats *s) {
    Record *r = ctx;
    if (r->n < 16) r->s[r->n++] = *s;
    if (s->step == r->stop_at) raise(SIGINT);
}

// Defaults, then each "section.key=value" of sets, then the data / run paths (=, a value); fatal
// naming `who` on a bad override.
static inline TrainConfig train_test_config(const char *who, const char *const *sets, size_t n_sets, const char *data,
                                            const char *run_dir) {
    TrainConfig c;
    char err[CFG_ERR_LEN];
    config_defaults(&c);
    for (size_t i = 0; i < n_sets; i++)
        if (config_set(&c, sets[i], err, sizeof err)) dod_fatal(who, "%s", err);
    snprintf(c.train_file, sizeof c.train_file, "%s", data);
    snprintf(c.val_file, sizeof c.val_file, "%s", data);
    snprintf(c.run_dir, sizeof c.run_dir, "%s", run_dir);
    if (config_validate(&c, err, sizeof err)) dod_fatal(who, "%s", err);
    return c;
}

// One quiet train_run of c (fresh or --resume), recording every step into rec. 0 on success.
static inline int train_test_run(const TrainConfig *c, bool resume, Record *rec, char *err, size_t errlen) {
    TrainOptions o;
    memset(&o, 0, sizeof o);
    o.cfg = *c;
    o.resume = resume;
    o.quiet = true;
    o.on_step = record_step;
    o.on_step_ctx = rec;
    return train_run(&o, err, errlen);
}
