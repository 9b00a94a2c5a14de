// Benchmark definition files (see eval/bench.h).
#include "eval/bench.h"

#ifdef DOD_HAVE_INIPARSER
#include <ctype.h>
#include <errno.h>
#include <iniparser.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

// Line of `key = ...` inside [section] of path (or of the [section] header when key is NULL);
// 0 when not found. iniparser does not keep line numbers, so the raw text is scanned again.
static int ini_line(const char *path, const char *section, const char *key) {
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    char line[2048], cur[256] = "";
    int n = 0, found = 0;
    while (!found && fgets(line, sizeof line, f)) {
        n++;
        char *p = line;
        while (isspace((unsigned char)*p)) p++;
        if (*p == '[') {
            char *end = strchr(p, ']');
            if (end) snprintf(cur, sizeof cur, "%.*s", (int)(end - p - 1), p + 1);
            if (!key && !strcasecmp(cur, section)) found = n;
            continue;
        }
        if (!key || strcasecmp(cur, section)) continue;
        size_t kl = strlen(key);
        if (!strncasecmp(p, key, kl) && (isspace((unsigned char)p[kl]) || p[kl] == '=')) found = n;
    }
    fclose(f);
    return found;
}

typedef struct {
    char *buf;
    size_t len, used;
    int count;
} Problems;

static void problem(Problems *pr, const char *path, const char *section, const char *key, const char *fmt, ...) {
    int line = ini_line(path, section, key);
    if (!line && key) line = ini_line(path, section, NULL);
    if (pr->used + 1 >= pr->len) return;
    int w = line ? snprintf(pr->buf + pr->used, pr->len - pr->used, "%s:%d: [%s]%s%s: ", path, line, section,
                            key ? " " : "", key ? key : "")
                 : snprintf(pr->buf + pr->used, pr->len - pr->used, "%s: [%s]%s%s: ", path, section, key ? " " : "",
                            key ? key : "");
    if (w > 0) pr->used += (size_t)w < pr->len - pr->used ? (size_t)w : pr->len - pr->used - 1;
    va_list ap;
    va_start(ap, fmt);
    w = vsnprintf(pr->buf + pr->used, pr->len - pr->used, fmt, ap);
    va_end(ap);
    if (w > 0) pr->used += (size_t)w < pr->len - pr->used ? (size_t)w : pr->len - pr->used - 1;
    if (pr->used + 1 < pr->len) pr->buf[pr->used++] = '\n', pr->buf[pr->used] = 0;
    pr->count++;
}

static const char *get(dictionary *d, const char *section, const char *key) {
    char full[256];
    snprintf(full, sizeof full, "%s:%s", section, key);
    return iniparser_getstring(d, full, NULL);
}

// Reads the metric keys of section over *mo (=, only those present).
static void read_metric_keys(dictionary *d, const char *path, const char *section, MetricOpts *mo, Problems *pr) {
    const char *v;
    if ((v = get(d, section, "profile")) && metrics_profile_parse(v, &mo->profile))
        problem(pr, path, section, "profile", "'%s' is not a metric profile (promptir, basicsr)", v);
    static const char *ints[] = {"crop_multiple", "crop_border"};
    for (int k = 0; k < 2; k++) {
        if (!(v = get(d, section, ints[k]))) continue;
        char *end;
        errno = 0;
        long x = strtol(v, &end, 10);
        if (errno || end == v || *end || x < 0 || x > 4096) {
            problem(pr, path, section, ints[k], "'%s' is not an integer in [0, 4096]", v);
            continue;
        }
        if (k == 0) mo->crop_multiple = (int)x;
        else mo->crop_border = (int)x;
    }
    if ((v = get(d, section, "y_channel"))) {
        if (!strcasecmp(v, "true") || !strcmp(v, "1")) mo->y_channel = true;
        else if (!strcasecmp(v, "false") || !strcmp(v, "0")) mo->y_channel = false;
        else problem(pr, path, section, "y_channel", "'%s' is not true or false", v);
    }
}

static bool valid_name(const char *s) {
    if (!*s) return false;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && *s != '_' && *s != '-') return false;
    return true;
}

static void check_keys(dictionary *d, const char *path, const char *section, const char *const *allowed, Problems *pr) {
    int n = iniparser_getsecnkeys(d, section);
    if (n <= 0) return;
    const char **keys = calloc((size_t)n, sizeof(char *));
    iniparser_getseckeys(d, section, keys);
    for (int i = 0; i < n; i++) {
        const char *k = strchr(keys[i], ':') ? strchr(keys[i], ':') + 1 : keys[i];
        bool ok = false;
        for (int a = 0; allowed[a] && !ok; a++) ok = !strcmp(k, allowed[a]);
        if (!ok) problem(pr, path, section, k, "unknown key");
    }
    free(keys);
}

int bench_load(const char *path, Bench *b, char *err, size_t errlen) {
    memset(b, 0, sizeof *b);
    snprintf(b->path, sizeof b->path, "%s", path);
    FILE *probe = fopen(path, "r");
    if (!probe) {
        snprintf(err, errlen, "%s: cannot read the benchmark definition: %s", path, strerror(errno));
        return -1;
    }
    fclose(probe);
    dictionary *d = iniparser_load(path);
    if (!d) {
        snprintf(err, errlen, "%s: not a readable INI file", path);
        return -1;
    }
    Problems pr = {.buf = err, .len = errlen};
    err[0] = 0;
    static const char *bench_keys[] = {"name", "title", "profile", "crop_multiple", "crop_border", "y_channel", "tasks", NULL};
    static const char *task_keys[] = {"label", "file", "task", "sigma", "profile", "crop_multiple", "crop_border",
                                      "y_channel", NULL};
    const char *v;
    MetricOpts defaults = metrics_opts_default(METRIC_PROFILE_PROMPTIR);
    defaults.crop_multiple = 16;
    if (iniparser_find_entry(d, "benchmark") == 0) {
        problem(&pr, path, "benchmark", NULL, "section missing");
    } else {
        check_keys(d, path, "benchmark", bench_keys, &pr);
        snprintf(b->name, sizeof b->name, "%s", (v = get(d, "benchmark", "name")) ? v : "");
        snprintf(b->title, sizeof b->title, "%s", (v = get(d, "benchmark", "title")) ? v : "");
        if (!valid_name(b->name)) problem(&pr, path, "benchmark", "name", "required: letters, digits, _ or -");
        read_metric_keys(d, path, "benchmark", &defaults, &pr);
        char list[BENCH_STR];
        snprintf(list, sizeof list, "%s", (v = get(d, "benchmark", "tasks")) ? v : "");
        for (char *tok = strtok(list, ", \t"); tok; tok = strtok(NULL, ", \t")) {
            if (b->n_tasks == BENCH_MAX_TASKS) {
                problem(&pr, path, "benchmark", "tasks", "more than %d test sets", BENCH_MAX_TASKS);
                break;
            }
            BenchTask *t = &b->tasks[b->n_tasks++];
            snprintf(t->id, sizeof t->id, "%s", tok);
            for (char *c = t->id; *c; c++) *c = (char)tolower((unsigned char)*c);   // iniparser lower-cases
        }
        if (b->n_tasks == 0) problem(&pr, path, "benchmark", "tasks", "required: a comma-separated list of sections");
    }
    for (int i = 0; i < b->n_tasks; i++) {
        BenchTask *t = &b->tasks[i];
        for (int j = 0; j < i; j++)
            if (!strcmp(b->tasks[j].id, t->id)) problem(&pr, path, "benchmark", "tasks", "'%s' listed twice", t->id);
        if (iniparser_find_entry(d, t->id) == 0) {
            problem(&pr, path, "benchmark", "tasks", "lists '%s', but there is no [%s] section", t->id, t->id);
            continue;
        }
        check_keys(d, path, t->id, task_keys, &pr);
        snprintf(t->label, sizeof t->label, "%s", (v = get(d, t->id, "label")) ? v : t->id);
        if (!(v = get(d, t->id, "file")) || !*v) problem(&pr, path, t->id, "file", "required (a dod-data .h5 file)");
        else snprintf(t->file, sizeof t->file, "%s", v);
        if (!(v = get(d, t->id, "task")) || !valid_name(v)) problem(&pr, path, t->id, "task", "required: a task name in the file");
        else snprintf(t->task, sizeof t->task, "%s", v);
        t->sigma = -1;
        if ((v = get(d, t->id, "sigma"))) {
            char *end;
            double s = strtod(v, &end);
            if (end == v || *end || !(s > 0 && s <= 255)) problem(&pr, path, t->id, "sigma", "'%s' is not a number in (0, 255]", v);
            else t->sigma = s;
        }
        t->metrics = defaults;
        read_metric_keys(d, path, t->id, &t->metrics, &pr);
        if (t->metrics.y_channel && t->metrics.profile != METRIC_PROFILE_BASICSR)
            problem(&pr, path, t->id, "y_channel", "the Y channel needs profile = basicsr");
    }
    // sections nobody lists
    for (int s = 0; s < iniparser_getnsec(d); s++) {
        const char *sec = iniparser_getsecname(d, s);
        bool listed = !strcmp(sec, "benchmark");
        for (int i = 0; i < b->n_tasks && !listed; i++) listed = !strcmp(sec, b->tasks[i].id);
        if (!listed) problem(&pr, path, sec, NULL, "section not listed in [benchmark] tasks");
    }
    iniparser_freedict(d);
    return pr.count ? -1 : 0;
}
#else
#include <stdio.h>
int bench_load(const char *path, Bench *b, char *err, size_t errlen) {
    (void)b;
    snprintf(err, errlen, "%s: reading benchmark definitions needs iniparser, which this build lacks", path);
    return -1;
}
#endif
