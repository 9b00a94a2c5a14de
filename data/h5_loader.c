// Threaded random-crop loader over a dod dataset file (contract in data/loader.h).
//
// Work is split per sample: a ring of `prefetch` batch slots, each assigned a step; threads take
// the next unmade sample of the lowest-step slot that is filling, so one batch is made by all
// threads at once. A slot becomes READY when its last sample is done; loader_get swaps buffers with
// it and assigns it the next step ahead. Since each sample is a pure function of (seed, rank,
// world size, step, slot), thread timing changes only when a batch is ready, never what it holds.
#include "data/loader.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/base.h"
#include "data/degrade.h"
#include "data/h5ds.h"
#include "data/image.h"
#include "data/keyed_rng.h"

enum { SLOT_FILLING, SLOT_READY };

typedef struct {
    int64_t step;
    int state;
    int cancelled;            // no new samples are taken (the loader is being re-aimed at another step)
    int next_unit, units_done;
    int failed;
    char err[512];
    Batch batch;
} Slot;

struct Loader {
    LoaderConfig cfg;
    H5ds *file;
    int file_task[LOADER_MAX_TASKS];      // config task -> task index in the file
    uint64_t task_key[LOADER_MAX_TASKS];  // rng_key(seed, hash(task name))
    int batch_n;
    int slot_task[LOADER_MAX_BATCH];      // batch slot -> config task
    int slot_in_task[LOADER_MAX_BATCH];   // batch slot -> j, its rank among the task's slots
    Slot *slots;
    int n_slots;
    int64_t next_step;                    // step the next recycled slot takes
    pthread_t *threads;
    pthread_mutex_t mu;
    pthread_cond_t work_cv, done_cv;
    int stopping;
};

void loader_config_default(LoaderConfig *cfg) {
    memset(cfg, 0, sizeof *cfg);
    cfg->crop = 256;
    cfg->flips = 1;
    cfg->resize_small = 1;
    cfg->seed = 123;
    cfg->world_size = 1;
    cfg->n_threads = 2;
    cfg->prefetch = 2;
}

int loader_parse_tasks(LoaderConfig *cfg, const char *spec, char *err, size_t errlen) {
    cfg->n_tasks = 0;
    const char *p = spec;
    while (*p) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        char item[128];
        snprintf(item, sizeof item, "%.*s", (int)(len < sizeof item ? len : sizeof item - 1), p);
        char *colon = strchr(item, ':');
        char *end = NULL;
        long count = colon ? strtol(colon + 1, &end, 10) : 0;
        if (!colon || colon == item || !end || *end || count < 1 || count > LOADER_MAX_BATCH ||
            (size_t)(colon - item) >= sizeof cfg->tasks[0].name || cfg->n_tasks == LOADER_MAX_TASKS) {
            snprintf(err, errlen, "task list '%s': item '%s' is not NAME:COUNT (COUNT 1..%d, at most %d tasks)", spec,
                     item, LOADER_MAX_BATCH, LOADER_MAX_TASKS);
            return -1;
        }
        size_t name_len = (size_t)(colon - item);   // < sizeof name, checked above
        memcpy(cfg->tasks[cfg->n_tasks].name, item, name_len);
        cfg->tasks[cfg->n_tasks].name[name_len] = 0;
        cfg->tasks[cfg->n_tasks++].count = (int)count;
        p = comma ? comma + 1 : p + len;
    }
    if (cfg->n_tasks == 0) {
        snprintf(err, errlen, "task list '%s' is empty", spec);
        return -1;
    }
    return 0;
}

void loader_batch_init(const Loader *L, Batch *b) {
    memset(b, 0, sizeof *b);
    b->n = L->batch_n;
    b->crop = L->cfg.crop;
    b->step = -1;
    size_t px = (size_t)b->n * b->crop * b->crop * 3;
    b->lq = dod_malloc(px * sizeof(float), "batch lq");
    b->hq = dod_malloc(px * sizeof(float), "batch hq");
    b->lq_u8 = dod_malloc(px, "batch lq bytes");
    b->hq_u8 = dod_malloc(px, "batch hq bytes");
    b->task = dod_calloc(sizeof(int) * b->n, "batch tasks");
    b->sample = dod_calloc(sizeof(int64_t) * b->n, "batch samples");
    b->sigma = dod_calloc(sizeof(float) * b->n, "batch sigmas");
}

void batch_free(Batch *b) {
    free(b->lq);
    free(b->hq);
    free(b->lq_u8);
    free(b->hq_u8);
    free(b->task);
    free(b->sample);
    free(b->sigma);
    memset(b, 0, sizeof *b);
}

// Reverses the order of rows (vertical flip) or of pixels in each row (horizontal flip), in place.
static void flip_crop(uint8_t *pix, int side, int horizontal) {
    if (horizontal) {
        for (int y = 0; y < side; y++)
            for (int x = 0; x < side / 2; x++)
                for (int c = 0; c < 3; c++) {
                    uint8_t *a = &pix[((size_t)y * side + x) * 3 + c], *b = &pix[((size_t)y * side + side - 1 - x) * 3 + c];
                    uint8_t tmp = *a;
                    *a = *b;
                    *b = tmp;
                }
    } else {
        size_t row = (size_t)side * 3;
        uint8_t tmp[row];
        for (int y = 0; y < side / 2; y++) {
            memcpy(tmp, pix + y * row, row);
            memcpy(pix + y * row, pix + (size_t)(side - 1 - y) * row, row);
            memcpy(pix + (size_t)(side - 1 - y) * row, tmp, row);
        }
    }
}

static void copy_crop(const Image *img, int y, int x, int side, uint8_t *dst) {
    for (int r = 0; r < side; r++)
        memcpy(dst + (size_t)r * side * 3, img->pix + ((size_t)(y + r) * img->w + x) * 3, (size_t)side * 3);
}

int loader_make_sample(Loader *L, int64_t step, int slot, Batch *b, char *err, size_t errlen) {
    const LoaderConfig *cfg = &L->cfg;
    int t = L->slot_task[slot], ft = L->file_task[t], side = cfg->crop;
    const H5dsTask *task = h5ds_task(L->file, ft);
    int64_t n = task->count;
    int64_t p = (step * cfg->world_size + cfg->rank) * cfg->tasks[t].count + L->slot_in_task[slot];
    int64_t epoch = p / n, index = (int64_t)keyed_permute(rng_key(rng_key(L->task_key[t], 1), (uint64_t)epoch),
                                                          (uint64_t)n, (uint64_t)(p % n));
    KeyedRng rng = keyed_rng(rng_key(rng_key(L->task_key[t], 2), (uint64_t)p));
    size_t plane = (size_t)side * side;
    uint8_t *hq = b->hq_u8 + (size_t)slot * plane * 3, *lq = b->lq_u8 + (size_t)slot * plane * 3;
    int stored_lq = task->lq_mode == LQ_STORED;
    int h, w;
    if (h5ds_sample_size(L->file, ft, index, &h, &w, err, errlen)) return -1;
    if (h < side || w < side) {
        if (!cfg->resize_small) {
            snprintf(err, errlen, "%s: sample %s/%08" PRId64 " is %dx%d (HxW), smaller than the %dx%d crop", cfg->path,
                     task->name, index, h, w, side, side);
            return -1;
        }
        // Resize up so the shorter side equals the crop (aspect kept), then crop as usual. The
        // resized image must itself be within the caps (a 1-pixel-high sample would become huge).
        double up = (double)side / (h < w ? h : w);
        char why[256];
        if (dod_limit_check_image((int64_t)(h * up + 0.5), (int64_t)(w * up + 0.5), why, sizeof why)) {
            snprintf(err, errlen, "%s: sample %s/%08" PRId64 " is %dx%d (HxW); resized for the %dx%d crop: %s",
                     cfg->path, task->name, index, h, w, side, side, why);
            return -1;
        }
        Image full_hq, full_lq = {0};
        if (h5ds_read_image(L->file, ft, index, H5DS_HQ, &full_hq, err, errlen)) return -1;
        if (stored_lq && h5ds_read_image(L->file, ft, index, H5DS_LQ, &full_lq, err, errlen)) {
            image_free(&full_hq);
            return -1;
        }
        double scale = (double)side / (h < w ? h : w);
        int nh = (int)(h * scale + 0.5), nw = (int)(w * scale + 0.5);
        if (nh < side) nh = side;
        if (nw < side) nw = side;
        int y = (int)rng_below(&rng, (uint64_t)(nh - side + 1)), x = (int)rng_below(&rng, (uint64_t)(nw - side + 1));
        Image big = image_resize(&full_hq, nw, nh);
        copy_crop(&big, y, x, side, hq);
        image_free(&big);
        if (stored_lq) {
            big = image_resize(&full_lq, nw, nh);
            copy_crop(&big, y, x, side, lq);
            image_free(&big);
        }
        image_free(&full_hq);
        image_free(&full_lq);
    } else {
        int y = (int)rng_below(&rng, (uint64_t)(h - side + 1)), x = (int)rng_below(&rng, (uint64_t)(w - side + 1));
        if (h5ds_read_crop(L->file, ft, index, H5DS_HQ, y, x, side, side, hq, err, errlen)) return -1;
        if (stored_lq && h5ds_read_crop(L->file, ft, index, H5DS_LQ, y, x, side, side, lq, err, errlen)) return -1;
    }
    float sigma = 0;
    if (!stored_lq) {
        // Noise on the crop, as PromptIR/AirNet add it to the clean patch.
        sigma = (float)task->sigmas[rng_below(&rng, (uint64_t)task->n_sigmas)];
        uint64_t noise_key = rng_next(&rng);
        degrade_gaussian_noise(hq, lq, plane * 3, sigma, noise_key);
    }
    uint64_t flip_bits = rng_next(&rng);   // drawn even without flips, so the stream stays the same
    if (cfg->flips && (flip_bits & 1)) {
        flip_crop(hq, side, 1);
        flip_crop(lq, side, 1);
    }
    if (cfg->flips && (flip_bits & 2)) {
        flip_crop(hq, side, 0);
        flip_crop(lq, side, 0);
    }
    float *fl = b->lq + (size_t)slot * plane * 3, *fh = b->hq + (size_t)slot * plane * 3;
    for (size_t i = 0; i < plane; i++)
        for (int c = 0; c < 3; c++) {
            fl[c * plane + i] = lq[i * 3 + c] * (1.0f / 127.5f) - 1.0f;
            fh[c * plane + i] = hq[i * 3 + c] * (1.0f / 127.5f) - 1.0f;
        }
    b->task[slot] = t;
    b->sample[slot] = index;
    b->sigma[slot] = sigma;
    return 0;
}

// ---- threads ----------------------------------------------------------------------------------------
static Slot *next_filling_slot(Loader *L) {
    Slot *best = NULL;
    for (int s = 0; s < L->n_slots; s++) {
        Slot *slot = &L->slots[s];
        if (slot->state == SLOT_FILLING && !slot->cancelled && slot->next_unit < L->batch_n &&
            (!best || slot->step < best->step))
            best = slot;
    }
    return best;
}

static void *worker_main(void *arg) {
    Loader *L = arg;
    char err[512];
    pthread_mutex_lock(&L->mu);
    while (!L->stopping) {
        Slot *slot = next_filling_slot(L);
        if (!slot) {
            pthread_cond_wait(&L->work_cv, &L->mu);
            continue;
        }
        int unit = slot->next_unit++;
        int64_t step = slot->step;
        pthread_mutex_unlock(&L->mu);
        int rc = loader_make_sample(L, step, unit, &slot->batch, err, sizeof err);
        pthread_mutex_lock(&L->mu);
        if (rc && !slot->failed) {
            slot->failed = 1;
            snprintf(slot->err, sizeof slot->err, "%s", err);
        }
        if (++slot->units_done == L->batch_n) slot->state = SLOT_READY;
        pthread_cond_broadcast(&L->done_cv);
    }
    pthread_mutex_unlock(&L->mu);
    return NULL;
}

static void assign_slot(Slot *slot, int64_t step) {
    slot->step = step;
    slot->state = SLOT_FILLING;
    slot->cancelled = slot->failed = 0;
    slot->next_unit = slot->units_done = 0;
    slot->err[0] = 0;
    slot->batch.step = step;
}

Loader *loader_open(const LoaderConfig *cfg, char *err, size_t errlen) {
    if (cfg->crop < 1 || cfg->world_size < 1 || cfg->rank < 0 || cfg->rank >= cfg->world_size || cfg->n_threads < 0 ||
        cfg->n_threads > 256 || cfg->prefetch < 1 || cfg->n_tasks < 1 || cfg->n_tasks > LOADER_MAX_TASKS) {
        snprintf(err, errlen,
                 "%s: bad loader configuration (crop %d, rank %d of %d, %d threads, prefetch %d, %d tasks): need crop "
                 ">= 1, 0 <= rank < world size, 0..256 threads, prefetch >= 1, 1..%d tasks",
                 cfg->path, cfg->crop, cfg->rank, cfg->world_size, cfg->n_threads, cfg->prefetch, cfg->n_tasks,
                 LOADER_MAX_TASKS);
        return NULL;
    }
    H5ds *file = h5ds_open(cfg->path, err, errlen);
    if (!file) return NULL;
    Loader *L = dod_calloc(sizeof *L, "loader");
    L->cfg = *cfg;
    L->file = file;
    for (int t = 0; t < cfg->n_tasks; t++) {
        int ft = h5ds_find_task(file, cfg->tasks[t].name, err, errlen);
        if (ft < 0 || h5ds_task(file, ft)->count < 1 || cfg->tasks[t].count < 1 ||
            L->batch_n + cfg->tasks[t].count > LOADER_MAX_BATCH) {
            if (ft >= 0)
                snprintf(err, errlen, "%s: task %s has %" PRId64 " samples and asks for %d per batch (batch at most %d)",
                         cfg->path, cfg->tasks[t].name, h5ds_task(file, ft)->count, cfg->tasks[t].count,
                         LOADER_MAX_BATCH);
            h5ds_close(file);
            free(L);
            return NULL;
        }
        L->file_task[t] = ft;
        L->task_key[t] = rng_key(cfg->seed, rng_hash_string(cfg->tasks[t].name));
        for (int j = 0; j < cfg->tasks[t].count; j++) {
            L->slot_task[L->batch_n] = t;
            L->slot_in_task[L->batch_n++] = j;
        }
    }
    L->n_slots = cfg->n_threads ? cfg->prefetch : 0;
    L->slots = dod_calloc(sizeof(Slot) * (L->n_slots + 1), "loader slots");
    for (int s = 0; s < L->n_slots; s++) {
        loader_batch_init(L, &L->slots[s].batch);
        assign_slot(&L->slots[s], s);
    }
    L->next_step = L->n_slots;
    pthread_mutex_init(&L->mu, NULL);
    pthread_cond_init(&L->work_cv, NULL);
    pthread_cond_init(&L->done_cv, NULL);
    L->threads = dod_calloc(sizeof(pthread_t) * (cfg->n_threads + 1), "loader threads");
    for (int i = 0; i < cfg->n_threads; i++)
        DOD_CHECK(pthread_create(&L->threads[i], NULL, worker_main, L) == 0, "loader_open", "%s: cannot start thread %d",
                  cfg->path, i);
    return L;
}

int64_t loader_task_samples(const Loader *L, int task) { return h5ds_task(L->file, L->file_task[task])->count; }

static void swap_buffers(Batch *a, Batch *b) {
    Batch tmp = *a;
    *a = *b;
    *b = tmp;
}

int loader_get(Loader *L, int64_t step, Batch *out, char *err, size_t errlen) {
    if (step < 0 || out->n != L->batch_n || out->crop != L->cfg.crop || !out->lq) {
        snprintf(err, errlen, "%s: loader_get(step %" PRId64 "): step must be >= 0 and the batch made by loader_batch_init",
                 L->cfg.path, step);
        return -1;
    }
    if (L->cfg.n_threads == 0) {   // synchronous: make every sample here
        out->step = step;
        for (int k = 0; k < L->batch_n; k++)
            if (loader_make_sample(L, step, k, out, err, errlen)) return -1;
        return 0;
    }
    pthread_mutex_lock(&L->mu);
    Slot *slot = NULL;
    for (int s = 0; s < L->n_slots; s++)
        if (L->slots[s].step == step && !L->slots[s].cancelled) slot = &L->slots[s];
    if (!slot) {
        // Not prefetched (first call after a resume, or a jump): let in-flight samples finish,
        // then aim the whole ring at step, step + 1, ...
        for (int s = 0; s < L->n_slots; s++) L->slots[s].cancelled = 1;
        for (;;) {
            int busy = 0;
            for (int s = 0; s < L->n_slots; s++) busy |= L->slots[s].units_done != L->slots[s].next_unit;
            if (!busy) break;
            pthread_cond_wait(&L->done_cv, &L->mu);
        }
        for (int s = 0; s < L->n_slots; s++) assign_slot(&L->slots[s], step + s);
        L->next_step = step + L->n_slots;
        slot = &L->slots[0];
        pthread_cond_broadcast(&L->work_cv);
    }
    while (slot->state != SLOT_READY) pthread_cond_wait(&L->done_cv, &L->mu);
    int failed = slot->failed;
    if (failed) snprintf(err, errlen, "%s", slot->err);
    int64_t batch_step = slot->batch.step;
    swap_buffers(out, &slot->batch);
    out->step = batch_step;
    assign_slot(slot, L->next_step++);
    pthread_cond_broadcast(&L->work_cv);
    pthread_mutex_unlock(&L->mu);
    return failed ? -1 : 0;
}

void loader_close(Loader *L) {
    if (!L) return;
    pthread_mutex_lock(&L->mu);
    L->stopping = 1;
    pthread_cond_broadcast(&L->work_cv);
    pthread_mutex_unlock(&L->mu);
    for (int i = 0; i < L->cfg.n_threads; i++) pthread_join(L->threads[i], NULL);
    for (int s = 0; s < L->n_slots; s++) batch_free(&L->slots[s].batch);
    pthread_mutex_destroy(&L->mu);
    pthread_cond_destroy(&L->work_cv);
    pthread_cond_destroy(&L->done_cv);
    free(L->slots);
    free(L->threads);
    h5ds_close(L->file);
    free(L);
}
