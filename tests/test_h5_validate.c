// Validation during training (eval/validate.h): overall and per-task means of restored and
// degraded-input PSNR/SSIM. A two-task dataset of flat images whose errors are known in closed form,
// restored by a model that subtracts a constant, so every PSNR is predictable:
//   dehaze: hq 100, lq 110 (input error 10 levels), derain: hq 60, lq 80 (error 20), 3 samples each
//   but only 4 images validated (round-robin: dehaze 0, derain 0, dehaze 1, derain 1);
//   the model outputs lq - 5 levels, so the restored errors are 5 and 15 levels.
#include "tests/check.h"

#include <stdio.h>

#include "data/h5ds.h"
#include "eval/validate.h"

static void make_dataset(const char *path) {
    char err[512];
    remove(path);
    H5ds *f = h5ds_begin_write(path, 0, err, sizeof err);
    if (!f) dod_fatal("make_dataset", "%s", err);
    int th = h5ds_define_task(f, "dehaze", LQ_STORED, NULL, 0, err, sizeof err);
    int tr = h5ds_define_task(f, "derain", LQ_STORED, NULL, 0, err, sizeof err);
    if (th < 0 || tr < 0) dod_fatal("make_dataset", "%s", err);
    for (int i = 0; i < 3; i++) {
        Image hq1 = image_alloc(24, 16, 3), lq1 = image_alloc(24, 16, 3);
        Image hq2 = image_alloc(24, 16, 3), lq2 = image_alloc(24, 16, 3);
        memset(hq1.pix, 100, 24 * 16 * 3);
        memset(lq1.pix, 110, 24 * 16 * 3);
        memset(hq2.pix, 60, 24 * 16 * 3);
        memset(lq2.pix, 80, 24 * 16 * 3);
        if (h5ds_append_sample(f, th, &hq1, &lq1, NULL, err, sizeof err) < 0 ||
            h5ds_append_sample(f, tr, &hq2, &lq2, NULL, err, sizeof err) < 0)
            dod_fatal("make_dataset", "%s", err);
        image_free(&hq1);
        image_free(&lq1);
        image_free(&hq2);
        image_free(&lq2);
    }
    if (h5ds_commit(f, err, sizeof err)) dod_fatal("make_dataset", "%s", err);
}

// out = lq - 5 levels (= new arena tensor), in the [-1, 1] scale of the loop.
static Tensor *minus5_forward(void *self, Tensor *lq, uint64_t noise_seed, bool training) {
    (void)self, (void)noise_seed, (void)training;
    Tensor *out = tensor_new4(lq->shape[0], lq->shape[1], lq->shape[2], lq->shape[3]);
    const float *x = tensor_f32(lq);
    float *y = tensor_data_f32(out);
    for (int64_t i = 0; i < out->numel; i++) y[i] = x[i] - 5.0f / 127.5f;
    return out;
}

// minus5_forward with one infinite value (=, new arena tensor).
static Tensor *inf_forward(void *self, Tensor *lq, uint64_t noise_seed, bool training) {
    Tensor *out = minus5_forward(self, lq, noise_seed, training);
    tensor_data_f32(out)[7] = INFINITY;
    return out;
}

static double psnr_levels(double err) { return 10.0 * log10(255.0 * 255.0 / (err * err)); }

int main(void) {
    const char *path = "test_h5_validate.h5";
    make_dataset(path);
    char err[512];
    Model m = {.self = NULL, .kind = "minus5", .forward = minus5_forward};

    Validator *v = validator_open(path, 4, err, sizeof err);
    CHECK(v != NULL, "validator_open: %s", err);
    ValResult r;
    CHECK(validator_run(v, &m, NULL, &r, err, sizeof err) == 0, "validator_run: %s", err);
    validator_close(v);

    CHECK(r.all.images == 4, "images %d", r.all.images);
    CHECK(r.n_tasks == 2, "tasks %d", r.n_tasks);
    CHECK(r.tasks_dropped == 0, "dropped %d", r.tasks_dropped);
    CHECK(strcmp(r.task[0].name, "dehaze") == 0 && strcmp(r.task[1].name, "derain") == 0, "names %s %s",
          r.task[0].name, r.task[1].name);
    CHECK(r.task[0].scores.images == 2 && r.task[1].scores.images == 2, "per-task images %d %d", r.task[0].scores.images,
          r.task[1].scores.images);
    // float32 images: the restored error is 5 levels up to rounding of lq / 127.5 - 1 and back.
    CHECK_NEAR(r.task[0].scores.psnr_input, psnr_levels(10), 1e-3, "dehaze input PSNR");
    CHECK_NEAR(r.task[1].scores.psnr_input, psnr_levels(20), 1e-3, "derain input PSNR");
    CHECK_NEAR(r.task[0].scores.psnr, psnr_levels(5), 1e-3, "dehaze restored PSNR");
    CHECK_NEAR(r.task[1].scores.psnr, psnr_levels(15), 1e-3, "derain restored PSNR");
    CHECK_NEAR(r.all.psnr, 0.5 * (psnr_levels(5) + psnr_levels(15)), 1e-3, "mean restored PSNR");
    CHECK_NEAR(r.all.psnr_input, 0.5 * (psnr_levels(10) + psnr_levels(20)), 1e-3, "mean input PSNR");
    CHECK_NEAR(r.all.ssim, 0.5 * (r.task[0].scores.ssim + r.task[1].scores.ssim), 1e-9, "mean SSIM = mean of task SSIMs");
    CHECK_NEAR(r.all.ssim_input, 0.5 * (r.task[0].scores.ssim_input + r.task[1].scores.ssim_input), 1e-9, "mean input SSIM");
    CHECK(r.task[0].scores.ssim > r.task[0].scores.ssim_input && r.task[0].scores.ssim <= 1.0,
          "dehaze SSIM %.6f vs input %.6f", r.task[0].scores.ssim, r.task[0].scores.ssim_input);

    // The per-task report: one line per task, names, counts and gains as computed.
    char buf[2048] = {0};
    FILE *f = fmemopen(buf, sizeof buf - 1, "w");
    val_result_print_tasks(&r, f, "> ");
    fclose(f);
    char want[256];
    snprintf(want, sizeof want, "> dehaze: 2 images, restored PSNR %.3f dB", psnr_levels(5));
    CHECK(strstr(buf, want) != NULL, "report lacks '%s':\n%s", want, buf);
    snprintf(want, sizeof want, "gain %+.3f dB\n", psnr_levels(15) - psnr_levels(20));
    CHECK(strstr(buf, want) != NULL, "report lacks '%s':\n%s", want, buf);
    int lines = 0;
    for (const char *p = buf; *p; p++) lines += *p == '\n';
    CHECK(lines == 2, "report has %d lines:\n%s", lines, buf);

    // One image: only the first task appears.
    v = validator_open(path, 1, err, sizeof err);
    CHECK(v && validator_run(v, &m, NULL, &r, err, sizeof err) == 0, "validator_run(1): %s", err);
    validator_close(v);
    CHECK(r.n_tasks == 1 && r.task[0].scores.images == 1, "one image: tasks %d images %d", r.n_tasks, r.task[0].scores.images);

    // A non-finite output fails validation, naming the task and sample (it is not clamped and scored).
    m.forward = inf_forward;
    v = validator_open(path, 1, err, sizeof err);
    CHECK(v && validator_run(v, &m, NULL, &r, err, sizeof err) != 0 && strstr(err, "dehaze sample 0") &&
              strstr(err, "non-finite"),
          "inf output: %s", err);
    validator_close(v);
    remove(path);
    return check_summary();
}
