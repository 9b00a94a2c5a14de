// Validation during training (see train/validate.h). Needs HDF5 (the dataset reader).
#include "train/validate.h"

void val_result_print_tasks(const ValResult *res, FILE *f, const char *prefix) {
    for (int t = 0; t < res->n_tasks; t++) {
        const ValTaskResult *tr = &res->task[t];
        fprintf(f,
                "%s%s: %d image%s, restored PSNR %.3f dB SSIM %.4f | degraded input PSNR %.3f dB SSIM %.4f | "
                "gain %+.3f dB\n",
                prefix, tr->name, tr->images, tr->images == 1 ? "" : "s", tr->psnr, tr->ssim, tr->psnr_input,
                tr->ssim_input, tr->psnr - tr->psnr_input);
    }
    if (res->tasks_dropped)
        fprintf(f, "%s(%d images of tasks past the first %d counted in the means only)\n", prefix, res->tasks_dropped,
                VAL_MAX_TASKS);
}

#ifdef DOD_HAVE_HDF5
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/tensor.h"
#include "data/h5ds.h"
#include "eval/grid.h"
#include "eval/metrics.h"
#include "eval/restore.h"

struct Validator {
    H5ds *file;
    int n;
    int *task;
    int64_t *index;
};

Validator *validator_open(const char *path, int max_images, char *err, size_t errlen) {
    H5ds *f = h5ds_open(path, err, errlen);
    if (!f) return NULL;
    Validator *v = dod_calloc(sizeof *v, "validator");
    v->file = f;
    v->task = dod_calloc(sizeof(int) * (size_t)max_images, "validation list");
    v->index = dod_calloc(sizeof(int64_t) * (size_t)max_images, "validation list");
    int T = h5ds_n_tasks(f);
    for (int64_t round = 0; v->n < max_images; round++) {
        int added = 0;
        for (int t = 0; t < T && v->n < max_images; t++)
            if (round < h5ds_task(f, t)->count) {
                v->task[v->n] = t;
                v->index[v->n++] = round;
                added++;
            }
        if (!added) break;
    }
    if (v->n == 0) {
        snprintf(err, errlen, "%s: validation file has no samples", path);
        validator_close(v);
        return NULL;
    }
    return v;
}

void validator_close(Validator *v) {
    if (!v) return;
    h5ds_close(v->file);
    free(v->task);
    free(v->index);
    free(v);
}

// Restores image k whole (eval/restore.h), scores it and its degraded input against hq with the
// promptir profile (= score: psnr, ssim, psnr_input, ssim_input) and keeps the restored 8-bit image
// for the grid (= *out8, allocated). 0 or -1 with a message naming the image.
static int validate_image(Validator *v, TrainModel *m, int k, const Image *lq, const Image *hq, const MetricOpts *mo,
                          double score[4], Image *out8, char *err, size_t errlen) {
    const char *tname = h5ds_task(v->file, v->task[k])->name;
    const int H = hq->h, W = hq->w;
    const size_t n = (size_t)3 * H * W;
    const TileOptions whole = {0, 0};
    float *pred = dod_malloc(sizeof(float) * n, "validation output"), *gt = dod_malloc(sizeof(float) * n, "validation target");
    float *inp = dod_malloc(sizeof(float) * n, "validation input");
    char why[512];
    TrainModel host_io = train_model_host_io(m);   // lq in and the output back through host copies on CUDA
    int rc = restore_image(&host_io, lq, &whole, pred, NULL, why, sizeof why);
    if (!rc) {
        restore_output_to_unit(pred, n, pred);
        restore_image_to_unit(hq, gt);
        restore_image_to_unit(lq, inp);
        rc = metrics_pair_f32(pred, gt, H, W, 3, METRIC_CHW, mo, &score[0], &score[1], why, sizeof why) ||
             metrics_pair_f32(inp, gt, H, W, 3, METRIC_CHW, mo, &score[2], &score[3], why, sizeof why);
    }
    if (rc) {
        snprintf(err, errlen, "validation %s sample %lld: %s", tname, (long long)v->index[k], why);
        rc = -1;
    } else {
        *out8 = restore_unit_to_image(pred, H, W);
    }
    free(inp);
    free(pred);
    free(gt);
    return rc;
}

int validator_run(Validator *v, TrainModel *m, const char *grid_path, ValResult *res, char *err, size_t errlen) {
    memset(res, 0, sizeof *res);
    Image *lq = dod_calloc(sizeof(Image) * (size_t)v->n, "validation images");
    Image *hq = dod_calloc(sizeof(Image) * (size_t)v->n, "validation images");
    Image *out8 = dod_calloc(sizeof(Image) * (size_t)v->n, "validation outputs");
    int rc = 0;
    int slot_task[VAL_MAX_TASKS];   // the file's task index of each per-task slot
    MetricOpts mo = metrics_opts_default(METRIC_PROFILE_PROMPTIR);
    for (int k = 0; k < v->n && !rc; k++) {
        double sc[4];   // psnr, ssim, psnr_input, ssim_input (validate_image)
        if (h5ds_read_sample(v->file, v->task[k], v->index[k], &lq[k], &hq[k], err, errlen) ||
            validate_image(v, m, k, &lq[k], &hq[k], &mo, sc, &out8[k], err, errlen)) {
            rc = -1;
            break;
        }
        // accumulate (+=) the overall and per-task sums; divided below
        res->psnr += sc[0];
        res->ssim += sc[1];
        res->psnr_input += sc[2];
        res->ssim_input += sc[3];
        res->images++;
        int slot = 0;
        while (slot < res->n_tasks && slot_task[slot] != v->task[k]) slot++;
        if (slot == res->n_tasks && slot < VAL_MAX_TASKS) {
            slot_task[slot] = v->task[k];
            snprintf(res->task[slot].name, sizeof res->task[slot].name, "%s", h5ds_task(v->file, v->task[k])->name);
            res->n_tasks++;
        }
        if (slot < res->n_tasks) {
            ValTaskResult *tr = &res->task[slot];
            tr->psnr += sc[0];
            tr->ssim += sc[1];
            tr->psnr_input += sc[2];
            tr->ssim_input += sc[3];
            tr->images++;
        } else {
            res->tasks_dropped++;
        }
    }
    if (!rc && res->images) {
        res->psnr /= res->images;
        res->ssim /= res->images;
        res->psnr_input /= res->images;
        res->ssim_input /= res->images;
        for (int t = 0; t < res->n_tasks; t++) {
            ValTaskResult *tr = &res->task[t];
            tr->psnr /= tr->images;
            tr->ssim /= tr->images;
            tr->psnr_input /= tr->images;
            tr->ssim_input /= tr->images;
        }
    }
    if (!rc && grid_path) {   // one row per image: lq | out | hq
        const Image **cells = dod_malloc(sizeof(Image *) * 3 * (size_t)v->n, "validation grid");
        for (int k = 0; k < v->n; k++) {
            cells[3 * k] = &lq[k];
            cells[3 * k + 1] = &out8[k];
            cells[3 * k + 2] = &hq[k];
        }
        Image grid = grid_make(cells, v->n, 3);
        if (image_save_png(grid_path, &grid, err, errlen)) rc = -1;
        image_free(&grid);
        free(cells);
    }
    for (int k = 0; k < v->n; k++) {
        image_free(&lq[k]);
        image_free(&hq[k]);
        image_free(&out8[k]);
    }
    free(lq);
    free(hq);
    free(out8);
    return rc;
}
#endif
