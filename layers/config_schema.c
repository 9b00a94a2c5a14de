// Schema-driven INI configurations: reading (iniparser + a line scan), overrides, required keys,
// resolved text, comparison, Markdown reference. See layers/config_schema.h.
#include "layers/config_schema.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include <iniparser.h>

#include "autograd/base.h"

// ---- the schema ----------------------------------------------------------------------------------
static int find_section(const CfgSchema *s, const char *name) {
    for (int i = 0; i < s->n_sections; i++)
        if (!strcmp(s->sections[i], name)) return i;
    return -1;
}
static int find_field(const CfgSchema *s, const char *section, const char *key) {
    for (int i = 0; i < s->n_fields; i++)
        if (!strcmp(s->fields[i].section, section) && !strcmp(s->fields[i].key, key)) return i;
    return -1;
}
// An unknown key of this section is skipped rather than an error (a section the schema shares).
static bool section_shared(const CfgSchema *s, int si) { return si >= s->n_owned; }

// ---- error accumulation ---------------------------------------------------------------------------
void cfg_err_add(char *err, size_t errlen, const char *fmt, ...) {
    if (!err || !errlen) return;
    size_t used = strlen(err);
    if (used && used + 1 < errlen) err[used++] = '\n', err[used] = 0;
    if (used >= errlen) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err + used, errlen - used, fmt, ap);
    va_end(ap);
}

static void keys_of_section(const CfgSchema *s, const char *section, char *buf, size_t len) {
    buf[0] = 0;
    for (int i = 0; i < s->n_fields; i++)
        if (!strcmp(s->fields[i].section, section))
            snprintf(buf + strlen(buf), len - strlen(buf), "%s%s", buf[0] ? ", " : "", s->fields[i].key);
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

// Checks a list "name:count,...": 1..16 entries, names [A-Za-z0-9_-]{1,63}, counts in [1, 1024], no
// repeats (the tasks of a batch).
static int check_count_list(const char *v, char *why, size_t len) {
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

// Parses text into field f of cfg (=). Returns 0, or -1 with the reason in why.
static int set_value(void *cfg, const CfgField *f, const char *text, char *why, size_t len) {
    char *p = (char *)cfg + f->off;
    char *end;
    switch (f->type) {
    case CFG_INT: {
        errno = 0;
        long long v = strtoll(text, &end, 10);
        if (errno || end == text || *trim(end)) return snprintf(why, len, "expected an integer, got '%s'", text), -1;
        if (v < f->min || v > f->max)
            return snprintf(why, len, "%lld is out of range [%.15g, %.15g]", v, f->min, f->max), -1;
        *(long long *)p = v;
        return 0;
    }
    case CFG_FLOAT: {
        errno = 0;
        double v = strtod(text, &end);
        if (errno == ERANGE || end == text || *trim(end) || !isfinite(v))
            return snprintf(why, len, "expected a number, got '%s'", text), -1;
        if (v < f->min || v > f->max) {
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
            if (f->range_error) return snprintf(why, len, f->range_error, text), -1;
#pragma GCC diagnostic pop
            return snprintf(why, len, "%s is out of range [%g, %g]", text, f->min, f->max), -1;
        }
        *(double *)p = v;
        return 0;
    }
    case CFG_BOOL: {
        static const char *yes[] = {"true", "yes", "on", "1"}, *no[] = {"false", "no", "off", "0"};
        for (int i = 0; i < 4; i++) {
            if (!strcasecmp(text, yes[i])) return *(bool *)p = true, 0;
            if (!strcasecmp(text, no[i])) return *(bool *)p = false, 0;
        }
        return snprintf(why, len, "expected true or false, got '%s'", text), -1;
    }
    case CFG_ENUM: {
        char ch[128];
        snprintf(ch, sizeof ch, "%s", f->choices);
        int idx = 0;
        for (char *save = NULL, *tok = strtok_r(ch, "|", &save); tok; tok = strtok_r(NULL, "|", &save), idx++)
            if (!strcmp(tok, text)) return *(int *)p = idx, 0;
        return snprintf(why, len, "'%s' is not one of %s", text, f->choices), -1;
    }
    case CFG_LIST:
        if (check_count_list(text, why, len)) return -1;
        // fallthrough
    case CFG_STRING:
        if (strchr(text, '"')) return snprintf(why, len, "double quotes are not allowed in values"), -1;
        if (strlen(text) >= CFG_STR) return snprintf(why, len, "value longer than %d characters", CFG_STR - 1), -1;
        snprintf(p, CFG_STR, "%s", text);
        return 0;
    }
    return -1;
}

// Canonical text of field f's value (=): what cfg_to_text writes and cfg_compare_text compares.
static void format_value(const void *cfg, const CfgField *f, char *buf, size_t len) {
    const char *p = (const char *)cfg + f->off;
    switch (f->type) {
    case CFG_INT: snprintf(buf, len, "%lld", *(const long long *)p); break;
    case CFG_FLOAT: {
        double v = *(const double *)p;
        snprintf(buf, len, "%.15g", v);           // shortest of these that reads back exactly
        if (strtod(buf, NULL) != v) snprintf(buf, len, "%.17g", v);
        break;
    }
    case CFG_BOOL: snprintf(buf, len, "%s", *(const bool *)p ? "true" : "false"); break;
    case CFG_ENUM: {
        char ch[128];
        snprintf(ch, sizeof ch, "%s", f->choices);
        int idx = 0, want = *(const int *)p;
        buf[0] = 0;
        for (char *save = NULL, *tok = strtok_r(ch, "|", &save); tok; tok = strtok_r(NULL, "|", &save), idx++)
            if (idx == want) snprintf(buf, len, "%s", tok);
        break;
    }
    case CFG_STRING:
    case CFG_LIST: snprintf(buf, len, "\"%s\"", p); break;
    }
}

// ---- where values came from ---------------------------------------------------------------------------
// Records (=) that [section] key was given at origin.
static void note_given(CfgSource *src, const char *section, const char *key, const char *origin) {
    int i = 0;
    while (i < src->n_given && (strcmp(src->given[i].section, section) || strcmp(src->given[i].key, key))) i++;
    if (i == CFG_MAX_FIELDS) dod_fatal("cfg_set", "more than %d keys given", CFG_MAX_FIELDS);
    if (i == src->n_given) src->n_given++;
    snprintf(src->given[i].section, CFG_NAME_LEN, "%s", section);
    snprintf(src->given[i].key, CFG_NAME_LEN, "%s", key);
    snprintf(src->given[i].origin, CFG_ORIGIN_LEN, "%s", origin);
}

void cfg_where(const CfgSource *src, const char *section, const char *key, char *buf, size_t len) {
    for (int i = 0; i < src->n_given; i++)
        if (!strcmp(src->given[i].section, section) && !strcmp(src->given[i].key, key)) {
            snprintf(buf, len, "%s", src->given[i].origin);
            return;
        }
    for (int i = 0; src->file[0] && i < src->n_sections; i++)
        if (!strcmp(src->section[i].name, section)) {
            snprintf(buf, len, "%s:%d", src->file, src->section[i].line);
            return;
        }
    snprintf(buf, len, "%s", src->file[0] ? src->file : "config");
}

void cfg_complain(const CfgSource *src, const char *section, const char *key, const char *what, char *err,
                  size_t errlen) {
    char w[CFG_STR + CFG_ORIGIN_LEN];
    cfg_where(src, section, key, w, sizeof w);
    cfg_err_add(err, errlen, "%s: [%s] %s: %s", w, section, key, what);
}

void cfg_defaults(const CfgSchema *s, void *cfg, CfgSource *src) {
    memset(src, 0, sizeof *src);
    char why[256];
    for (int i = 0; i < s->n_fields; i++) {
        const CfgField *f = &s->fields[i];
        if (!f->def) ((char *)cfg + f->off)[0] = 0;   // required string / list: empty until given
        else if (set_value(cfg, f, f->def, why, sizeof why))
            dod_fatal("cfg_defaults", "schema default of [%s] %s: %s", f->section, f->key, why);
    }
}

int cfg_check_required(const CfgSchema *s, const void *cfg, const CfgSource *src, char *err, size_t errlen) {
    int bad = 0;
    for (int i = 0; i < s->n_fields; i++)
        if (!s->fields[i].def && !((const char *)cfg + s->fields[i].off)[0])
            cfg_complain(src, s->fields[i].section, s->fields[i].key, "required key is missing", err, errlen), bad++;
    return bad;
}

// ---- reading a file ---------------------------------------------------------------------------------
typedef struct {
    char section[CFG_NAME_LEN], key[CFG_NAME_LEN];   // key "" for a section header
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
    struct stat st;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {   // fopen succeeds on one and reads nothing
        cfg_err_add(err, errlen, "%s: is a directory (expected an INI file, e.g. configs/aio3.ini)", path);
        return 1;
    }
    FILE *f = fopen(path, "r");
    if (!f) {
        cfg_err_add(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return 1;
    }
    char raw[4096], section[CFG_NAME_LEN] = "";
    int line = 0, bad = 0;
    while (fgets(raw, sizeof raw, f)) {
        line++;
        char *s = trim(raw);
        if (!*s || *s == ';' || *s == '#') continue;
        if (s[strlen(s) - 1] == '\\') {
            cfg_err_add(err, errlen, "%s:%d: continuation lines (ending in \\) are not supported", path, line), bad++;
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
                cfg_err_add(err, errlen, "%s:%d: syntax error: '[' without ']'", path, line), bad++;
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
            cfg_err_add(err, errlen, "%s:%d: syntax error: expected [section] or key = value, got '%s'", path, line, s),
                bad++;
            continue;
        }
        *eq = 0;
        char *key = trim(s);
        lower(key);
        if (!section[0]) {
            cfg_err_add(err, errlen, "%s:%d: %s: key outside any [section]", path, line, key), bad++;
            continue;
        }
        for (int i = 0; i < sc->n; i++)
            if (sc->e[i].key[0] && !strcmp(sc->e[i].section, section) && !strcmp(sc->e[i].key, key)) {
                cfg_err_add(err, errlen, "%s:%d: [%s] %s: given twice (first on line %d)", path, line, section, key,
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

int cfg_load_file(const CfgSchema *s, void *cfg, CfgSource *src, const char *path, char *err, size_t errlen) {
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
        cfg_err_add(err, errlen, "%s: iniparser could not read it: %s", path,
                    ini_errors[0] ? trim(ini_errors) : "unknown error");
        free(sc.e);
        return -1;
    }
    snprintf(src->file, sizeof src->file, "%s", path);
    src->n_sections = 0;
    const bool partial = s->n_owned < s->n_sections;
    int nsec = iniparser_getnsec(d);
    for (int k = 0; k < nsec; k++) {
        const char *sec = iniparser_getsecname(d, k);
        int sline = scan_line(&sc, sec, NULL);
        int si = find_section(s, sec);
        if (si < 0) {
            if (partial) continue;   // another schema's section
            char known[256] = "";
            for (int i = 0; i < s->n_sections; i++)
                snprintf(known + strlen(known), sizeof known - strlen(known), "%s%s", i ? ", " : "", s->sections[i]);
            cfg_err_add(err, errlen, "%s:%d: [%s]: unknown section (sections: %s)", path, sline, sec, known), bad++;
            continue;
        }
        if (src->n_sections < CFG_MAX_SECTIONS) {
            snprintf(src->section[src->n_sections].name, CFG_NAME_LEN, "%s", sec);
            src->section[src->n_sections++].line = sline;
        }
        int nk = iniparser_getsecnkeys(d, sec);
        const char **keys = calloc((size_t)(nk > 0 ? nk : 1), sizeof(char *));
        if (!keys) dod_fatal("config", "out of memory reading %s", path);
        iniparser_getseckeys(d, sec, keys);
        for (int j = 0; j < nk; j++) {
            const char *key = strchr(keys[j], ':') ? strchr(keys[j], ':') + 1 : keys[j];
            int line = scan_line(&sc, sec, key);
            int fi = find_field(s, sec, key);
            if (fi < 0) {
                if (section_shared(s, si)) continue;
                char known[512];
                keys_of_section(s, sec, known, sizeof known);
                cfg_err_add(err, errlen, "%s:%d: [%s] %s: unknown key (keys of [%s]: %s)", path, line, sec, key, sec,
                            known);
                bad++;
                continue;
            }
            char value[CFG_STR], why[512];
            snprintf(value, sizeof value, "%s", iniparser_getstring(d, keys[j], ""));
            if (set_value(cfg, &s->fields[fi], trim(value), why, sizeof why)) {
                cfg_err_add(err, errlen, "%s:%d: [%s] %s: %s", path, line, sec, key, why);
                bad++;
                continue;
            }
            char origin[CFG_ORIGIN_LEN];
            snprintf(origin, sizeof origin, "%.300s:%d", path, line);
            note_given(src, s->fields[fi].section, s->fields[fi].key, origin);
        }
        free(keys);
    }
    iniparser_freedict(d);
    free(sc.e);
    return bad ? -1 : 0;
}

int cfg_set(const CfgSchema *s, void *cfg, CfgSource *src, const char *assignment, char *err, size_t errlen) {
    if (err && errlen) err[0] = 0;
    char buf[CFG_STR + 128];
    snprintf(buf, sizeof buf, "%s", assignment);
    char *eq = strchr(buf, '=');
    char *dot = eq ? memchr(buf, '.', (size_t)(eq - buf)) : NULL;
    if (!eq || !dot) {
        cfg_err_add(err, errlen, "--set %s: expected section.key=value (e.g. --set optim.lr=1e-4)", assignment);
        return -1;
    }
    *eq = 0;
    *dot = 0;
    char *sec = trim(buf), *key = trim(dot + 1), *value = trim(eq + 1);
    lower(sec);
    lower(key);
    int fi = find_field(s, sec, key), si = find_section(s, sec);
    if (fi < 0) {
        if (s->n_owned < s->n_sections && (si < 0 || section_shared(s, si))) return 0;   // another schema's key
        char known[512];
        keys_of_section(s, sec, known, sizeof known);
        if (si < 0) cfg_err_add(err, errlen, "--set %s: [%s]: unknown section", assignment, sec);
        else cfg_err_add(err, errlen, "--set %s: [%s] %s: unknown key (keys of [%s]: %s)", assignment, sec, key, sec, known);
        return -1;
    }
    char why[512];
    if (set_value(cfg, &s->fields[fi], value, why, sizeof why)) {
        cfg_err_add(err, errlen, "--set %s: [%s] %s: %s", assignment, sec, key, why);
        return -1;
    }
    char origin[CFG_ORIGIN_LEN];
    snprintf(origin, sizeof origin, "--set %.300s", assignment);
    note_given(src, s->fields[fi].section, s->fields[fi].key, origin);
    return 0;
}

// ---- resolved text, comparison, reference ----------------------------------------------------------
char *cfg_to_text(const CfgSchema *s, const void *cfg, const char *title) {
    size_t cap = 1 << 16, len = 0;
    char *out = dod_malloc(cap, "resolved config text");
    len += (size_t)snprintf(out + len, cap - len, "; %s\n", title);
    for (int k = 0; k < s->n_sections; k++) {
        len += (size_t)snprintf(out + len, cap - len, "\n[%s]\n", s->sections[k]);
        for (int i = 0; i < s->n_fields; i++) {
            if (strcmp(s->fields[i].section, s->sections[k])) continue;
            char v[CFG_STR + 8];
            format_value(cfg, &s->fields[i], v, sizeof v);
            if (len + strlen(v) + 128 > cap) dod_fatal("cfg_to_text", "resolved config exceeds %zu bytes", cap);
            len += (size_t)snprintf(out + len, cap - len, "%s = %s\n", s->fields[i].key, v);
        }
    }
    return out;
}

int cfg_compare_text(const CfgSchema *s, const void *cfg, const char *text, char *err, size_t errlen) {
    if (err && errlen) err[0] = 0;
    bool seen[CFG_MAX_FIELDS] = {0};
    char section[CFG_NAME_LEN] = "";
    int bad = 0;
    for (const char *p = text; *p;) {
        const char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p) : strlen(p);
        char line[CFG_STR + 128];
        snprintf(line, sizeof line, "%.*s", (int)(n < sizeof line - 1 ? n : sizeof line - 1), p);
        p += n + (nl ? 1 : 0);
        char *t = trim(line), *eq;
        if (!*t || *t == ';' || *t == '#') continue;
        if (*t == '[') {
            char *close = strchr(t, ']');
            if (close) *close = 0;
            snprintf(section, sizeof section, "%s", trim(t + 1));
            continue;
        }
        if (!(eq = strchr(t, '='))) continue;
        *eq = 0;
        char *key = trim(t), *val = trim(eq + 1);
        int fi = find_field(s, section, key);
        if (fi < 0) {
            cfg_err_add(err, errlen, "[%s] %s: in the checkpoint's config but unknown to this build", section, key), bad++;
            continue;
        }
        seen[fi] = true;
        if (s->fields[fi].resume_free) continue;
        char now[CFG_STR + 8];
        format_value(cfg, &s->fields[fi], now, sizeof now);
        if (strcmp(now, val)) cfg_err_add(err, errlen, "[%s] %s = %s (checkpoint: %s)", section, key, now, val), bad++;
    }
    for (int i = 0; i < s->n_fields; i++)
        if (!seen[i] && !s->fields[i].resume_free)
            cfg_err_add(err, errlen, "[%s] %s: absent from the checkpoint's config", s->fields[i].section,
                        s->fields[i].key), bad++;
    return bad ? -1 : 0;
}

static const char *type_name(CfgType t) {
    static const char *names[] = {"int", "float", "bool", "string", "enum", "list"};
    return names[t];
}

void cfg_write_reference(const CfgSchema *s, FILE *f, const char *intro) {
    fputs(intro, f);
    for (int k = 0; k < s->n_sections; k++) {
        fprintf(f, "\n## [%s]\n\n| key | type | default | range / choices | resume | meaning |\n|---|---|---|---|---|---|\n",
                s->sections[k]);
        for (int i = 0; i < s->n_fields; i++) {
            const CfgField *x = &s->fields[i];
            if (strcmp(x->section, s->sections[k])) continue;
            char range[96] = "";
            if (x->type == CFG_INT || x->type == CFG_FLOAT) snprintf(range, sizeof range, "[%.15g, %.15g]", x->min, x->max);
            else if (x->type == CFG_ENUM)
                for (const char *ch = x->choices; *ch && strlen(range) + 3 < sizeof range; ch++)
                    snprintf(range + strlen(range), sizeof range - strlen(range), "%s", *ch == '|' ? " \\| " : (char[]){*ch, 0});
            else if (x->type == CFG_LIST) snprintf(range, sizeof range, "name:count,...");
            else if (x->type == CFG_BOOL) snprintf(range, sizeof range, "true / false");
            char def[CFG_STR];
            if (!x->def) snprintf(def, sizeof def, "**required**");
            else if (!x->def[0]) snprintf(def, sizeof def, "(empty)");
            else snprintf(def, sizeof def, "`%s`", x->def);
            fprintf(f, "| `%s` | %s | %s | %s | %s | %s |\n", x->key, type_name(x->type), def, range,
                    x->resume_free ? "may change" : "must match", x->help);
        }
    }
}
