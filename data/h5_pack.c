// `dod-data pack` and `dod-data synth` drivers (see data/pack.h).
#include "data/pack.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/base.h"
#include "data/keyed_rng.h"
#include "data/pairing.h"

static const char *base_name(const char *path) {
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

uint64_t pack_noise_key(uint64_t seed, const char *file_name, double sigma) {
    uint64_t k = rng_key(seed, rng_hash_string("gaussian_noise"));
    k = rng_key(k, rng_hash_string(file_name));
    return rng_key(k, (uint64_t)llround(sigma * 1000.0));
}

uint64_t synth_key(uint64_t seed, DegradeKind kind, const char *file_name) {
    return rng_key(rng_key(seed, rng_hash_string(degrade_kind_name(kind))), rng_hash_string(file_name));
}

static int check_sigmas(int n_sigmas, const double *sigmas, int store_noisy, char *err, size_t errlen) {
    if (n_sigmas < 1) {
        snprintf(err, errlen, "clean images need --sigma (e.g. --sigma 15,25,50)");
        return -1;
    }
    for (int k = 0; k < n_sigmas; k++)
        if (!(sigmas[k] > 0 && sigmas[k] <= 255)) {
            snprintf(err, errlen, "--sigma %g: each sigma must be in (0, 255]", sigmas[k]);
            return -1;
        }
    if (store_noisy && n_sigmas != 1) {
        snprintf(err, errlen, "--store-noisy takes exactly one --sigma (pack one task per sigma, e.g. denoise_s25)");
        return -1;
    }
    return 0;
}

// Clean images -> task with on-the-fly noise (recipe) or stored noisy images.
static int pack_clean(const PackOptions *o, H5ds *f, int *n_problems, int64_t *n_done, char *err, size_t errlen) {
    char **names;
    int n;
    if (list_images(o->clean_dir, &names, &n, err, errlen)) return -1;
    if (n == 0) {
        snprintf(err, errlen, "%s: no .png/.jpg/.jpeg/.bmp images", o->clean_dir);
        free_names(names, n);
        return -1;
    }
    int t = h5ds_define_task(f, o->task, o->store_noisy ? LQ_STORED : LQ_GAUSSIAN_NOISE, o->sigmas, o->n_sigmas, err,
                             errlen);
    if (t < 0) {
        free_names(names, n);
        return -1;
    }
    for (int i = 0; i < n; i++) {
        char path[4096], msg[1024];
        snprintf(path, sizeof path, "%s/%s", o->clean_dir, names[i]);
        Image hq;
        if (image_load(path, &hq, msg, sizeof msg)) {
            fprintf(stderr, "dod-data pack: %s\n", msg);
            ++*n_problems;
            continue;
        }
        if (*n_problems == 0) {   // after the first problem only check the rest: nothing is kept
            H5dsSampleMeta meta = {.hq_source = names[i]};
            Image lq = {0};
            if (o->store_noisy) {
                lq = image_alloc(hq.w, hq.h, 3);
                degrade_gaussian_noise(hq.pix, lq.pix, (size_t)hq.w * hq.h * 3, o->sigmas[0],
                                       pack_noise_key(o->seed, names[i], o->sigmas[0]));
                meta.has_noise = 1;
                meta.noise_sigma = o->sigmas[0];
                meta.noise_seed = o->seed;
                meta.lq_source = names[i];
            }
            int64_t rc = h5ds_append_sample(f, t, &hq, o->store_noisy ? &lq : NULL, &meta, err, errlen);
            image_free(&lq);
            if (rc < 0) {
                image_free(&hq);
                free_names(names, n);
                return -1;
            }
            ++*n_done;
        }
        image_free(&hq);
    }
    free_names(names, n);
    return 0;
}

static int pack_pairs(const PackOptions *o, H5ds *f, int *n_problems, int64_t *n_done, char *err, size_t errlen) {
    PairList pl;
    if (o->pairs_path ? pair_from_list(o->pairs_path, o->lq_dir, o->hq_dir, &pl, err, errlen)
                      : pair_by_name(o->lq_dir, o->hq_dir, &pl, err, errlen))
        return -1;
    const char *level = o->skip_unmatched ? "warning" : "error";
    for (int i = 0; i < pl.n_unmatched_lq; i++)
        fprintf(stderr, "dod-data pack: %s: %s: no HQ partner in %s\n", level, pl.unmatched_lq[i], o->hq_dir);
    for (int i = 0; i < pl.n_unmatched_hq; i++)
        fprintf(stderr, "dod-data pack: %s: %s: no LQ file pairs with it in %s\n", level, pl.unmatched_hq[i], o->lq_dir);
    if (!o->skip_unmatched) *n_problems += pl.n_unmatched_lq + pl.n_unmatched_hq;
    if (pl.n_pairs == 0) {
        snprintf(err, errlen, "%s / %s: no LQ/HQ pairs found", o->lq_dir ? o->lq_dir : "-", o->hq_dir ? o->hq_dir : "-");
        pairlist_free(&pl);
        return -1;
    }
    int t = h5ds_define_task(f, o->task, LQ_STORED, NULL, 0, err, errlen);
    if (t < 0) {
        pairlist_free(&pl);
        return -1;
    }
    for (int i = 0; i < pl.n_pairs; i++) {
        char msg[1024];
        Image lq = {0}, hq = {0};
        int bad = 0;
        if (image_load(pl.pairs[i].lq, &lq, msg, sizeof msg)) {
            fprintf(stderr, "dod-data pack: %s\n", msg);
            bad = 1;
        }
        if (image_load(pl.pairs[i].hq, &hq, msg, sizeof msg)) {
            fprintf(stderr, "dod-data pack: %s\n", msg);
            bad = 1;
        }
        if (!bad && (lq.w != hq.w || lq.h != hq.h)) {
            fprintf(stderr, "dod-data pack: size mismatch: %s is %dx%d but %s is %dx%d (WxH)\n", pl.pairs[i].lq, lq.w,
                    lq.h, pl.pairs[i].hq, hq.w, hq.h);
            bad = 1;
        }
        *n_problems += bad;
        if (!bad && *n_problems == 0) {
            H5dsSampleMeta meta = {.hq_source = base_name(pl.pairs[i].hq), .lq_source = base_name(pl.pairs[i].lq)};
            if (h5ds_append_sample(f, t, &hq, &lq, &meta, err, errlen) < 0) {
                image_free(&lq);
                image_free(&hq);
                pairlist_free(&pl);
                return -1;
            }
            ++*n_done;
        }
        image_free(&lq);
        image_free(&hq);
    }
    pairlist_free(&pl);
    return 0;
}

int pack_run(const PackOptions *o, char *err, size_t errlen) {
    int paired = o->lq_dir || o->hq_dir || o->pairs_path;
    if (!o->task || !o->out_path || paired == (o->clean_dir != NULL) ||
        (paired && !o->pairs_path && (!o->lq_dir || !o->hq_dir))) {
        snprintf(err, errlen, "pack needs --task, --out, and either --lq DIR --hq DIR, --pairs FILE, or --clean DIR");
        return -1;
    }
    if (o->clean_dir && check_sigmas(o->n_sigmas, o->sigmas, o->store_noisy, err, errlen)) return -1;
    if (paired && (o->n_sigmas || o->store_noisy)) {
        snprintf(err, errlen, "--sigma / --store-noisy apply to --clean images only");
        return -1;
    }
    H5ds *f = h5ds_begin_write(o->out_path, o->append, err, errlen);
    if (!f) return -1;
    h5ds_set_deflate(f, o->deflate);
    int n_problems = 0;
    int64_t n_done = 0;
    int rc = paired ? pack_pairs(o, f, &n_problems, &n_done, err, errlen)
                    : pack_clean(o, f, &n_problems, &n_done, err, errlen);
    if (rc == 0 && n_problems) {
        snprintf(err, errlen, "%s: %d problem%s listed above; nothing written", o->out_path, n_problems,
                 n_problems == 1 ? "" : "s");
        rc = -1;
    }
    if (rc) {
        h5ds_abort(f);
        return -1;
    }
    if (h5ds_commit(f, err, errlen)) return -1;
    if (!o->quiet)
        printf("dod-data pack: %" PRId64 " sample%s into task %s of %s\n", n_done, n_done == 1 ? "" : "s", o->task,
               o->out_path);
    return 0;
}

int synth_run(const SynthOptions *o, char *err, size_t errlen) {
    if (!o->clean_dir || !o->out_path || o->n_kinds < 1) {
        snprintf(err, errlen, "synth needs --clean DIR, --tasks LIST and --out FILE");
        return -1;
    }
    int want_noise = 0;
    for (int k = 0; k < o->n_kinds; k++) want_noise |= o->kinds[k] == DEG_NOISE;
    if (want_noise && check_sigmas(o->n_sigmas, o->sigmas, o->store_noisy, err, errlen)) return -1;
    char **names;
    int n;
    if (list_images(o->clean_dir, &names, &n, err, errlen)) return -1;
    if (n == 0) {
        snprintf(err, errlen, "%s: no .png/.jpg/.jpeg/.bmp images", o->clean_dir);
        free_names(names, n);
        return -1;
    }
    H5ds *f = h5ds_begin_write(o->out_path, o->append, err, errlen);
    if (!f) {
        free_names(names, n);
        return -1;
    }
    h5ds_set_deflate(f, o->deflate);
    int task_of[DEG_COUNT], rc = 0;
    for (int k = 0; k < o->n_kinds && rc == 0; k++) {
        DegradeKind kind = o->kinds[k];
        LqMode mode = kind == DEG_NOISE && !o->store_noisy ? LQ_GAUSSIAN_NOISE : LQ_STORED;
        task_of[k] = h5ds_define_task(f, degrade_task_name(kind), mode, o->sigmas, kind == DEG_NOISE ? o->n_sigmas : 0,
                                      err, errlen);
        if (task_of[k] < 0) rc = -1;
    }
    for (int i = 0; i < n && rc == 0; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", o->clean_dir, names[i]);
        Image clean;
        if (image_load(path, &clean, err, errlen)) {
            rc = -1;
            break;
        }
        for (int k = 0; k < o->n_kinds && rc == 0; k++) {
            DegradeKind kind = o->kinds[k];
            char params[512];
            H5dsSampleMeta meta = {.hq_source = names[i]};
            Image lq = {0};
            if (kind == DEG_NOISE) {
                if (o->store_noisy) {
                    lq = image_alloc(clean.w, clean.h, 3);
                    degrade_gaussian_noise(clean.pix, lq.pix, (size_t)clean.w * clean.h * 3, o->sigmas[0],
                                           pack_noise_key(o->seed, names[i], o->sigmas[0]));
                    meta.has_noise = 1;
                    meta.noise_sigma = o->sigmas[0];
                    meta.noise_seed = o->seed;
                }
            } else {
                lq = degrade_apply(kind, &clean, synth_key(o->seed, kind, names[i]), params, sizeof params);
                meta.synth_params = params;
            }
            if (lq.pix) meta.lq_source = names[i];
            if (h5ds_append_sample(f, task_of[k], &clean, lq.pix ? &lq : NULL, &meta, err, errlen) < 0) rc = -1;
            image_free(&lq);
        }
        image_free(&clean);
    }
    free_names(names, n);
    if (rc) {
        h5ds_abort(f);
        return -1;
    }
    if (h5ds_commit(f, err, errlen)) return -1;
    if (!o->quiet) {
        printf("dod-data synth: %d clean image%s x %d task%s into %s:", n, n == 1 ? "" : "s", o->n_kinds,
               o->n_kinds == 1 ? "" : "s", o->out_path);
        for (int k = 0; k < o->n_kinds; k++) printf(" %s", degrade_task_name(o->kinds[k]));
        printf("\n");
    }
    return 0;
}
