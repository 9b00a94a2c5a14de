// Periodic validation of a training run: restore the first K images of a dataset file at full size,
// score them (PSNR/SSIM, promptir profile: float output clamped to [0, 1], eval/metrics.h), and
// write a sample grid PNG (one row per image: lq | out | hq).
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "train/train_model.h"

typedef struct {
    int images;                 // scored
    double psnr, ssim;          // means over them, restored output vs ground truth
    double psnr_input, ssim_input;  // the degraded inputs vs ground truth (the baseline to beat)
} ValResult;

typedef struct Validator Validator;

// Opens the dataset and picks the images: the k-th is sample k div T of task k mod T (T tasks),
// skipping tasks that have run out. NULL with a message naming the file when it cannot be read or
// has no images.
Validator *validator_open(const char *path, int max_images, char *err, size_t errlen);
void validator_close(Validator *v);
// Restores every image with m (no grad, eval mode) and scores it (= *res). grid_path (NULL: none)
// receives the grid, written atomically. 0 or -1 with a message naming the image.
int validator_run(Validator *v, TrainModel *m, const char *grid_path, ValResult *res, char *err, size_t errlen);
