// LQ/HQ file matching (see data/pairing.h).
#include "data/pairing.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/base.h"

static char *dup_str(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = dod_malloc(n, "file name");
    memcpy(d, s, n);
    return d;
}

static char *join_path(const char *dir, const char *name) {
    if (!dir || !*dir || name[0] == '/') return dup_str(name);
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = dod_malloc(n, "path");
    snprintf(p, n, "%s%s%s", dir, dir[strlen(dir) - 1] == '/' ? "" : "/", name);
    return p;
}

int is_image_name(const char *name) {
    const char *dot = strrchr(name, '.');
    if (!dot || dot == name) return 0;
    static const char *exts[] = {".png", ".jpg", ".jpeg", ".bmp"};
    for (size_t i = 0; i < sizeof exts / sizeof exts[0]; i++)
        if (!strcasecmp(dot, exts[i])) return 1;
    return 0;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

int list_images(const char *dir, char ***names, int *n, char *err, size_t errlen) {
    *names = NULL;
    *n = 0;
    DIR *d = opendir(dir);
    if (!d) {
        snprintf(err, errlen, "%s: cannot read directory: %s", dir, strerror(errno));
        return -1;
    }
    int cap = 64;
    char **list = dod_malloc(sizeof(char *) * cap, "file list");
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.' || !is_image_name(e->d_name)) continue;
        if (*n == cap) {
            cap *= 2;
            list = realloc(list, sizeof(char *) * cap);
            DOD_CHECK(list, "list_images", "out of memory listing %s", dir);
        }
        list[(*n)++] = dup_str(e->d_name);
    }
    closedir(d);
    qsort(list, *n, sizeof(char *), cmp_str);
    *names = list;
    return 0;
}

void free_names(char **names, int n) {
    for (int i = 0; i < n; i++) free(names[i]);
    free(names);
}

// Stem of a file name: the name without its last extension, into buf.
static void stem_of(const char *name, char *buf, size_t len) {
    snprintf(buf, len, "%s", name);
    char *dot = strrchr(buf, '.');
    if (dot && dot != buf) *dot = 0;
}

static int find_stem(const char *const *stems, int n, const char *stem) {
    for (int i = 0; i < n; i++)
        if (!strcmp(stems[i], stem)) return i;
    return -1;
}

int pair_match_stem(const char *lq_stem, const char *const *hq_stems, int n_hq, char *hq_stem, size_t len) {
    char cand[1024];
    // 1. same stem (LOL, GoPro)
    if (find_stem(hq_stems, n_hq, lq_stem) >= 0) {
        snprintf(hq_stem, len, "%s", lq_stem);
        return 1;
    }
    // 2. Rain100L/H: rain-001 -> norain-001
    if (!strncmp(lq_stem, "rain", 4)) {
        snprintf(cand, sizeof cand, "no%s", lq_stem);
        if (find_stem(hq_stems, n_hq, cand) >= 0) {
            snprintf(hq_stem, len, "%s", cand);
            return 2;
        }
    }
    // 3. RESIDE: id before the first '_'
    const char *us = strchr(lq_stem, '_');
    if (us && us != lq_stem) {
        snprintf(cand, sizeof cand, "%.*s", (int)(us - lq_stem), lq_stem);
        if (find_stem(hq_stems, n_hq, cand) >= 0) {
            snprintf(hq_stem, len, "%s", cand);
            return 3;
        }
    }
    return 0;
}

static void push_str(char ***list, int *n, char *s) {
    *list = realloc(*list, sizeof(char *) * (*n + 1));
    DOD_CHECK(*list, "pairing", "out of memory");
    (*list)[(*n)++] = s;
}

static void push_pair(PairList *pl, char *lq, char *hq) {
    pl->pairs = realloc(pl->pairs, sizeof(PathPair) * (pl->n_pairs + 1));
    DOD_CHECK(pl->pairs, "pairing", "out of memory");
    pl->pairs[pl->n_pairs].lq = lq;
    pl->pairs[pl->n_pairs].hq = hq;
    pl->n_pairs++;
}

int pair_by_name(const char *lq_dir, const char *hq_dir, PairList *out, char *err, size_t errlen) {
    memset(out, 0, sizeof *out);
    char **lq_names, **hq_names;
    int n_lq, n_hq;
    if (list_images(lq_dir, &lq_names, &n_lq, err, errlen)) return -1;
    if (list_images(hq_dir, &hq_names, &n_hq, err, errlen)) {
        free_names(lq_names, n_lq);
        return -1;
    }
    char **hq_stems = dod_malloc(sizeof(char *) * (n_hq + 1), "stems");
    int *hq_used = dod_calloc(sizeof(int) * (n_hq + 1), "stems");
    int rc = 0;
    for (int i = 0; i < n_hq; i++) {
        char stem[1024];
        stem_of(hq_names[i], stem, sizeof stem);
        hq_stems[i] = dup_str(stem);
        int dup = find_stem((const char *const *)hq_stems, i, stem);
        if (dup >= 0 && rc == 0) {
            snprintf(err, errlen, "%s: '%s' and '%s' have the same stem '%s'; the LQ/HQ match would be ambiguous",
                     hq_dir, hq_names[dup], hq_names[i], stem);
            rc = -1;
        }
    }
    for (int i = 0; i < n_lq && rc == 0; i++) {
        char stem[1024], hq_stem[1024];
        stem_of(lq_names[i], stem, sizeof stem);
        if (pair_match_stem(stem, (const char *const *)hq_stems, n_hq, hq_stem, sizeof hq_stem)) {
            int j = find_stem((const char *const *)hq_stems, n_hq, hq_stem);
            hq_used[j] = 1;
            push_pair(out, join_path(lq_dir, lq_names[i]), join_path(hq_dir, hq_names[j]));
        } else {
            push_str(&out->unmatched_lq, &out->n_unmatched_lq, join_path(lq_dir, lq_names[i]));
        }
    }
    for (int j = 0; j < n_hq && rc == 0; j++)
        if (!hq_used[j]) push_str(&out->unmatched_hq, &out->n_unmatched_hq, join_path(hq_dir, hq_names[j]));
    for (int i = 0; i < n_hq; i++) free(hq_stems[i]);
    free(hq_stems);
    free(hq_used);
    free_names(lq_names, n_lq);
    free_names(hq_names, n_hq);
    if (rc) pairlist_free(out);
    return rc;
}

static char *trim(char *s) {
    while (isspace((unsigned char)*s)) s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1])) *--e = 0;
    return s;
}

int pair_from_list(const char *list_path, const char *lq_dir, const char *hq_dir, PairList *out, char *err,
                   size_t errlen) {
    memset(out, 0, sizeof *out);
    FILE *f = fopen(list_path, "r");
    if (!f) {
        snprintf(err, errlen, "%s: cannot open pair list: %s", list_path, strerror(errno));
        return -1;
    }
    char line[8192];
    int lineno = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        char *hash = strchr(line, '#');
        if (hash) *hash = 0;
        char *s = trim(line);
        if (!*s) continue;
        const char *separators = strchr(s, '\t') ? "\t" : " \t";
        char *sep = strpbrk(s, separators);
        char *second = sep ? trim(sep + 1) : NULL;
        if (sep) *sep = 0;
        if (!second || !*second || strpbrk(second, separators)) {
            snprintf(err, errlen, "%s:%d: expected two paths 'LQ HQ' (a tab between them if names have spaces)",
                     list_path, lineno);
            fclose(f);
            pairlist_free(out);
            return -1;
        }
        if (!is_image_name(s) || !is_image_name(second)) {
            snprintf(err, errlen, "%s:%d: '%s' / '%s': not .png/.jpg/.jpeg/.bmp names", list_path, lineno, s, second);
            fclose(f);
            pairlist_free(out);
            return -1;
        }
        push_pair(out, join_path(lq_dir, trim(s)), join_path(hq_dir, second));
    }
    fclose(f);
    if (out->n_pairs == 0) {
        snprintf(err, errlen, "%s: no pairs in the list", list_path);
        return -1;
    }
    return 0;
}

void pairlist_free(PairList *pl) {
    for (int i = 0; i < pl->n_pairs; i++) {
        free(pl->pairs[i].lq);
        free(pl->pairs[i].hq);
    }
    free(pl->pairs);
    free_names(pl->unmatched_lq, pl->n_unmatched_lq);
    free_names(pl->unmatched_hq, pl->n_unmatched_hq);
    memset(pl, 0, sizeof *pl);
}
