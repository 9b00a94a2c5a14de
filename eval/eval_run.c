// Evaluation of a model on dataset tasks (see eval/eval_run.h).
#include "eval/eval_run.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

const char *const eval_problem_names[EVAL_N_PROBLEMS] = {"scored", "unreadable", "size mismatch", "model error",
                                                          "metric error", "save error"};

void eval_set_dir_name(const char *label, char *buf, size_t len) {
    snprintf(buf, len, "%s", label);
    for (char *c = buf; *c; c++)
        if (*c == ' ' || *c == '/') *c = '_';   // a label is a column title; keep paths plain
}

void eval_scores_add(EvalScores *s, const EvalImage *im) {
    s->images++;
    s->psnr += im->psnr;
    s->ssim += im->ssim;
    s->psnr_input += im->psnr_input;
    s->ssim_input += im->ssim_input;
    s->colour_shift += im->colour_shift;
    s->colour_shift_input += im->colour_shift_input;
    s->lpips += im->lpips;
    s->seconds += im->seconds;
}

void eval_scores_finish(EvalScores *s) {
    double n = s->images ? (double)s->images : NAN;
    s->psnr /= n;
    s->ssim /= n;
    s->psnr_input /= n;
    s->ssim_input /= n;
    s->colour_shift /= n;
    s->colour_shift_input /= n;
    s->lpips /= n;
    s->seconds /= n;
}

void eval_images_free(EvalImages *k) {
    image_free(&k->lq);
    image_free(&k->out);
    image_free(&k->hq);
}

#ifdef DOD_HAVE_HDF5
#include <stdarg.h>
#include <string.h>

#include "autograd/cuda/cuda_backend.h"
#include "data/sample_noise.h"
#include "eval/grid.h"
#include "eval/lpips_metric.h"

// Formats into buf (=); vsnprintf, since a truncated message is still a useful message.
static void fmt_into(char *buf, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void fmt_into(char *buf, size_t len, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, len, fmt, ap);
    va_end(ap);
}

// Appends one line to a problem list (err) and counts it.
static void add_line(char *err, size_t errlen, int *count, const char *line) {
    size_t used = strlen(err);
    if (used + 2 < errlen) snprintf(err + used, errlen - used, "%s%s", used ? "\n" : "", line);
    (*count)++;
}

int eval_prepare(const EvalSet *sets, int n_sets, int max_images, EvalSetResult *res, char *err, size_t errlen) {
    err[0] = 0;
    int bad = 0;
    char line[2 * EVAL_ERR_LEN], why[EVAL_ERR_LEN];
    for (int s = 0; s < n_sets; s++) {
        EvalSetResult *r = &res[s];
        memset(r, 0, sizeof *r);
        r->set = sets[s];
        const EvalSet *es = &sets[s];
        for (int j = 0; j < s; j++)
            if (!strcmp(sets[j].label, es->label)) {
                fmt_into(line, sizeof line, "test set '%s' appears twice", es->label);
                add_line(err, errlen, &bad, line);
            }
        H5ds *f = h5ds_open(es->path, why, sizeof why);
        if (!f) {
            fmt_into(line, sizeof line, "%s: %s", es->label, why);
            add_line(err, errlen, &bad, line);
            continue;
        }
        int t = h5ds_find_task(f, es->task, why, sizeof why);
        if (t < 0) {
            fmt_into(line, sizeof line, "%s: %s", es->label, why);
            add_line(err, errlen, &bad, line);
            h5ds_close(f);
            continue;
        }
        const H5dsTask *task = h5ds_task(f, t);
        r->n_in_file = task->count;
        r->n_images = (int)(max_images > 0 && task->count > max_images ? max_images : task->count);
        r->noise_on_read = task->lq_mode == LQ_GAUSSIAN_NOISE;
        if (task->count == 0) {
            fmt_into(line, sizeof line, "%s: %s: task %s has no samples", es->label, es->path, es->task);
            add_line(err, errlen, &bad, line);
        }
        if (es->sigma >= 0 && r->noise_on_read && fabs(task->sigmas[0] - es->sigma) > 1e-9) {
            fmt_into(line, sizeof line, "%s: %s: task %s adds noise of sigma %g when read, the benchmark says sigma %g",
                     es->label, es->path, es->task, task->sigmas[0], es->sigma);
            add_line(err, errlen, &bad, line);
        }
        for (int i = 0; es->sigma >= 0 && !r->noise_on_read && i < r->n_images; i++) {
            double sigma;
            uint64_t seed;
            int has = h5_sample_noise(es->path, es->task, i, &sigma, &seed, why, sizeof why);
            if (has == -1) continue;   // a missing sample: counted as unreadable when the run reaches it
            if (has < 0) {
                fmt_into(line, sizeof line, "%s: %s", es->label, why);
                add_line(err, errlen, &bad, line);
                break;
            }
            if (!has || fabs(sigma - es->sigma) > 1e-9) {
                if (!has) fmt_into(line, sizeof line, "%s: %s: task %s sample %08d has no stored noise (pack the set with "
                                   "--store-noisy --sigma %g)", es->label, es->path, es->task, i, es->sigma);
                else fmt_into(line, sizeof line, "%s: %s: task %s sample %08d holds noise of sigma %g, the benchmark says "
                              "sigma %g", es->label, es->path, es->task, i, sigma, es->sigma);
                add_line(err, errlen, &bad, line);
                break;
            }
        }
        h5ds_close(f);
    }
    return bad ? -1 : 0;
}

// ---- progress -------------------------------------------------------------------------------------
typedef struct {
    int mode, total, done;
    double t0, last;
} Progress;

static void progress_draw(Progress *p, const char *label, bool force) {
    if (!p->mode) return;
    double t = dod_now_seconds(), el = t - p->t0;
    if (!force && t - p->last < (p->mode == 1 ? 0.2 : 5.0)) return;
    p->last = t;
    char bar[21];
    int filled = p->total ? 20 * p->done / p->total : 20;
    for (int i = 0; i < 20; i++) bar[i] = i < filled ? '#' : '.';
    bar[20] = 0;
    double per = p->done ? el / p->done : 0, eta = per * (p->total - p->done);
    long long e = (long long)(eta + 0.5), s = (long long)(el + 0.5);
    fprintf(stderr, "%sdod-eval run [%s] %d/%d  %-12s %.2f s/img  elapsed %lldm%02llds  ETA %lldm%02llds%s",
            p->mode == 1 ? "\r" : "", bar, p->done, p->total, label, per, s / 60, s % 60, e / 60, e % 60,
            p->mode == 1 ? "  " : "\n");
    fflush(stderr);
}

// The output stem of sample i: its ground truth's source stem; else its LQ's; else the index.
// A stem already used in this set falls back the same way, then gets the index appended.
// 0, or -1 with a message naming the file and sample when an attribute is malformed.
static int sample_name(H5ds *f, int t, int64_t i, const EvalImage *prev, int n_prev, char *name, size_t len,
                       char *err, size_t errlen) {
    const char *attrs[] = {"hq_source", "lq_source"};
    char buf[512];
    name[0] = 0;
    for (int a = 0; a < 2 && !name[0]; a++) {
        if (h5ds_sample_attr(f, t, i, attrs[a], buf, sizeof buf, err, errlen)) {
            snprintf(name, len, "%08lld", (long long)i);
            return -1;
        }
        if (!buf[0]) continue;
        char *slash = strrchr(buf, '/'), *stem = slash ? slash + 1 : buf, *dot = strrchr(stem, '.');
        if (dot && dot != stem) *dot = 0;
        bool dup = false;
        for (int k = 0; k < n_prev && !dup; k++) dup = !strcmp(prev[k].name, stem);
        if (!dup) fmt_into(name, len, "%s", stem);
    }
    if (!name[0]) snprintf(name, len, "%08lld", (long long)i);
    for (int k = 0; k < n_prev; k++)
        if (!strcmp(prev[k].name, name)) {
            char tmp[300];
            snprintf(tmp, sizeof tmp, "%s_%08lld", name, (long long)i);
            fmt_into(name, len, "%s", tmp);
            break;
        }
    return 0;
}

void eval_image(const EvalImageOptions *o, H5ds *f, int t, int64_t i, EvalImage *im, EvalImages *keep) {
    if (keep) memset(keep, 0, sizeof *keep);
    im->psnr_input = im->ssim_input = im->colour_shift_input = im->lpips = NAN;
    im->colour_shift = NAN;
    Image lq = {0}, hq = {0};
    char why[EVAL_ERR_LEN];
    const H5dsTask *task = h5ds_task(f, t);
    int rc = task->lq_mode == LQ_GAUSSIAN_NOISE ? h5ds_read_sample(f, t, i, &lq, &hq, why, sizeof why)
                                                : h5ds_read_image(f, t, i, H5DS_HQ, &hq, why, sizeof why);
    if (!rc && task->lq_mode != LQ_GAUSSIAN_NOISE && (rc = h5ds_read_image(f, t, i, H5DS_LQ, &lq, why, sizeof why)))
        image_free(&hq);
    if (rc) {
        im->status = EVAL_UNREADABLE;
        fmt_into(im->err, sizeof im->err, "%s", why);
        return;
    }
    im->w = hq.w;
    im->h = hq.h;
    if (lq.w != hq.w || lq.h != hq.h) {
        im->status = EVAL_SIZE;
        fmt_into(im->err, sizeof im->err, "task %s sample %08lld: input %dx%d but ground truth %dx%d (WxH)", task->name,
                 (long long)i, lq.w, lq.h, hq.w, hq.h);
        image_free(&lq);
        image_free(&hq);
        return;
    }
    const size_t n = (size_t)3 * hq.w * hq.h;
    float *out = dod_malloc(sizeof(float) * n, "restored image"), *gt = dod_malloc(sizeof(float) * n, "ground truth");
    double t0 = dod_now_seconds();
    RestoreStats rs;
    rc = restore_image(o->model, &lq, &o->restore, out, &rs, why, sizeof why);
    im->tiles = rs.unet_tiles;
    im->vae_tiles = rs.vae_tiles;
    im->seconds = dod_now_seconds() - t0;
    if (rc) {
        im->status = EVAL_MODEL;
    } else {
        restore_output_to_unit(out, n, out);
        restore_image_to_unit(&hq, gt);
        rc = metrics_pair_f32(out, gt, hq.h, hq.w, 3, METRIC_CHW, &o->metrics, &im->psnr, &im->ssim, why, sizeof why);
        if (!rc)
            rc = metrics_colour_shift_f32(out, gt, hq.h, hq.w, 3, METRIC_CHW, &o->metrics, &im->colour_shift, why,
                                          sizeof why);
        if (!rc && o->lpips) rc = lpips_metric_f32(o->lpips, out, gt, hq.h, hq.w, METRIC_CHW, &im->lpips, why, sizeof why);
        if (!rc && o->score_input) {   // the degraded input, scored the same way
            float *in = dod_malloc(sizeof(float) * n, "degraded input");
            restore_image_to_unit(&lq, in);
            rc = metrics_pair_f32(in, gt, hq.h, hq.w, 3, METRIC_CHW, &o->metrics, &im->psnr_input, &im->ssim_input, why,
                                  sizeof why);
            if (!rc)
                rc = metrics_colour_shift_f32(in, gt, hq.h, hq.w, 3, METRIC_CHW, &o->metrics, &im->colour_shift_input,
                                              why, sizeof why);
            free(in);
        }
        if (rc) im->status = EVAL_METRIC;
    }
    if (im->status) {
        fmt_into(im->err, sizeof im->err, "%s", why);
    } else if (keep) {
        keep->out = restore_unit_to_image(out, hq.h, hq.w);
        keep->lq = lq;
        keep->hq = hq;
        lq = hq = (Image){0};
    }
    free(out);
    free(gt);
    image_free(&lq);
    image_free(&hq);
}

// One image of a set: eval_image, the problem named with the set and image, PNGs saved under set_dir
// (NULL: none). keep (may be NULL): the images for the set's grid, when scored.
static void eval_one(const EvalRunOptions *o, H5ds *f, int t, EvalSetResult *r, EvalImage *im, const char *set_dir,
                     EvalImages *keep) {
    const EvalSet *es = &r->set;
    EvalImageOptions io = {.model = o->model, .restore = o->restore, .metrics = es->metrics, .lpips = o->lpips};
    EvalImages imgs;
    eval_image(&io, f, t, im->index, im, set_dir ? &imgs : NULL);
    char why[EVAL_ERR_LEN];
    if (im->status) {
        snprintf(why, sizeof why, "%s", im->err);
        if (im->status == EVAL_SIZE) fmt_into(im->err, sizeof im->err, "%s (%s): %s: %s", es->label, im->name, es->path, why);
        else if (im->status == EVAL_UNREADABLE) fmt_into(im->err, sizeof im->err, "%s (%s): %s", es->label, im->name, why);
        else fmt_into(im->err, sizeof im->err, "%s (%s, %dx%d): %s", es->label, im->name, im->w, im->h, why);
        return;
    }
    if (!set_dir) return;
    char path[4600];
    const char *sub[3] = {"input", "restored", "gt"};
    const Image *img[3] = {&imgs.lq, &imgs.out, &imgs.hq};
    for (int k = 0; k < 3 && !im->status; k++) {
        if (k != 1 && !o->save_inputs) continue;
        snprintf(path, sizeof path, "%s/%s/%s.png", set_dir, sub[k], im->name);
        if (image_save_png(path, img[k], why, sizeof why)) {
            im->status = EVAL_SAVE;
            fmt_into(im->err, sizeof im->err, "%s (%s): %s", es->label, im->name, why);
        }
    }
    if (keep) *keep = imgs;   // kept for the grid even when a PNG failed (the image was scored)
    else eval_images_free(&imgs);
}

int eval_run(const EvalRunOptions *o, EvalSetResult *res, int n_sets, char *err, size_t errlen) {
    Progress pg = {.mode = o->progress, .t0 = dod_now_seconds(), .last = -1};
    for (int s = 0; s < n_sets; s++) pg.total += res[s].n_images;
    int not_scored = 0;
    for (int s = 0; s < n_sets; s++) {
        EvalSetResult *r = &res[s];
        const EvalSet *es = &r->set;
        H5ds *f = h5ds_open(es->path, err, errlen);
        if (!f) return -1;
        int t = h5ds_find_task(f, es->task, err, errlen);
        if (t < 0) {
            h5ds_close(f);
            return -1;
        }
        char set_dir[4300] = "";
        if (o->save_dir) {
            char name[sizeof es->label];
            eval_set_dir_name(es->label, name, sizeof name);
            snprintf(set_dir, sizeof set_dir, "%s/%s", o->save_dir, name);
            const char *sub[3] = {"restored", "input", "gt"};
            char d[4400];
            for (int k = 0; k < (o->save_inputs ? 3 : 1); k++) {
                snprintf(d, sizeof d, "%s/%s", set_dir, sub[k]);
                if (fs_mkdirs(d, err, errlen)) {
                    h5ds_close(f);
                    return -1;
                }
            }
        }
        r->images = dod_calloc(sizeof(EvalImage) * (size_t)(r->n_images ? r->n_images : 1), "evaluation results");
        int n_rows = o->save_dir ? (o->grid_rows < r->n_images ? o->grid_rows : r->n_images) : 0;
        EvalImages *rows = dod_calloc(sizeof(EvalImages) * (size_t)(n_rows ? n_rows : 1), "grid rows");
        for (int i = 0; i < r->n_images; i++) {
            EvalImage *im = &r->images[i];
            im->index = i;
            char why[EVAL_ERR_LEN];
            if (sample_name(f, t, i, r->images, i, im->name, sizeof im->name, why, sizeof why)) {
                im->status = EVAL_UNREADABLE;
                fmt_into(im->err, sizeof im->err, "%s (%s): %s", es->label, im->name, why);
            } else {
                eval_one(o, f, t, r, im, o->save_dir ? set_dir : NULL, i < n_rows ? &rows[i] : NULL);
            }
            r->problems[im->status]++;
            if (im->status == EVAL_OK) eval_scores_add(&r->scores, im);
            pg.done++;
            progress_draw(&pg, es->label, i + 1 == r->n_images);
        }
        h5ds_close(f);
        eval_scores_finish(&r->scores);
        r->has_lpips = o->lpips != NULL;
        r->peak_rss_mib = dod_peak_rss_mib();
        double arena_bytes = (double)arena_peak();
        if (o->model->device == DEV_CUDA) arena_bytes += (double)dod_cuda_mem_stats().arena_peak_bytes;
        r->arena_peak_mib = arena_bytes / (1024.0 * 1024.0);
        not_scored += r->n_images - r->scores.images;
        // the grid of the first rows that were scored (a row is kept only when its image was)
        int kept = 0;
        for (int k = 0; k < n_rows; k++) kept += rows[k].lq.pix != NULL;
        if (kept) {
            const Image **cells = dod_calloc(sizeof(Image *) * 3 * (size_t)kept, "grid cells");
            for (int k = 0, j = 0; k < n_rows; k++)
                if (rows[k].lq.pix) {
                    cells[3 * j] = &rows[k].lq;
                    cells[3 * j + 1] = &rows[k].out;
                    cells[3 * j + 2] = &rows[k].hq;
                    j++;
                }
            Image grid = grid_make(cells, kept, 3);
            char path[4400], why[EVAL_ERR_LEN];
            snprintf(path, sizeof path, "%s/grid.png", set_dir);
            if (image_save_png(path, &grid, why, sizeof why)) {
                snprintf(err, errlen, "%s", why);
                image_free(&grid);
                free(cells);
                return -1;
            }
            image_free(&grid);
            free(cells);
        }
        for (int k = 0; k < n_rows; k++) eval_images_free(&rows[k]);
        free(rows);
    }
    if (pg.mode == 1) fprintf(stderr, "\n");
    return not_scored;
}

int eval_sets_from_file(const char *path, const char *only_tasks, const MetricOpts *mo, EvalSet **sets, int *n,
                        char *err, size_t errlen) {
    H5ds *f = h5ds_open(path, err, errlen);
    if (!f) return -1;
    int T = h5ds_n_tasks(f);
    EvalSet *out = dod_calloc(sizeof(EvalSet) * (size_t)(T + H5DS_MAX_TASKS + 1), "evaluation sets");
    int k = 0, rc = 0;
    if (only_tasks && *only_tasks) {
        char list[1024];
        snprintf(list, sizeof list, "%s", only_tasks);
        for (char *tok = strtok(list, ","); tok && !rc; tok = strtok(NULL, ",")) {
            if (k == T + H5DS_MAX_TASKS) break;
            int t = h5ds_find_task(f, tok, err, errlen);
            if (t < 0) rc = -1;
            else snprintf(out[k++].task, sizeof out[0].task, "%s", h5ds_task(f, t)->name);
        }
    } else {
        for (int t = 0; t < T; t++) snprintf(out[k++].task, sizeof out[0].task, "%s", h5ds_task(f, t)->name);
    }
    if (!rc && k == 0) {
        snprintf(err, errlen, "%s: the file has no tasks", path);
        rc = -1;
    }
    for (int i = 0; i < k; i++) {
        snprintf(out[i].label, sizeof out[i].label, "%s", out[i].task);
        fmt_into(out[i].path, sizeof out[i].path, "%s", path);
        out[i].sigma = -1;
        out[i].metrics = *mo;
    }
    h5ds_close(f);
    if (rc) {
        free(out);
        return -1;
    }
    *sets = out;
    *n = k;
    return 0;
}

void eval_results_free(EvalSetResult *res, int n_sets) {
    for (int s = 0; s < n_sets; s++) {
        free(res[s].images);
        res[s].images = NULL;
    }
}
#else
#include <stdio.h>
#include <stdlib.h>
int eval_prepare(const EvalSet *sets, int n_sets, int max_images, EvalSetResult *res, char *err, size_t errlen) {
    (void)sets, (void)n_sets, (void)max_images, (void)res;
    snprintf(err, errlen, "evaluation reads dataset files, which needs HDF5; this build lacks it");
    return -1;
}
int eval_run(const EvalRunOptions *o, EvalSetResult *res, int n_sets, char *err, size_t errlen) {
    (void)o, (void)res, (void)n_sets;
    snprintf(err, errlen, "evaluation needs HDF5; this build lacks it");
    return -1;
}
void eval_results_free(EvalSetResult *res, int n_sets) {
    for (int s = 0; s < n_sets; s++) free(res[s].images);
}
int eval_sets_from_file(const char *path, const char *only_tasks, const MetricOpts *mo, EvalSet **sets, int *n,
                        char *err, size_t errlen) {
    (void)only_tasks, (void)mo, (void)sets, (void)n;
    snprintf(err, errlen, "%s: reading dataset files needs HDF5; this build lacks it", path);
    return -1;
}
#endif
