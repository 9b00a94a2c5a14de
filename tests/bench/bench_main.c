// dod-bench: performance reports (ratios against references measured in the same run).
// Usage: dod-bench <subcommand> [options]; dod-bench --help lists the subcommands.
#include <stdio.h>
#include <string.h>
#include <time.h>

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

double bench_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void usage(FILE *f) {
    fprintf(f, "usage: dod-bench <subcommand> [options]   (dod-bench <subcommand> --help for its options)\n\nsubcommands:\n");
    for (int i = 0; i < n_benches; i++) fprintf(f, "  %-10s %s\n", benches[i].name, benches[i].what);
}

int main(int argc, char **argv) {
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
