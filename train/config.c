// Training configuration: schema table, INI reading (iniparser + a line scan), overrides,
// validation, resolved text, reference docs. See train/config.h for the dialect and error format.
#include "train/config.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <iniparser.h>

#include "autograd/tensor.h"

// ---- the schema ----------------------------------------------------------------------------------
typedef enum { T_INT, T_FLOAT, T_BOOL, T_STRING, T_ENUM, T_LIST } FieldType;

typedef struct {
    const char *section, *key;
    FieldType type;
    const char *def;       // default as INI text; NULL: required (string/list keys only)
    double min, max;       // int/float: inclusive range
    const char *choices;   // enum: "a|b|c"; the stored int is the index
    size_t off;            // offsetof(TrainConfig, ...)
    bool resume_free;      // may differ from the checkpoint's value on --resume
    const char *help;
} Field;

#define OFF(f) offsetof(TrainConfig, f)
#define BIG 1e15
static const Field FIELDS[] = {
    {"model", "kind", T_ENUM, "dod", 0, 0, "toy|dod", OFF(model_kind), false,
     "model to train: `dod` (SD 2.1-base + DOD modules) or `toy` (a 3-layer conv net, for tests)"},
    {"model", "base", T_STRING, "", 0, 0, NULL, OFF(model_base), false,
     "diffusers SD 2.1-base directory (unet/, vae/, scheduler/); required for kind = dod"},
    {"model", "prompt_embedding", T_STRING, "", 0, 0, NULL, OFF(prompt_embedding), false,
     "safetensors file with the fixed 77 x 1024 prompt embedding (scripts/encode_prompt.py); empty: zeros, with a warning"},
    {"model", "frozen_dtype", T_ENUM, "bf16", 0, 0, "f32|bf16", OFF(frozen_dtype), false,
     "storage of frozen weights (compute is f32)"},
    {"model", "toy_width", T_INT, "8", 1, 256, NULL, OFF(toy_width), false, "toy model: hidden channels"},
    {"model", "device", T_ENUM, "cpu", 0, 0, "cpu|cuda", OFF(device), true,
     "where the model, the batches and AdamW live: `cpu`, or `cuda` (GPU 0; needs a CUDA build and a usable GPU); "
     "checkpoints resume on either device (docs/training.md)"},
    {"model", "precision", T_ENUM, "f32", 0, 0, "f32|mixed", OFF(precision), true,
     "CUDA compute precision: `f32` (TF32 off, the parity mode) or `mixed` (frozen bf16 linear weights read as "
     "bf16 by cuBLAS with the activations rounded to bf16 around those products, TF32 for convolutions and f32 "
     "products; master weights, norms, softmax and losses stay f32); `mixed` needs device = cuda"},
    {"model", "activations", T_ENUM, "auto", 0, 0, "auto|f32|bf16", OFF(activations), true,
     "storage of activations, any device: `bf16` halves the memory the forward keeps for backward (products and "
     "what follows them stored in bf16, computed in f32; losses, softmax, norm statistics and gradients stay f32); "
     "`auto`: bf16 when precision = mixed, else f32"},
    {"lora", "rank", T_INT, "8", 1, 1024, NULL, OFF(lora_rank), false, "LoRA rank r"},
    {"lora", "alpha", T_FLOAT, "8", 1e-6, 1e6, NULL, OFF(lora_alpha), false,
     "LoRA alpha; the adapter scale is alpha / r (PEFT's default alpha is 8)"},
    {"modulation", "extractor", T_ENUM, "cnn", 0, 0, "cnn|vae", OFF(extractor), false,
     "degradation feature extractor F(y)"},
    {"stage", "stage", T_INT, "1", 1, 2, NULL, OFF(stage), false,
     "1: LoRA + conv_in + modulation; 2: detail module only, stage 1 frozen"},
    {"stage", "init_from", T_STRING, "", 0, 0, NULL, OFF(init_from), false,
     "stage 2: a stage-1 run dir (its latest checkpoint) or checkpoint file"},
    {"data", "train", T_STRING, NULL, 0, 0, NULL, OFF(train_file), false, "training dataset (.h5, `dod-data pack`)"},
    {"data", "tasks", T_LIST, NULL, 0, 0, NULL, OFF(tasks), false,
     "tasks and per-step counts in batch order, `name:count,...` (task names as in the file)"},
    {"data", "crop", T_INT, "256", 16, 8192, NULL, OFF(crop), false, "square random crop side (pixels)"},
    {"data", "flips", T_BOOL, "true", 0, 0, NULL, OFF(flips), false, "random horizontal/vertical flips"},
    {"data", "threads", T_INT, "2", 0, 256, NULL, OFF(loader_threads), true,
     "loader threads (0: read in the training thread); batches do not depend on it"},
    {"data", "val", T_STRING, "", 0, 0, NULL, OFF(val_file), true, "validation dataset (.h5); empty: no validation"},
    {"optim", "lr", T_FLOAT, "5e-5", 0, 1, NULL, OFF(lr), false, "AdamW learning rate (peak)"},
    {"optim", "beta1", T_FLOAT, "0.9", 0, 0.999999, NULL, OFF(beta1), false, "AdamW beta1"},
    {"optim", "beta2", T_FLOAT, "0.999", 0, 0.99999999, NULL, OFF(beta2), false, "AdamW beta2"},
    {"optim", "weight_decay", T_FLOAT, "1e-2", 0, 1, NULL, OFF(weight_decay), false, "AdamW decoupled weight decay"},
    {"optim", "eps", T_FLOAT, "1e-8", 0, 1, NULL, OFF(eps), false, "AdamW epsilon"},
    {"optim", "clip_norm", T_FLOAT, "1.0", 0, BIG, NULL, OFF(clip_norm), false,
     "global gradient-norm clipping (0: off)"},
    {"optim", "schedule", T_ENUM, "constant", 0, 0, "constant|cosine", OFF(schedule), false,
     "learning-rate schedule (cosine decays to 0 at train.steps)"},
    {"optim", "warmup", T_INT, "0", 0, BIG, NULL, OFF(warmup), false, "linear warm-up steps"},
    {"optim", "grad_accum", T_INT, "1", 1, 4096, NULL, OFF(grad_accum), false,
     "micro-batches per optimizer step (loss divided by it)"},
    {"loss", "mse", T_FLOAT, "1", 0, 1e6, NULL, OFF(loss_mse), false, "weight of MSE(out, hq) on [-1, 1] images"},
    {"loss", "ssim", T_FLOAT, "0", 0, 1e6, NULL, OFF(loss_ssim), false,
     "weight of 1 - SSIM(out, hq) (data range 2, 11x11 Gaussian window)"},
    {"loss", "lpips", T_FLOAT, "0", 0, 0, NULL, OFF(loss_lpips), false,
     "weight of LPIPS(VGG); must be 0 until LPIPS is implemented"},
    {"train", "steps", T_INT, "100000", 1, BIG, NULL, OFF(steps), true, "optimizer steps of the run (total)"},
    {"train", "seed", T_INT, "123", 0, BIG, NULL, OFF(seed), false,
     "seed of parameter init, batches and training noise"},
    {"train", "recompute", T_BOOL, "false", 0, 0, NULL, OFF(recompute), true,
     "activation recomputation (less memory, same numbers: bitwise on the CPU)"},
    {"train", "run_dir", T_STRING, NULL, 0, 0, NULL, OFF(run_dir), true,
     "run directory (config copy, metrics, checkpoints, samples)"},
    {"log", "every", T_INT, "10", 1, BIG, NULL, OFF(log_every), true, "steps between JSONL metrics lines"},
    {"log", "jsonl", T_STRING, "metrics.jsonl", 0, 0, NULL, OFF(log_jsonl), true,
     "metrics log, relative to the run dir unless absolute"},
    {"log", "tensorboard", T_BOOL, "true", 0, 0, NULL, OFF(log_tensorboard), true,
     "TensorBoard event files in RUN_DIR/tb (the [log] every scalars, validation scores and grids; "
     "`tensorboard --logdir RUN_DIR/tb`)"},
    {"checkpoint", "every", T_INT, "1000", 1, BIG, NULL, OFF(ckpt_every), true, "steps between checkpoints"},
    {"checkpoint", "keep_last", T_INT, "3", 0, BIG, NULL, OFF(ckpt_keep_last), true,
     "checkpoints kept (older ones deleted; 0: keep all)"},
    {"checkpoint", "dir", T_STRING, "checkpoints", 0, 0, NULL, OFF(ckpt_dir), false,
     "checkpoint folder, relative to the run dir unless absolute"},
    {"val", "every", T_INT, "1000", 0, BIG, NULL, OFF(val_every), true, "steps between validations (0: never)"},
    {"val", "images", T_INT, "4", 1, 10000, NULL, OFF(val_images), true,
     "validation images: the first K of data.val, taken round-robin over its tasks"},
    {"val", "grid", T_BOOL, "true", 0, 0, NULL, OFF(val_grid), true, "write samples/step_N.png (rows lq | out | hq)"},
};
#define N_FIELDS ((int)(sizeof FIELDS / sizeof FIELDS[0]))
static const char *SECTIONS[] = {"model", "lora", "modulation", "stage", "data", "optim",
                                 "loss", "train", "log", "checkpoint", "val"};
#define N_SECTIONS ((int)(sizeof SECTIONS / sizeof SECTIONS[0]))
_Static_assert(sizeof FIELDS / sizeof FIELDS[0] <= CFG_MAX_FIELDS, "raise CFG_MAX_FIELDS");
_Static_assert(sizeof SECTIONS / sizeof SECTIONS[0] <= CFG_MAX_SECTIONS, "raise CFG_MAX_SECTIONS");

static int find_section(const char *s) {
    for (int i = 0; i < N_SECTIONS; i++)
        if (!strcmp(SECTIONS[i], s)) return i;
    return -1;
}
static int find_field(const char *section, const char *key) {
    for (int i = 0; i < N_FIELDS; i++)
        if (!strcmp(FIELDS[i].section, section) && !strcmp(FIELDS[i].key, key)) return i;
    return -1;
}

// ---- error accumulation ---------------------------------------------------------------------------
// Appends one line to err (keeps what fits).
static void err_add(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void err_add(char *err, size_t errlen, const char *fmt, ...) {
    if (!err || !errlen) return;
    size_t used = strlen(err);
    if (used && used + 1 < errlen) err[used++] = '\n', err[used] = 0;
    if (used >= errlen) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err + used, errlen - used, fmt, ap);
    va_end(ap);
}

static void keys_of_section(const char *section, char *buf, size_t len) {
    buf[0] = 0;
    for (int i = 0; i < N_FIELDS; i++)
        if (!strcmp(FIELDS[i].section, section))
            snprintf(buf + strlen(buf), len - strlen(buf), "%s%s", buf[0] ? ", " : "", FIELDS[i].key);
}

// ---- values -----------------------------------------------------------------------------------------
static char *trim(char *s) {
    while (isspace((unsigned char)*s)) s++;
    size_t n = strlen(s);
    while (n && isspace((unsigned char)s[n - 1])) s[--n] = 0;
    return s;
}
static void lower(char *s) {
    for (; *s; s++) *s = (char)tolower((unsigned char)*s);
}

// Checks a task list "name:count,...": 1..16 tasks, names [A-Za-z0-9_-]{1,63}, counts >= 1, no repeats.
static int check_task_list(const char *v, char *why, size_t len) {
    char buf[CFG_STR], names[16][64];
    int n = 0;
    snprintf(buf, sizeof buf, "%s", v);
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        char *item = trim(tok), *colon = strchr(item, ':');
        if (!colon) return snprintf(why, len, "task '%s' has no count (expected name:count, e.g. dehaze:3)", item), -1;
        *colon = 0;
        char *name = trim(item), *cnt = trim(colon + 1), *end;
        size_t nl = strlen(name);
        if (nl == 0 || nl > 63 || strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") != nl)
            return snprintf(why, len, "bad task name '%s' (1-63 of A-Z a-z 0-9 _ -)", name), -1;
        errno = 0;
        long c = strtol(cnt, &end, 10);
        if (errno || end == cnt || *end || c < 1 || c > 1024)
            return snprintf(why, len, "task %s: count '%s' is not an integer in [1, 1024]", name, cnt), -1;
        if (n == 16) return snprintf(why, len, "more than 16 tasks"), -1;
        for (int i = 0; i < n; i++)
            if (!strcmp(names[i], name)) return snprintf(why, len, "task %s listed twice", name), -1;
        snprintf(names[n++], 64, "%s", name);
    }
    if (n == 0) return snprintf(why, len, "empty task list (expected name:count,...)"), -1;
    return 0;
}

// Parses text into field f of c (=). Returns 0, or -1 with the reason in why.
static int set_value(TrainConfig *c, const Field *f, const char *text, char *why, size_t len) {
    char *p = (char *)c + f->off;
    char *end;
    switch (f->type) {
    case T_INT: {
        errno = 0;
        long long v = strtoll(text, &end, 10);
        if (errno || end == text || *trim(end)) return snprintf(why, len, "expected an integer, got '%s'", text), -1;
        if (v < f->min || v > f->max)
            return snprintf(why, len, "%lld is out of range [%.15g, %.15g]", v, f->min, f->max), -1;
        *(long long *)p = v;
        return 0;
    }
    case T_FLOAT: {
        errno = 0;
        double v = strtod(text, &end);
        if (errno == ERANGE || end == text || *trim(end) || !isfinite(v))
            return snprintf(why, len, "expected a number, got '%s'", text), -1;
        if (v < f->min || v > f->max) {
            if (f->min == f->max) return snprintf(why, len, "LPIPS is not implemented yet; the weight must be 0 (got %s)", text), -1;
            return snprintf(why, len, "%s is out of range [%g, %g]", text, f->min, f->max), -1;
        }
        *(double *)p = v;
        return 0;
    }
    case T_BOOL: {
        static const char *yes[] = {"true", "yes", "on", "1"}, *no[] = {"false", "no", "off", "0"};
        for (int i = 0; i < 4; i++) {
            if (!strcasecmp(text, yes[i])) return *(bool *)p = true, 0;
            if (!strcasecmp(text, no[i])) return *(bool *)p = false, 0;
        }
        return snprintf(why, len, "expected true or false, got '%s'", text), -1;
    }
    case T_ENUM: {
        char ch[128];
        snprintf(ch, sizeof ch, "%s", f->choices);
        int idx = 0;
        for (char *save = NULL, *tok = strtok_r(ch, "|", &save); tok; tok = strtok_r(NULL, "|", &save), idx++)
            if (!strcmp(tok, text)) return *(int *)p = idx, 0;
        return snprintf(why, len, "'%s' is not one of %s", text, f->choices), -1;
    }
    case T_LIST:
        if (check_task_list(text, why, len)) return -1;
        // fallthrough
    case T_STRING:
        if (strchr(text, '"')) return snprintf(why, len, "double quotes are not allowed in values"), -1;
        if (strlen(text) >= CFG_STR) return snprintf(why, len, "value longer than %d characters", CFG_STR - 1), -1;
        snprintf(p, CFG_STR, "%s", text);
        return 0;
    }
    return -1;
}

// Canonical text of field f's value (=): what config_to_text writes and config_compare_text compares.
static void format_value(const TrainConfig *c, const Field *f, char *buf, size_t len) {
    const char *p = (const char *)c + f->off;
    switch (f->type) {
    case T_INT: snprintf(buf, len, "%lld", *(const long long *)p); break;
    case T_FLOAT: {
        double v = *(const double *)p;
        snprintf(buf, len, "%.15g", v);           // shortest of these that reads back exactly
        if (strtod(buf, NULL) != v) snprintf(buf, len, "%.17g", v);
        break;
    }
    case T_BOOL: snprintf(buf, len, "%s", *(const bool *)p ? "true" : "false"); break;
    case T_ENUM: {
        char ch[128];
        snprintf(ch, sizeof ch, "%s", f->choices);
        int idx = 0, want = *(const int *)p;
        buf[0] = 0;
        for (char *save = NULL, *tok = strtok_r(ch, "|", &save); tok; tok = strtok_r(NULL, "|", &save), idx++)
            if (idx == want) snprintf(buf, len, "%s", tok);
        break;
    }
    case T_STRING:
    case T_LIST: snprintf(buf, len, "\"%s\"", p); break;
    }
}

void config_defaults(TrainConfig *c) {
    memset(c, 0, sizeof *c);
    char why[256];
    for (int i = 0; i < N_FIELDS; i++)
        if (FIELDS[i].def && set_value(c, &FIELDS[i], FIELDS[i].def, why, sizeof why))
            dod_fatal("config_defaults", "schema default of [%s] %s: %s", FIELDS[i].section, FIELDS[i].key, why);
}

// ---- reading a file ---------------------------------------------------------------------------------
typedef struct {
    char section[64], key[64];   // key "" for a section header
    int line;
} ScanEntry;

typedef struct {
    ScanEntry *e;
    int n, cap;
} Scan;

// The line scan: records section headers and key lines (lower-cased) and reports lines iniparser
// would accept but this dialect does not (keys outside a section, continuation lines, repeats) and
// lines that are neither. Returns the number of problems added to err.
static int scan_file(const char *path, Scan *sc, char *err, size_t errlen) {
    FILE *f = fopen(path, "r");
    if (!f) {
        err_add(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return 1;
    }
    char raw[4096], section[64] = "";
    int line = 0, bad = 0;
    while (fgets(raw, sizeof raw, f)) {
        line++;
        char *s = trim(raw);
        if (!*s || *s == ';' || *s == '#') continue;
        if (s[strlen(s) - 1] == '\\') {
            err_add(err, errlen, "%s:%d: continuation lines (ending in \\) are not supported", path, line), bad++;
            continue;
        }
        if (sc->n == sc->cap) {
            sc->cap = sc->cap ? 2 * sc->cap : 64;
            sc->e = realloc(sc->e, sizeof(ScanEntry) * (size_t)sc->cap);
            if (!sc->e) dod_fatal("config", "out of memory scanning %s", path);
        }
        ScanEntry *e = &sc->e[sc->n];
        memset(e, 0, sizeof *e);
        e->line = line;
        if (*s == '[') {
            char *close = strchr(s, ']');
            if (!close) {
                err_add(err, errlen, "%s:%d: syntax error: '[' without ']'", path, line), bad++;
                continue;
            }
            *close = 0;
            snprintf(section, sizeof section, "%s", trim(s + 1));
            lower(section);
            snprintf(e->section, sizeof e->section, "%s", section);
            sc->n++;
            continue;
        }
        char *eq = strchr(s, '=');
        if (!eq) {
            err_add(err, errlen, "%s:%d: syntax error: expected [section] or key = value, got '%s'", path, line, s), bad++;
            continue;
        }
        *eq = 0;
        char *key = trim(s);
        lower(key);
        if (!section[0]) {
            err_add(err, errlen, "%s:%d: %s: key outside any [section]", path, line, key), bad++;
            continue;
        }
        for (int i = 0; i < sc->n; i++)
            if (sc->e[i].key[0] && !strcmp(sc->e[i].section, section) && !strcmp(sc->e[i].key, key)) {
                err_add(err, errlen, "%s:%d: [%s] %s: given twice (first on line %d)", path, line, section, key,
                        sc->e[i].line), bad++;
                break;
            }
        snprintf(e->section, sizeof e->section, "%s", section);
        snprintf(e->key, sizeof e->key, "%s", key);
        sc->n++;
    }
    fclose(f);
    return bad;
}

static int scan_line(const Scan *sc, const char *section, const char *key) {
    for (int i = 0; i < sc->n; i++)
        if (!strcmp(sc->e[i].section, section) && !strcmp(sc->e[i].key, key ? key : "")) return sc->e[i].line;
    return 0;
}

// iniparser reports syntax errors through a printf-style callback; collect them here.
static char ini_errors[1024];
static int ini_error_cb(const char *fmt, ...) {
    size_t used = strlen(ini_errors);
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(ini_errors + used, sizeof ini_errors - used, fmt, ap);
    va_end(ap);
    return n;
}

int config_load_file(TrainConfig *c, const char *path, char *err, size_t errlen) {
    if (err && errlen) err[0] = 0;
    Scan sc = {0};
    int bad = scan_file(path, &sc, err, errlen);
    if (bad) {
        free(sc.e);
        return -1;
    }
    ini_errors[0] = 0;
    iniparser_set_error_callback(ini_error_cb);
    dictionary *d = iniparser_load(path);
    iniparser_set_error_callback(NULL);
    if (!d) {
        for (char *p = ini_errors; *p; p++)
            if (*p == '\n') *p = ' ';
        err_add(err, errlen, "%s: iniparser could not read it: %s", path, ini_errors[0] ? trim(ini_errors) : "unknown error");
        free(sc.e);
        return -1;
    }
    snprintf(c->source_file, sizeof c->source_file, "%s", path);
    memset(c->section_line, 0, sizeof c->section_line);
    int nsec = iniparser_getnsec(d);
    for (int s = 0; s < nsec; s++) {
        const char *sec = iniparser_getsecname(d, s);
        int sline = scan_line(&sc, sec, NULL);
        int si = find_section(sec);
        if (si < 0) {
            char known[256] = "";
            for (int i = 0; i < N_SECTIONS; i++)
                snprintf(known + strlen(known), sizeof known - strlen(known), "%s%s", i ? ", " : "", SECTIONS[i]);
            err_add(err, errlen, "%s:%d: [%s]: unknown section (sections: %s)", path, sline, sec, known), bad++;
            continue;
        }
        c->section_line[si] = sline;
        int nk = iniparser_getsecnkeys(d, sec);
        const char **keys = calloc((size_t)(nk > 0 ? nk : 1), sizeof(char *));
        if (!keys) dod_fatal("config", "out of memory reading %s", path);
        iniparser_getseckeys(d, sec, keys);
        for (int k = 0; k < nk; k++) {
            const char *key = strchr(keys[k], ':') ? strchr(keys[k], ':') + 1 : keys[k];
            int line = scan_line(&sc, sec, key);
            int fi = find_field(sec, key);
            if (fi < 0) {
                char known[512];
                keys_of_section(sec, known, sizeof known);
                err_add(err, errlen, "%s:%d: [%s] %s: unknown key (keys of [%s]: %s)", path, line, sec, key, sec, known);
                bad++;
                continue;
            }
            char value[CFG_STR], why[512];
            snprintf(value, sizeof value, "%s", iniparser_getstring(d, keys[k], ""));
            if (set_value(c, &FIELDS[fi], trim(value), why, sizeof why)) {
                err_add(err, errlen, "%s:%d: [%s] %s: %s", path, line, sec, key, why);
                bad++;
                continue;
            }
            snprintf(c->origin[fi], CFG_ORIGIN_LEN, "%s:%d", path, line);
        }
        free(keys);
    }
    iniparser_freedict(d);
    free(sc.e);
    return bad ? -1 : 0;
}

int config_set(TrainConfig *c, const char *assignment, char *err, size_t errlen) {
    if (err && errlen) err[0] = 0;
    char buf[CFG_STR + 128];
    snprintf(buf, sizeof buf, "%s", assignment);
    char *eq = strchr(buf, '=');
    char *dot = eq ? memchr(buf, '.', (size_t)(eq - buf)) : NULL;
    if (!eq || !dot) {
        err_add(err, errlen, "--set %s: expected section.key=value (e.g. --set optim.lr=1e-4)", assignment);
        return -1;
    }
    *eq = 0;
    *dot = 0;
    char *sec = trim(buf), *key = trim(dot + 1), *value = trim(eq + 1);
    lower(sec);
    lower(key);
    int fi = find_field(sec, key);
    if (fi < 0) {
        char known[512];
        keys_of_section(sec, known, sizeof known);
        if (find_section(sec) < 0) err_add(err, errlen, "--set %s: [%s]: unknown section", assignment, sec);
        else err_add(err, errlen, "--set %s: [%s] %s: unknown key (keys of [%s]: %s)", assignment, sec, key, sec, known);
        return -1;
    }
    char why[512];
    if (set_value(c, &FIELDS[fi], value, why, sizeof why)) {
        err_add(err, errlen, "--set %s: [%s] %s: %s", assignment, sec, key, why);
        return -1;
    }
    snprintf(c->origin[fi], CFG_ORIGIN_LEN, "--set %s", assignment);
    return 0;
}

// ---- validation -------------------------------------------------------------------------------------
// Error prefix for field fi: where its value came from, or the file (and its section's line).
static void where(const TrainConfig *c, int fi, char *buf, size_t len) {
    if (c->origin[fi][0]) {
        snprintf(buf, len, "%s", c->origin[fi]);
        return;
    }
    int si = find_section(FIELDS[fi].section);
    if (c->source_file[0] && si >= 0 && c->section_line[si])
        snprintf(buf, len, "%s:%d", c->source_file, c->section_line[si]);
    else snprintf(buf, len, "%s", c->source_file[0] ? c->source_file : "config");
}

void config_where(const TrainConfig *c, const char *section, const char *key, char *buf, size_t len) {
    int fi = find_field(section, key);
    if (fi < 0) dod_fatal("config_where", "[%s] %s is not in the schema", section, key);
    where(c, fi, buf, len);
}

static void complain(const TrainConfig *c, const char *section, const char *key, char *err, size_t errlen,
                     const char *what) {
    int fi = find_field(section, key);
    char w[CFG_STR + 32];
    where(c, fi, w, sizeof w);
    err_add(err, errlen, "%s: [%s] %s: %s", w, section, key, what);
}

int config_validate(const TrainConfig *c, char *err, size_t errlen) {
    if (err && errlen) err[0] = 0;
    int bad = 0;
    for (int i = 0; i < N_FIELDS; i++)
        if (!FIELDS[i].def && !((const char *)c + FIELDS[i].off)[0])
            complain(c, FIELDS[i].section, FIELDS[i].key, err, errlen, "required key is missing"), bad++;
    if (c->model_kind == CFG_MODEL_DOD) {
        if (!c->model_base[0])
            complain(c, "model", "base", err, errlen, "required for kind = dod (a diffusers SD 2.1-base directory)"), bad++;
        if (c->crop % 8)
            complain(c, "data", "crop", err, errlen, "must be a multiple of 8 for kind = dod (VAE downsampling)"), bad++;
    }
    if (c->stage == 2 && !c->init_from[0])
        complain(c, "stage", "init_from", err, errlen, "required for stage 2 (a stage-1 run dir or checkpoint)"), bad++;
    if (c->stage == 1 && c->init_from[0])
        complain(c, "stage", "init_from", err, errlen, "only stage 2 starts from a checkpoint; leave it empty for stage 1"), bad++;
    if (c->loss_lpips != 0)
        complain(c, "loss", "lpips", err, errlen, "LPIPS is not implemented yet; the weight must be 0"), bad++;
    if (c->loss_mse == 0 && c->loss_ssim == 0 && c->loss_lpips == 0)
        complain(c, "loss", "mse", err, errlen, "every loss weight is 0"), bad++;
    if (c->beta1 >= 1 || c->beta2 >= 1) complain(c, "optim", "beta1", err, errlen, "betas must be < 1"), bad++;
    if (c->precision == CFG_PRECISION_MIXED && c->device != CFG_DEVICE_CUDA)
        complain(c, "model", "precision", err, errlen, "mixed precision is a CUDA mode: set [model] device = cuda"), bad++;
    return bad ? -1 : 0;
}

// ---- resolved text, comparison, reference ----------------------------------------------------------
char *config_to_text(const TrainConfig *c) {
    size_t cap = 1 << 16, len = 0;
    char *out = dod_malloc(cap, "resolved config text");
    len += (size_t)snprintf(out + len, cap - len, "; dod-train resolved configuration (every key)\n");
    for (int s = 0; s < N_SECTIONS; s++) {
        len += (size_t)snprintf(out + len, cap - len, "\n[%s]\n", SECTIONS[s]);
        for (int i = 0; i < N_FIELDS; i++) {
            if (strcmp(FIELDS[i].section, SECTIONS[s])) continue;
            char v[CFG_STR + 8];
            format_value(c, &FIELDS[i], v, sizeof v);
            if (len + strlen(v) + 128 > cap) dod_fatal("config_to_text", "resolved config exceeds %zu bytes", cap);
            len += (size_t)snprintf(out + len, cap - len, "%s = %s\n", FIELDS[i].key, v);
        }
    }
    return out;
}

int config_compare_text(const TrainConfig *c, const char *text, char *err, size_t errlen) {
    if (err && errlen) err[0] = 0;
    bool seen[CFG_MAX_FIELDS] = {0};
    char section[64] = "";
    int bad = 0;
    for (const char *p = text; *p;) {
        const char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p) : strlen(p);
        char line[CFG_STR + 128];
        snprintf(line, sizeof line, "%.*s", (int)(n < sizeof line - 1 ? n : sizeof line - 1), p);
        p += n + (nl ? 1 : 0);
        char *s = trim(line), *eq;
        if (!*s || *s == ';' || *s == '#') continue;
        if (*s == '[') {
            char *close = strchr(s, ']');
            if (close) *close = 0;
            snprintf(section, sizeof section, "%s", trim(s + 1));
            continue;
        }
        if (!(eq = strchr(s, '='))) continue;
        *eq = 0;
        char *key = trim(s), *val = trim(eq + 1);
        int fi = find_field(section, key);
        if (fi < 0) {
            err_add(err, errlen, "[%s] %s: in the checkpoint's config but unknown to this build", section, key), bad++;
            continue;
        }
        seen[fi] = true;
        if (FIELDS[fi].resume_free) continue;
        char now[CFG_STR + 8];
        format_value(c, &FIELDS[fi], now, sizeof now);
        if (strcmp(now, val)) err_add(err, errlen, "[%s] %s = %s (checkpoint: %s)", section, key, now, val), bad++;
    }
    for (int i = 0; i < N_FIELDS; i++)
        if (!seen[i] && !FIELDS[i].resume_free)
            err_add(err, errlen, "[%s] %s: absent from the checkpoint's config", FIELDS[i].section, FIELDS[i].key), bad++;
    return bad ? -1 : 0;
}

static const char *type_name(FieldType t) {
    static const char *names[] = {"int", "float", "bool", "string", "enum", "list"};
    return names[t];
}

void config_write_reference(FILE *f) {
    fprintf(f, "# dod-train configuration reference\n\n"
               "Generated by `dod-train --config-reference` from the schema in `train/config.c`; do not edit.\n"
               "Every key has a default unless marked **required**. \"resume\" says whether the key may\n"
               "differ from the checkpoint's value when a run is continued with `--resume`.\n"
               "Override any key with `--set section.key=value`. See docs/training.md.\n");
    for (int s = 0; s < N_SECTIONS; s++) {
        fprintf(f, "\n## [%s]\n\n| key | type | default | range / choices | resume | meaning |\n|---|---|---|---|---|---|\n",
                SECTIONS[s]);
        for (int i = 0; i < N_FIELDS; i++) {
            const Field *x = &FIELDS[i];
            if (strcmp(x->section, SECTIONS[s])) continue;
            char range[96] = "";
            if (x->type == T_INT || x->type == T_FLOAT) snprintf(range, sizeof range, "[%.15g, %.15g]", x->min, x->max);
            else if (x->type == T_ENUM)
                for (const char *ch = x->choices; *ch && strlen(range) + 3 < sizeof range; ch++)
                    snprintf(range + strlen(range), sizeof range - strlen(range), "%s", *ch == '|' ? " \\| " : (char[]){*ch, 0});
            else if (x->type == T_LIST) snprintf(range, sizeof range, "name:count,...");
            else if (x->type == T_BOOL) snprintf(range, sizeof range, "true / false");
            char def[CFG_STR];
            if (!x->def) snprintf(def, sizeof def, "**required**");
            else if (!x->def[0]) snprintf(def, sizeof def, "(empty)");
            else snprintf(def, sizeof def, "`%s`", x->def);
            fprintf(f, "| `%s` | %s | %s | %s | %s | %s |\n", x->key, type_name(x->type), def, range,
                    x->resume_free ? "may change" : "must match", x->help);
        }
    }
}
