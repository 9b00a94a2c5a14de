// dod-bench: performance reports (ratios against references measured in the same run).
// Usage: dod-bench <subcommand> [options]; dod-bench --help lists the subcommands.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "autograd/base.h"
#include "tests/bench/bench.h"

#define MAX_BENCHES 32
static struct { const char *name, *what; BenchMainFn fn; } benches[MAX_BENCHES];
static int n_benches;

void bench_register(const char *name, const char *what, BenchMainFn fn) {
    if (n_benches < MAX_BENCHES) {
        benches[n_benches].name = name;
        benches[n_benches].what = what;
        benches[n_benches].fn = fn;
        n_benches++;
    }
}


static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double bench_median(double *v, int n) {
    qsort(v, (size_t)n, sizeof(double), cmp_double);
    return v[n / 2];
}

const char *bench_python(void) {
    const char *py = getenv("PYTHON");
    return py && *py ? py : "python3";
}

int bench_torch_run(const char *script, const char *args, BenchLineFn on_line, void *ctx, char *last, size_t last_len) {
    const char *py = bench_python();
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "'%s' '%s/scripts/%s' %s 2>&1", py, DOD_SOURCE_DIR, script, args);
    if (last_len) last[0] = 0;
    FILE *p = popen(cmd, "r");
    if (!p) {
        snprintf(last, last_len, "cannot start %s", py);
        return -1;
    }
    char line[1024];
    while (fgets(line, sizeof line, p)) {
        if (on_line(line, ctx) || !strncmp(line, "torch_threads", 13)) continue;
        snprintf(last, last_len, "%s", line);
        last[strcspn(last, "\n")] = 0;
    }
    return pclose(p);
}

typedef struct {
    double ms, peak;
} TorchMs;

static bool take_torch_ms(const char *line, void *ctx) {
    TorchMs *t = ctx;
    return sscanf(line, "torch_ms %lf", &t->ms) == 1 || sscanf(line, "torch_peak_gib %lf", &t->peak) == 1;
}

double bench_torch_ms(const char *script, const char *args, double *peak_gib) {
    TorchMs t = {-1, -1};
    char last[1024];
    int rc = bench_torch_run(script, args, take_torch_ms, &t, last, sizeof last);
    if (rc != 0 || t.ms < 0) {
        printf("torch:   not available (%s: %s) - reporting ours only\n", bench_python(), last[0] ? last : "no output");
        return -1;
    }
    if (peak_gib) *peak_gib = t.peak;
    return t.ms;
}

static void usage(FILE *f) {
    fprintf(f, "usage: dod-bench <subcommand> [options]   (dod-bench <subcommand> --help for its options)\n\nsubcommands:\n");
    for (int i = 0; i < n_benches; i++) fprintf(f, "  %-10s %s\n", benches[i].name, benches[i].what);
}

int main(int argc, char **argv) {
    if (dod_version_requested(argc, argv, "dod-bench")) return 0;
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    for (int i = 0; i < n_benches; i++)
        if (!strcmp(argv[1], benches[i].name)) return benches[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "dod-bench: unknown subcommand '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
