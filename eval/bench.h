// Benchmark definitions (configs/bench_*.ini, docs/evaluation.md): which test sets a benchmark
// has, where each one's images are, and how each is scored. INI read with iniparser:
//
//   [benchmark]
//   name = aio3                       ; short id (reports)
//   title = 3-task all-in-one ...     ; one line for the report header
//   profile = promptir                ; default metric profile of every task (promptir | basicsr)
//   crop_multiple = 16                ; default centre crop to a multiple (0 = off)
//   crop_border = 0                   ; default border removed before scoring
//   y_channel = false                 ; default (basicsr only)
//   tasks = cbsd68_s15, rain100l      ; the test sets, in report order: one section each
//
//   [cbsd68_s15]
//   label = CBSD68 s15                ; column title
//   file = cbsd68.h5                  ; dataset file (dod-data), relative to --data-dir
//   task = denoise_s15                ; task inside it
//   sigma = 15                        ; optional: every sample must hold noise of this sigma
//   profile / crop_multiple / crop_border / y_channel   optional per-set overrides
//
// Unknown sections or keys, missing required keys and bad values are errors naming the file,
// the line and the key.
#pragma once
#include <stdbool.h>
#include <stddef.h>

#include "eval/metrics.h"

#define BENCH_MAX_TASKS 16
#define BENCH_STR 1024

typedef struct {
    char id[64];            // the section name
    char label[64];
    char file[BENCH_STR];   // as written (relative to the data dir unless absolute)
    char task[64];
    double sigma;           // < 0: no noise check
    MetricOpts metrics;     // the benchmark's defaults with this set's overrides
} BenchTask;

typedef struct {
    char path[BENCH_STR];
    char name[64];
    char title[256];
    int n_tasks;
    BenchTask tasks[BENCH_MAX_TASKS];
} Bench;

// Reads path into *b (=). 0, or -1 with every problem found, one "FILE:LINE: [section] key: ..."
// line each.
int bench_load(const char *path, Bench *b, char *err, size_t errlen);
