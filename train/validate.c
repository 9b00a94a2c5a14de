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
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/ops.h"
#include "data/h5ds.h"
#include "eval/metrics.h"

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

static uint8_t to_u8(float x) {   // [-1, 1] -> 0..255, rounded
    float y = (x + 1.0f) * 127.5f;
    return (uint8_t)(y < 0 ? 0 : y > 255 ? 255 : lrintf(y));
}

// Copies an h x w RGB image into the grid at (x0, y0) (=).
static void blit(Image *grid, const uint8_t *src, int w, int h, int x0, int y0) {
    for (int y = 0; y < h; y++) memcpy(grid->pix + ((size_t)(y0 + y) * grid->w + x0) * 3, src + (size_t)y * w * 3, (size_t)w * 3);
}

int validator_run(Validator *v, TrainModel *m, const char *grid_path, ValResult *res, char *err, size_t errlen) {
    memset(res, 0, sizeof *res);
    Image *lq = dod_calloc(sizeof(Image) * (size_t)v->n, "validation images");
    Image *hq = dod_calloc(sizeof(Image) * (size_t)v->n, "validation images");
    uint8_t **out8 = dod_calloc(sizeof(uint8_t *) * (size_t)v->n, "validation outputs");
    int rc = 0, gw = 0, gh = 0;
    int slot_task[VAL_MAX_TASKS];   // the file's task index of each per-task slot
    MetricOpts mo = metrics_opts_default(METRIC_PROFILE_PROMPTIR);
    for (int k = 0; k < v->n && !rc; k++) {
        const char *tname = h5ds_task(v->file, v->task[k])->name;
        if (h5ds_read_sample(v->file, v->task[k], v->index[k], &lq[k], &hq[k], err, errlen)) {
            rc = -1;
            break;
        }
        int H = hq[k].h, W = hq[k].w;
        size_t plane = (size_t)H * W;
        Tensor *x = tensor_new4(1, 3, H, W);
        float *xd = tensor_data_f32(x);
        for (size_t p = 0; p < plane; p++)
            for (int c = 0; c < 3; c++) xd[c * plane + p] = lq[k].pix[p * 3 + c] / 127.5f - 1.0f;
        bool prev = ag_set_grad_enabled(false);
        Tensor *y = m->forward(m->self, x, 0, false);
        ag_set_grad_enabled(prev);
        if (y->ndim != 4 || y->shape[0] != 1 || y->shape[1] != 3 || y->shape[2] != H || y->shape[3] != W) {
            snprintf(err, errlen, "validation %s sample %lld: model output %s, expected [1, 3, %d, %d]", tname,
                     (long long)v->index[k], shape_str(y), H, W);
            rc = -1;
            break;
        }
        const float *yd = tensor_f32(y);
        float *pred = dod_malloc(sizeof(float) * plane * 3, "validation output"), *gt = dod_malloc(sizeof(float) * plane * 3, "validation target");
        float *inp = dod_malloc(sizeof(float) * plane * 3, "validation input");
        out8[k] = dod_malloc(plane * 3, "validation output");
        for (size_t p = 0; p < plane; p++)
            for (int c = 0; c < 3; c++) {
                float o = yd[c * plane + p];
                o = o < -1 ? -1 : o > 1 ? 1 : o;
                pred[c * plane + p] = (o + 1.0f) * 0.5f;
                gt[c * plane + p] = hq[k].pix[p * 3 + c] / 255.0f;
                inp[c * plane + p] = lq[k].pix[p * 3 + c] / 255.0f;
                out8[k][p * 3 + c] = to_u8(o);
            }
        double psnr, ssim, psnr_in, ssim_in;
        char merr[512];
        if (metrics_pair_f32(pred, gt, H, W, 3, METRIC_CHW, &mo, &psnr, &ssim, merr, sizeof merr) ||
            metrics_pair_f32(inp, gt, H, W, 3, METRIC_CHW, &mo, &psnr_in, &ssim_in, merr, sizeof merr)) {
            snprintf(err, errlen, "validation %s sample %lld: %s", tname, (long long)v->index[k], merr);
            rc = -1;
        } else {
            res->psnr += psnr;
            res->ssim += ssim;
            res->psnr_input += psnr_in;
            res->ssim_input += ssim_in;
            res->images++;
            int slot = 0;
            while (slot < res->n_tasks && slot_task[slot] != v->task[k]) slot++;
            if (slot == res->n_tasks && slot < VAL_MAX_TASKS) {
                slot_task[slot] = v->task[k];
                snprintf(res->task[slot].name, sizeof res->task[slot].name, "%s", tname);
                res->n_tasks++;
            }
            if (slot < res->n_tasks) {
                ValTaskResult *tr = &res->task[slot];
                tr->psnr += psnr;
                tr->ssim += ssim;
                tr->psnr_input += psnr_in;
                tr->ssim_input += ssim_in;
                tr->images++;
            } else {
                res->tasks_dropped++;
            }
        }
        free(inp);
        free(pred);
        free(gt);
        ag_step_reset();
        if (3 * W > gw) gw = 3 * W;
        gh += H;
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
    if (!rc && grid_path) {
        Image grid = image_alloc(gw, gh, 3);
        for (int k = 0, y0 = 0; k < v->n; y0 += hq[k].h, k++) {
            int W = hq[k].w, H = hq[k].h;
            blit(&grid, lq[k].pix, W, H, 0, y0);
            blit(&grid, out8[k], W, H, W, y0);
            blit(&grid, hq[k].pix, W, H, 2 * W, y0);
        }
        if (image_save_png(grid_path, &grid, err, errlen)) rc = -1;
        image_free(&grid);
    }
    for (int k = 0; k < v->n; k++) {
        image_free(&lq[k]);
        image_free(&hq[k]);
        free(out8[k]);
    }
    free(lq);
    free(hq);
    free(out8);
    return rc;
}
#endif
