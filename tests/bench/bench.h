// dod-bench subcommands register themselves at load time (constructor), so adding a benchmark is
// adding a file to tests/bench/: BENCH_REGISTER(name, "one-line description", int fn(int, char**)).
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "autograd/tensor.h"  // dod_now_seconds: every benchmark times with it

typedef int (*BenchMainFn)(int argc, char **argv);
void bench_register(const char *name, const char *what, BenchMainFn fn);
// Median of v[0..n) (sorts v in place; n >= 1): the value every benchmark reports.
double bench_median(double *v, int n);
// The Python that runs the reference side of a benchmark: $PYTHON when set and non-empty, else python3
// (found on PATH). scripts/fixture-env.sh makes a venv with the packages and prints the PYTHON to export.
const char *bench_python(void);
// Runs the PyTorch side of a comparison, `<bench_python()> <source>/scripts/<script> <args>`, and
// returns the value of its `torch_ms X` line
// (and of `torch_peak_gib X` into *peak_gib when non-NULL). Negative, with the reason printed, when it
// cannot run (no Python, no torch/diffusers): the caller then reports its own numbers only.
double bench_torch_ms(const char *script, const char *args, double *peak_gib);
// The general form: runs the same command and hands every output line to on_line, which returns true for
// the lines it takes; last (last_len bytes) gets the last line no one took (an error message, say).
// Returns the command's exit status (-1: it could not be started).
typedef bool (*BenchLineFn)(const char *line, void *ctx);
int bench_torch_run(const char *script, const char *args, BenchLineFn on_line, void *ctx, char *last, size_t last_len);

#define BENCH_REGISTER(name, what, fn) \
    __attribute__((constructor)) static void bench_register_##name(void) { bench_register(#name, what, fn); }
