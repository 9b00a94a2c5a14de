// The training loop end to end with the toy model on a tiny generated dataset:
//  - 6 steps uninterrupted vs 3 steps, a stop (SIGINT through the real handler) that saves a
//    checkpoint, everything destroyed, --resume, 3 more steps: per-step losses, grad norms and the
//    final checkpoint's tensors must be bitwise identical;
//  - the run dir (config.ini, metrics.jsonl with each step once, pruned checkpoints, sample grids);
//  - resume refusals (config changed, no checkpoint, corrupt checkpoint) and a fresh run refusing a
//    run dir that has checkpoints; stage 2 from the stage-1 run (frozen bf16, only detail.* saved).
#include "tests/check.h"

#if defined(DOD_HAVE_HDF5) && defined(DOD_HAVE_INIPARSER)
#include <signal.h>

#include "layers/safetensors.h"
#include "train/loop.h"
#include "tests/train_test_util.h"

static char scratch[256];

static TrainConfig base_config(const char *data, const char *run_dir) {
    static const char *const sets[] = {
        "model.kind=toy", "model.toy_width=6", "model.frozen_dtype=f32", "data.tasks=dehaze:2,denoise:1",
        "data.crop=24", "data.threads=2", "optim.lr=2e-3", "optim.grad_accum=2", "optim.schedule=cosine",
        "optim.warmup=2", "optim.clip_norm=0.05", "loss.mse=1", "loss.ssim=0.5", "train.steps=6",
        "log.every=1", "checkpoint.every=2", "checkpoint.keep_last=2", "val.every=3", "val.images=3"};
    return train_test_config("base_config", sets, sizeof sets / sizeof sets[0], data, run_dir);
}

// Tensor bytes of two checkpoint files equal, name by name.
static bool same_checkpoint_tensors(const char *a, const char *b, int *count) {
    SafeTensors *sa = NULL, *sb = NULL;
    char e[ST_ERR_LEN];
    if (safetensors_open(a, &sa, e) || safetensors_open(b, &sb, e)) {
        fprintf(stderr, "%s\n", e);
        return false;
    }
    bool same = safetensors_count(sa) == safetensors_count(sb);
    for (int i = 0; same && i < safetensors_count(sa); i++) {
        const StEntry *x = safetensors_entry(sa, i), *y = safetensors_find(sb, x->name);
        same = y && x->end - x->begin == y->end - y->begin &&
               !memcmp(safetensors_bytes(sa, x), safetensors_bytes(sb, y), x->end - x->begin);
        if (!same) fprintf(stderr, "tensor %s differs\n", x->name);
    }
    *count = safetensors_count(sa);
    safetensors_close(sa);
    safetensors_close(sb);
    return same;
}

static int count_lines_with(const char *path, const char *needle) {
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    char line[4096];
    int n = 0;
    while (fgets(line, sizeof line, f)) n += strstr(line, needle) != NULL;
    fclose(f);
    return n;
}

int main(void) {
    data_scratch_dir("trainresume", scratch, sizeof scratch);
    char data[512], dir_a[512], dir_b[512], err[16384];
    snprintf(data, sizeof data, "%s/toy.h5", scratch);
    snprintf(dir_a, sizeof dir_a, "%s/run_a", scratch);
    snprintf(dir_b, sizeof dir_b, "%s/run_b", scratch);
    train_test_dataset(data, true, 1000);  // dehaze (stored LQ) + denoise
    train_install_signal_handlers();

    // A: six steps in one go.
    Record ra = {0};
    TrainConfig ca = base_config(data, dir_a);
    int rc = train_test_run(&ca, false, &ra, err, sizeof err);
    CHECK(rc == 0 && ra.n == 6, "uninterrupted run: rc %d, %d steps: %s", rc, ra.n, rc ? err : "");

    // B: three steps, SIGINT, then resume for three more.
    Record rb = {.stop_at = 3};
    TrainConfig cb = base_config(data, dir_b);
    rc = train_test_run(&cb, false, &rb, err, sizeof err);
    CHECK(rc == TRAIN_INTERRUPTED && rb.n == 3, "interrupted run: rc %d after %d steps", rc, rb.n);
    char path[1024];
    snprintf(path, sizeof path, "%s/checkpoints/step_0000003.safetensors", dir_b);
    CHECK(data_file_exists(path), "stop saved %s", path);
    // a fresh run into it is refused
    Record rx = {0};
    rc = train_test_run(&cb, false, &rx, err, sizeof err);
    CHECK(rc == -1 && strstr(err, "already holds checkpoints") && rx.n == 0, "fresh run into a used dir: %s", err);
    // resuming with a changed learning rate is refused, naming the key
    TrainConfig changed = cb;
    config_set(&changed, "optim.lr=1e-3", err, sizeof err);
    rc = train_test_run(&changed, true, &rx, err, sizeof err);
    CHECK(rc == -1 && strstr(err, "step_0000003.safetensors: the configuration differs") && strstr(err, "[optim] lr = 0.001 (checkpoint: 0.002)"),
          "changed config: %s", err);
    rb.stop_at = 0;
    rc = train_test_run(&cb, true, &rb, err, sizeof err);
    CHECK(rc == 0 && rb.n == 6, "resumed run: rc %d, %d steps: %s", rc, rb.n, rc ? err : "");

    for (int i = 0; i < 6 && i < ra.n && i < rb.n; i++) {
        CHECK(ra.s[i].step == i + 1 && rb.s[i].step == i + 1, "step numbering");
        CHECK(!memcmp(&ra.s[i].loss, &rb.s[i].loss, sizeof(double)) && !memcmp(&ra.s[i].mse, &rb.s[i].mse, sizeof(double)) &&
                  !memcmp(&ra.s[i].ssim, &rb.s[i].ssim, sizeof(double)) &&
                  !memcmp(&ra.s[i].grad_norm, &rb.s[i].grad_norm, sizeof(double)),
              "step %d: loss %.17g vs %.17g, grad norm %.17g vs %.17g", i + 1, ra.s[i].loss, rb.s[i].loss, ra.s[i].grad_norm,
              rb.s[i].grad_norm);
    }
    // the losses move (the model trains) and differ step to step (batches differ)
    CHECK(ra.n == 6 && ra.s[0].loss != ra.s[1].loss && ra.s[0].loss > 0, "losses are live");
    CHECK(ra.s[0].lr < ra.s[2].lr && ra.s[5].lr < ra.s[2].lr, "warm-up then cosine decay: %g %g %g", ra.s[0].lr, ra.s[2].lr, ra.s[5].lr);
    char fa[1024], fb[1024];
    snprintf(fa, sizeof fa, "%s/checkpoints/step_0000006.safetensors", dir_a);
    snprintf(fb, sizeof fb, "%s/checkpoints/step_0000006.safetensors", dir_b);
    int ntensors = 0;
    CHECK(same_checkpoint_tensors(fa, fb, &ntensors), "final parameters and optimizer state bitwise equal");
    CHECK(ntensors == 12, "4 trainable tensors + 8 moments (%d)", ntensors);

    // run dir layout
    snprintf(path, sizeof path, "%s/config.ini", dir_b);
    CHECK(data_file_exists(path), "config.ini");
    snprintf(path, sizeof path, "%s/checkpoints/step_0000002.safetensors", dir_a);
    CHECK(!data_file_exists(path), "keep_last 2 pruned step 2");
    snprintf(path, sizeof path, "%s/checkpoints/step_0000004.safetensors", dir_a);
    CHECK(data_file_exists(path), "keep_last 2 kept step 4");
    snprintf(path, sizeof path, "%s/samples/step_0000003.png", dir_a);
    Image grid = {0};
    CHECK(image_load(path, &grid, err, sizeof err) == 0 && grid.w == 3 * 40 && grid.h == 3 * 36, "grid %dx%d", grid.w, grid.h);
    image_free(&grid);
    snprintf(path, sizeof path, "%s/metrics.jsonl", dir_b);
    for (int s = 1; s <= 6; s++) {
        char needle[64];
        snprintf(needle, sizeof needle, "{\"step\": %d, \"loss\"", s);
        CHECK(count_lines_with(path, needle) == 1, "metrics line of step %d once", s);
    }
    CHECK(count_lines_with(path, "\"val_psnr\"") == 2, "two validation lines (steps 3 and 6)");

    // resume refusals: no checkpoint, corrupt checkpoint
    char dir_c[600];
    snprintf(dir_c, sizeof dir_c, "%s/run_none", scratch);
    TrainConfig cc = base_config(data, dir_c);
    rc = train_test_run(&cc, true, &rx, err, sizeof err);
    CHECK(rc == -1 && strstr(err, "no checkpoint to resume from"), "no checkpoint: %s", err);
    snprintf(path, sizeof path, "%s/checkpoints/step_0000006.safetensors", dir_b);
    FILE *f = fopen(path, "r+b");
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fclose(f);
    CHECK(truncate(path, size / 2) == 0, "truncate");
    TrainConfig more = cb;
    config_set(&more, "train.steps=8", err, sizeof err);
    rc = train_test_run(&more, true, &rx, err, sizeof err);
    CHECK(rc == -1 && strstr(err, "step_0000006.safetensors") && rx.n == 0, "corrupt checkpoint: %s", err);

    // stage 2 from run A: stage-1 tensors frozen in bf16, only detail.* trained and saved
    char dir_s2[600];
    snprintf(dir_s2, sizeof dir_s2, "%s/run_s2", scratch);
    TrainConfig c2 = base_config(data, dir_s2);
    char set[700];
    snprintf(set, sizeof set, "stage.init_from=%s", dir_a);
    config_set(&c2, "stage.stage=2", err, sizeof err);
    config_set(&c2, set, err, sizeof err);
    config_set(&c2, "model.frozen_dtype=bf16", err, sizeof err);
    config_set(&c2, "train.steps=2", err, sizeof err);
    Record r2 = {0};
    rc = train_test_run(&c2, false, &r2, err, sizeof err);
    CHECK(rc == 0 && r2.n == 2, "stage 2 run: %s", rc ? err : "");
    snprintf(path, sizeof path, "%s/checkpoints/step_0000002.safetensors", dir_s2);
    SafeTensors *st = NULL;
    char e[ST_ERR_LEN];
    CHECK(safetensors_open(path, &st, e) == ST_OK, "%s", e);
    if (st) {
        CHECK(safetensors_find(st, "detail.conv2.weight") && !safetensors_find(st, "conv_in.weight") && safetensors_count(st) == 12,
              "stage 2 checkpoint holds only detail.* (+ moments)");
        safetensors_close(st);
    }

    data_rm_rf(scratch);
    return check_summary();
}
#else
int main(void) {
    printf("test_train_resume: skipped (needs HDF5 and iniparser)\n");
    return check_summary();
}
#endif
