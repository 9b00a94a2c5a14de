// dod-bench subcommands register themselves at load time (constructor), so adding a benchmark is
// adding a file to tests/bench/: BENCH_REGISTER(name, "one-line description", int fn(int, char**)).
#pragma once
#include <stdint.h>

typedef int (*BenchMainFn)(int argc, char **argv);
void bench_register(const char *name, const char *what, BenchMainFn fn);
double bench_now(void);  // monotonic seconds

#define BENCH_REGISTER(name, what, fn) \
    __attribute__((constructor)) static void bench_register_##name(void) { bench_register(#name, what, fn); }
