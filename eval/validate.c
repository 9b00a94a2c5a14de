// Validation during training (see eval/validate.h). Needs HDF5 (the dataset reader).
#include "eval/validate.h"

void val_result_print_tasks(const ValResult *res, FILE *f, const char *prefix) {
    for (int t = 0; t < res->n_tasks; t++) {
        const ValTaskResult *tr = &res->task[t];
        const EvalScores *s = &tr->scores;
        fprintf(f,
                "%s%s: %d image%s, restored PSNR %.3f dB SSIM %.4f colour shift %.2f | degraded input PSNR %.3f dB "
                "SSIM %.4f colour shift %.2f | gain %+.3f dB\n",
                prefix, tr->name, s->images, s->images == 1 ? "" : "s", s->psnr, s->ssim, s->colour_shift, s->psnr_input,
                s->ssim_input, s->colour_shift_input, s->psnr - s->psnr_input);
    }
    if (res->tasks_dropped)
        fprintf(f, "%s(%d images of tasks past the first %d counted in the means only)\n", prefix, res->tasks_dropped,
                VAL_MAX_TASKS);
}

#ifdef DOD_HAVE_HDF5
#include <stdlib.h>
#include <string.h>

#include "autograd/base.h"
#include "data/h5ds.h"
#include "eval/grid.h"

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

// The per-task slot of file task t in res (=, opened on first use), or NULL past VAL_MAX_TASKS.
static ValTaskResult *task_slot(ValResult *res, int slot_task[VAL_MAX_TASKS], H5ds *f, int t) {
    for (int k = 0; k < res->n_tasks; k++)
        if (slot_task[k] == t) return &res->task[k];
    if (res->n_tasks == VAL_MAX_TASKS) return NULL;
    slot_task[res->n_tasks] = t;
    ValTaskResult *tr = &res->task[res->n_tasks++];
    snprintf(tr->name, sizeof tr->name, "%s", h5ds_task(f, t)->name);
    return tr;
}

int validator_run(Validator *v, Model *m, const char *grid_path, ValResult *res, char *err, size_t errlen) {
    memset(res, 0, sizeof *res);
    EvalImages *kept = dod_calloc(sizeof(EvalImages) * (size_t)v->n, "validation images");
    int rc = 0;
    int slot_task[VAL_MAX_TASKS];   // the file's task index of each per-task slot
    // Whole images (no UNet tiles, no memory limit: validation crops are small), through the one
    // restoration path.
    RestoreOptions ro = restore_options_default();
    ro.tile = 0;
    ro.max_memory_gib = 0;
    EvalImageOptions io = {.model = m, .restore = ro, .metrics = metrics_opts_default(METRIC_PROFILE_PROMPTIR),
                           .score_input = true};
    for (int k = 0; k < v->n && !rc; k++) {
        EvalImage im = {.index = v->index[k]};
        eval_image(&io, v->file, v->task[k], v->index[k], &im, &kept[k]);
        if (im.status) {
            snprintf(err, errlen, "validation %s sample %lld: %s", h5ds_task(v->file, v->task[k])->name,
                     (long long)v->index[k], im.err);
            rc = -1;
            break;
        }
        eval_scores_add(&res->all, &im);
        ValTaskResult *tr = task_slot(res, slot_task, v->file, v->task[k]);
        if (tr) eval_scores_add(&tr->scores, &im);
        else res->tasks_dropped++;
    }
    if (!rc) {
        eval_scores_finish(&res->all);
        for (int t = 0; t < res->n_tasks; t++) eval_scores_finish(&res->task[t].scores);
    }
    if (!rc && grid_path) {   // one row per image: lq | out | hq
        const Image **cells = dod_malloc(sizeof(Image *) * 3 * (size_t)v->n, "validation grid");
        for (int k = 0; k < v->n; k++) {
            cells[3 * k] = &kept[k].lq;
            cells[3 * k + 1] = &kept[k].out;
            cells[3 * k + 2] = &kept[k].hq;
        }
        Image grid = grid_make(cells, v->n, 3);
        if (image_save_png(grid_path, &grid, err, errlen)) rc = -1;
        image_free(&grid);
        free(cells);
    }
    for (int k = 0; k < v->n; k++) eval_images_free(&kept[k]);
    free(kept);
    return rc;
}
#endif
