// Validation of a training run: restore the first K images of a dataset file at full size with
// evaluation's per-image core (eval/eval_run.h eval_image: whole images, promptir profile: float
// output clamped to [0, 1], eval/metrics.h), score them and their degraded inputs, and write a
// sample grid PNG (one row per image: lq | out | hq).
#pragma once
#include <stddef.h>
#include <stdio.h>
#include <stdint.h>

#include "eval/eval_run.h"
#include "layers/model.h"

#define VAL_MAX_TASKS 16

typedef struct {
    char name[64];              // the dataset's task name (truncated to 63 bytes)
    EvalScores scores;          // its scored images: restored and degraded-input means
} ValTaskResult;

typedef struct {
    EvalScores all;             // every scored image: restored output and degraded input vs ground truth
    // Per-task means, tasks in file order, only tasks with scored images. Tasks past the first
    // VAL_MAX_TASKS of the file count in the overall means only (tasks_dropped says how many images).
    int n_tasks, tasks_dropped;
    ValTaskResult task[VAL_MAX_TASKS];
} ValResult;

typedef struct Validator Validator;

// Opens the dataset and picks the images: the k-th is sample k div T of task k mod T (T tasks),
// skipping tasks that have run out. NULL with a message naming the file when it cannot be read or
// has no images.
Validator *validator_open(const char *path, int max_images, char *err, size_t errlen);
void validator_close(Validator *v);
// Restores every image with m (restore_chw: no grad, eval mode, whole images) and scores it
// (= *res). grid_path (NULL: none) receives the grid (eval/grid.h), written atomically. 0 or -1
// with a message naming the task and sample (a wrong output shape or a non-finite output value is an
// error).
int validator_run(Validator *v, Model *m, const char *grid_path, ValResult *res, char *err, size_t errlen);
// One line per task of res to f (=), each starting with prefix:
//   "<prefix>dehaze: 2 images, restored PSNR 21.123 dB SSIM 0.7012 colour shift 1.23 | degraded input
//    PSNR 15.456 dB SSIM 0.6012 colour shift 9.87 | gain +5.667 dB"
void val_result_print_tasks(const ValResult *res, FILE *f, const char *prefix);
