// dod-data: build, inspect and check degradation dataset files (format: docs/data-format.md).
//   dod-data pack   --task NAME (--lq DIR --hq DIR | --pairs FILE [--lq DIR --hq DIR] |
//                    --clean DIR --sigma 15,25,50 [--store-noisy --seed S]) --out FILE.h5 [--append]
//   dod-data synth  --clean DIR --tasks noise,rain,haze,blur,lowlight --out FILE.h5 [--seed S]
//   dod-data info   FILE.h5
//   dod-data verify FILE.h5
//   dod-data export FILE.h5 --task NAME --index I --out-dir DIR   (writes lq.png, hq.png)
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "data/degrade.h"
#include "autograd/base.h"
#include "data/h5ds.h"
#include "data/image.h"
#include "data/pack.h"
#include "data/sample_noise.h"

static void usage(FILE *out) {
    fprintf(out,
            "usage:\n"
            "  dod-data pack --task NAME --lq DIR --hq DIR --out FILE.h5 [--append] [--skip-unmatched]\n"
            "  dod-data pack --task NAME --pairs LIST [--lq DIR --hq DIR] --out FILE.h5 [--append]\n"
            "  dod-data pack --task denoise --clean DIR --sigma 15,25,50 --out FILE.h5 [--append]\n"
            "  dod-data pack --task denoise_s25 --clean DIR --sigma 25 --store-noisy --seed S --out FILE.h5\n"
            "  dod-data synth --clean DIR --tasks noise,rain,haze,blur,lowlight --out FILE.h5 [--seed S]\n"
            "                 [--sigma 15,25,50] [--store-noisy] [--append]\n"
            "  dod-data info FILE.h5\n"
            "  dod-data verify FILE.h5\n"
            "  dod-data export FILE.h5 --task NAME --index I --out-dir DIR\n"
            "common: --deflate 0..9 (default 4), --quiet. Pairing rules and formulas: docs/data-format.md\n");
}

static int fail(const char *msg) {
    fprintf(stderr, "dod-data: %s\n", msg);
    return 1;
}

// "15,25,50" -> sigmas; returns the count or -1.
static int parse_sigmas(const char *s, double *sigmas) {
    int n = 0;
    while (*s) {
        char *end;
        double v = strtod(s, &end);
        if (end == s || n == H5DS_MAX_SIGMAS || (*end && *end != ',')) return -1;
        sigmas[n++] = v;
        s = *end ? end + 1 : end;
    }
    return n;
}

static int parse_u64(const char *s, uint64_t *v) {
    char *end;
    *v = strtoull(s, &end, 0);
    return end == s || *end ? -1 : 0;
}

// Value of option argv[*i] (advancing *i), or NULL with a message when missing.
static const char *take_value(int argc, char **argv, int *i) {
    if (*i + 1 >= argc) {
        fprintf(stderr, "dod-data: %s needs a value\n", argv[*i]);
        return NULL;
    }
    return argv[++*i];
}

// The options pack and synth share, as pointers into a PackOptions or SynthOptions.
typedef struct {
    const char **out_path, **clean_dir;
    int *append, *store_noisy, *quiet, *deflate, *n_sigmas;
    double *sigmas;   // H5DS_MAX_SIGMAS entries
    uint64_t *seed;
} SharedOptions;

// The shared fields of o, a PackOptions or a SynthOptions (both name them alike).
#define SHARED_OPTIONS_OF(o)                                                                                     \
    ((SharedOptions){&(o).out_path, &(o).clean_dir, &(o).append, &(o).store_noisy, &(o).quiet, &(o).deflate, \
                     &(o).n_sigmas, (o).sigmas, &(o).seed})

// Parses argv[*i] (and its value, advancing *i) into s (=) when it is a shared option. 1 when it
// was one, 0 when it is not, or the exit status negated after a message naming the command, the
// option and the value: -1 bad value, -2 missing value.
static int parse_shared_option(const char *cmd, int argc, char **argv, int *i, SharedOptions s) {
    const char *a = argv[*i];
    if (!strcmp(a, "--append")) { *s.append = 1; return 1; }
    if (!strcmp(a, "--store-noisy")) { *s.store_noisy = 1; return 1; }
    if (!strcmp(a, "--quiet")) { *s.quiet = 1; return 1; }
    static const char *const valued[] = {"--out", "--clean", "--deflate", "--sigma", "--seed"};
    int known = 0;
    for (size_t k = 0; k < sizeof valued / sizeof *valued; k++) known |= !strcmp(a, valued[k]);
    if (!known) return 0;
    const char *v = take_value(argc, argv, i);
    if (!v) return -2;
    if (!strcmp(a, "--out")) *s.out_path = v;
    else if (!strcmp(a, "--clean")) *s.clean_dir = v;
    else if (!strcmp(a, "--deflate")) *s.deflate = atoi(v);
    else if (!strcmp(a, "--sigma")) {
        if ((*s.n_sigmas = parse_sigmas(v, s.sigmas)) < 1) {
            fprintf(stderr, "dod-data %s: --sigma '%s': expected numbers like 15,25,50 (at most %d)\n", cmd, v,
                    H5DS_MAX_SIGMAS);
            return -1;
        }
    } else if (parse_u64(v, s.seed)) {
        fprintf(stderr, "dod-data %s: --seed '%s': expected an unsigned integer\n", cmd, v);
        return -1;
    }
    return 1;
}

static int unknown_option(const char *cmd, const char *opt) {
    fprintf(stderr, "dod-data %s: unknown option %s\n", cmd, opt);
    usage(stderr);
    return 2;
}

static int cmd_pack(int argc, char **argv) {
    PackOptions o = {.deflate = 4, .seed = 0};
    char err[2048];
    for (int i = 1; i < argc; i++) {
        int shared = parse_shared_option("pack", argc, argv, &i, SHARED_OPTIONS_OF(o));
        if (shared < 0) return -shared;
        if (shared) continue;
        const char *a = argv[i], *v = NULL;
        if (!strcmp(a, "--skip-unmatched")) { o.skip_unmatched = 1; continue; }
        if (strcmp(a, "--task") && strcmp(a, "--lq") && strcmp(a, "--hq") && strcmp(a, "--pairs"))
            return unknown_option("pack", a);
        if (!(v = take_value(argc, argv, &i))) return 2;
        if (!strcmp(a, "--task")) o.task = v;
        else if (!strcmp(a, "--lq")) o.lq_dir = v;
        else if (!strcmp(a, "--hq")) o.hq_dir = v;
        else o.pairs_path = v;
    }
    if (pack_run(&o, err, sizeof err)) return fail(err);
    return 0;
}

static int cmd_synth(int argc, char **argv) {
    SynthOptions o = {.deflate = 4, .seed = 0, .n_sigmas = 3, .sigmas = {15, 25, 50}};
    char err[2048];
    for (int i = 1; i < argc; i++) {
        int shared = parse_shared_option("synth", argc, argv, &i, SHARED_OPTIONS_OF(o));
        if (shared < 0) return -shared;
        if (shared) continue;
        if (strcmp(argv[i], "--tasks")) return unknown_option("synth", argv[i]);
        const char *v = take_value(argc, argv, &i);
        if (!v) return 2;
        char list[512];
        snprintf(list, sizeof list, "%s", v);
        for (char *tok = strtok(list, ","); tok; tok = strtok(NULL, ",")) {
            int kind = degrade_kind_from_name(tok);
            if (kind < 0) {
                fprintf(stderr, "dod-data synth: --tasks: unknown degradation '%s' (noise, rain, haze, blur, lowlight)\n", tok);
                return 2;
            }
            for (int k = 0; k < o.n_kinds; k++)
                if (o.kinds[k] == (DegradeKind)kind) return fail("synth --tasks: a task is listed twice");
            o.kinds[o.n_kinds++] = (DegradeKind)kind;
        }
    }
    if (synth_run(&o, err, sizeof err)) return fail(err);
    return 0;
}

static int cmd_info(int argc, char **argv) {
    if (argc != 2) {
        usage(stderr);
        return 2;
    }
    char err[2048];
    H5ds *f = h5ds_open(argv[1], err, sizeof err);
    if (!f) return fail(err);
    struct stat st;
    stat(argv[1], &st);
    printf("%s: dod dataset format %d, %d task%s, %.2f MiB on disk\n", argv[1], H5DS_FORMAT_VERSION, h5ds_n_tasks(f),
           h5ds_n_tasks(f) == 1 ? "" : "s", st.st_size / 1048576.0);
    printf("%-16s %-15s %9s %13s %13s  %s\n", "task", "lq", "samples", "min HxW", "max HxW", "noise sigmas");
    int64_t n_problems = 0;
    for (int t = 0; t < h5ds_n_tasks(f); t++) {
        const H5dsTask *task = h5ds_task(f, t);
        int hmin = 0, wmin = 0, hmax = 0, wmax = 0;
        for (int64_t i = 0; i < task->count; i++) {
            int h, w;
            char value[512];
            if (h5ds_sample_size(f, t, i, &h, &w, err, sizeof err) ||
                h5ds_sample_attr(f, t, i, "hq_source", value, sizeof value, err, sizeof err)) {
                fprintf(stderr, "dod-data info: %s (run dod-data verify)\n", err);
                n_problems++;
                continue;
            }
            if (i == 0 || h * (int64_t)w < hmin * (int64_t)wmin) hmin = h, wmin = w;
            if (i == 0 || h * (int64_t)w > hmax * (int64_t)wmax) hmax = h, wmax = w;
        }
        char mins[32], maxs[32], sig[256] = "-";
        snprintf(mins, sizeof mins, "%dx%d", hmin, wmin);
        snprintf(maxs, sizeof maxs, "%dx%d", hmax, wmax);
        for (int k = 0, n = 0; k < task->n_sigmas; k++)
            n += snprintf(sig + n, sizeof sig - n, "%s%g", k ? "," : "", task->sigmas[k]);
        printf("%-16s %-15s %9" PRId64 " %13s %13s  %s\n", task->name,
               task->lq_mode == LQ_STORED ? "stored" : "gaussian_noise", task->count, mins, maxs, sig);
    }
    h5ds_close(f);
    if (n_problems) fprintf(stderr, "dod-data info: %s: %" PRId64 " damaged samples\n", argv[1], n_problems);
    return n_problems ? 1 : 0;
}

static int cmd_verify(int argc, char **argv) {
    if (argc != 2) {
        usage(stderr);
        return 2;
    }
    char err[2048];
    H5ds *f = h5ds_open(argv[1], err, sizeof err);
    if (!f) return fail(err);
    int64_t n_ok = 0, n_bad = 0;
    for (int t = 0; t < h5ds_n_tasks(f); t++) {
        const H5dsTask *task = h5ds_task(f, t);
        int64_t groups = h5ds_count_groups(f, t);
        if (groups != task->count) {
            printf("BAD %s: count attribute says %" PRId64 " samples but the group holds %" PRId64 "\n", task->name,
                   task->count, groups);
            n_bad++;
        }
        for (int64_t i = 0; i < task->count; i++) {
            Image lq, hq;
            static const char *const provenance[] = {"hq_source", "lq_source", "synth_params"};
            char value[512];
            int bad = h5ds_read_sample(f, t, i, &lq, &hq, err, sizeof err);
            if (!bad) {
                image_free(&lq);
                image_free(&hq);
            }
            for (int a = 0; !bad && a < 3; a++)
                bad = h5ds_sample_attr(f, t, i, provenance[a], value, sizeof value, err, sizeof err);
            double sigma;
            uint64_t seed;
            if (!bad) bad = h5_sample_noise(argv[1], task->name, i, &sigma, &seed, err, sizeof err) < 0;
            if (bad) {
                printf("BAD %s/%08" PRId64 ": %s\n", task->name, i, err);
                n_bad++;
                continue;
            }
            n_ok++;
        }
    }
    h5ds_close(f);
    printf("%s: %" PRId64 " samples ok, %" PRId64 " bad\n", argv[1], n_ok, n_bad);
    return n_bad ? 1 : 0;
}

static int cmd_export(int argc, char **argv) {
    const char *task_name = NULL, *out_dir = NULL;
    int64_t index = -1;
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    for (int i = 2; i < argc; i++) {
        const char *v = take_value(argc, argv, &i);
        if (!v) return 2;
        if (!strcmp(argv[i - 1], "--task")) task_name = v;
        else if (!strcmp(argv[i - 1], "--index")) {
            char *end;
            index = strtoll(v, &end, 10);
            if (*v == '\0' || *end != '\0' || index < 0) {
                fprintf(stderr, "dod-data export: --index '%s': expected a sample index >= 0\n", v);
                return 2;
            }
        }
        else if (!strcmp(argv[i - 1], "--out-dir")) out_dir = v;
        else return fail("export: options are --task NAME --index I --out-dir DIR");
    }
    if (!task_name || index < 0 || !out_dir) return fail("export needs --task NAME --index I --out-dir DIR");
    char err[2048], path[4096];
    H5ds *f = h5ds_open(argv[1], err, sizeof err);
    if (!f) return fail(err);
    int t = h5ds_find_task(f, task_name, err, sizeof err);
    Image lq = {0}, hq = {0};
    int rc = t < 0 || h5ds_read_sample(f, t, index, &lq, &hq, err, sizeof err);
    if (!rc) rc = fs_mkdirs(out_dir, err, sizeof err);  // the pair's folder is made when missing
    if (!rc) {
        snprintf(path, sizeof path, "%s/lq.png", out_dir);
        rc = image_save_png(path, &lq, err, sizeof err);
    }
    if (!rc) {
        snprintf(path, sizeof path, "%s/hq.png", out_dir);
        rc = image_save_png(path, &hq, err, sizeof err);
    }
    image_free(&lq);
    image_free(&hq);
    h5ds_close(f);
    return rc ? fail(err) : 0;
}

int main(int argc, char **argv) {
    if (dod_version_requested(argc, argv, "dod-data")) return 0;
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "pack")) return cmd_pack(argc - 1, argv + 1);
    if (!strcmp(cmd, "synth")) return cmd_synth(argc - 1, argv + 1);
    if (!strcmp(cmd, "info")) return cmd_info(argc - 1, argv + 1);
    if (!strcmp(cmd, "verify")) return cmd_verify(argc - 1, argv + 1);
    if (!strcmp(cmd, "export")) return cmd_export(argc - 1, argv + 1);
    fprintf(stderr, "dod-data: unknown command '%s'\n", cmd);
    usage(stderr);
    return 2;
}
