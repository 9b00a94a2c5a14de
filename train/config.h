// The training configuration: the model's keys (layers/config_model.h: [model], [lora],
// [modulation], [stage], [checkpoint] dir) composed with the training keys ([data], [optim], [loss],
// [train], [log], [checkpoint], [val], [dist]) into one schema (layers/config_schema.h) that drives parsing,
// validation, `--set section.key=value` overrides, the resolved-config text (run dir copy,
// checkpoint metadata, `dod-train --print-config`) and the generated reference
// (`dod-train --config-reference` -> docs/config-reference.md). Errors read
// "FILE:LINE: [section] key: what is wrong" (see layers/config_schema.h for the dialect).
//
// The parser is compiled only when iniparser is found (config*.c in CMakeLists.txt); the
// TrainConfig struct itself is plain data and usable everywhere.
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "layers/config_schema.h"
#include "layers/model.h"

typedef enum { CFG_SCHEDULE_CONSTANT = 0, CFG_SCHEDULE_COSINE = 1 } CfgSchedule;

typedef struct {
    // The model's keys ([model], [lora], [modulation], [stage], [checkpoint] dir: layers/config_model.c)
    // and two training keys stored with them: [train] seed and recompute.
    ModelOptions model;
    // [data]
    char train_file[CFG_STR];
    char tasks[CFG_STR];              // "dehaze:3,derain:2,denoise:2"
    long long crop;
    bool flips;
    long long loader_threads;
    char val_file[CFG_STR];           // "" = no validation
    // [optim]
    double lr, beta1, beta2, weight_decay, eps, clip_norm;
    CfgSchedule schedule;
    long long warmup;
    long long grad_accum;
    // [loss]
    double loss_mse, loss_ssim, loss_lpips;
    char lpips_vgg[CFG_STR], lpips_lin[CFG_STR];   // LPIPS weights (layers/lpips.h); required when lpips > 0
    // [train]
    long long steps;
    long long max_memory;             // MiB a step may use (train/memory_check.h); 0: the machine's; -1: no check
    char run_dir[CFG_STR];
    // [log]
    long long log_every;
    char log_jsonl[CFG_STR];          // relative to the run dir unless absolute
    bool log_tensorboard;             // event files in <run_dir>/tb
    // [checkpoint]
    long long ckpt_every;
    long long ckpt_keep_last;         // 0 = keep all
    // [val]
    long long val_every;              // 0 = never
    long long val_images;
    bool val_grid;
    // [dist]: several processes (train/comm.h)
    int dist_backend;                 // CommBackend (train/comm.h): the schema lists its values in order
    long long dist_timeout;           // seconds
    double dist_bucket_mb;
    long long dist_port;              // TCP bootstrap port; 0: from MASTER_PORT
    CfgSource src;                    // where each value came from (error messages)
} TrainConfig;

// Defaults of every key (required keys empty). Never fails.
void config_defaults(TrainConfig *c);
// Reads path over *c (start from config_defaults). Returns 0, or -1 with every problem found in err,
// one "FILE:LINE: [section] key: what is wrong" line each.
int config_load_file(TrainConfig *c, const char *path, char *err, size_t errlen);
// Applies one "section.key=value" override. Returns 0 or -1 ("--set ...: [section] key: ...").
int config_set(TrainConfig *c, const char *assignment, char *err, size_t errlen);
// Cross-key checks after the file and overrides (required keys, stage 2 needs init_from, LPIPS not
// implemented yet, ...). Each message names where the offending value came from. 0 or -1.
int config_validate(const TrainConfig *c, char *err, size_t errlen);
// Where [section] key's value came from (=): "FILE:LINE", "--set section.key=value", or the file /
// its section's line for a default; the prefix config errors use.
void config_where(const TrainConfig *c, const char *section, const char *key, char *buf, size_t len);

// The resolved configuration as INI text (every key, canonical values; config_load_file of it gives
// the same config). Heap string (=), caller frees.
char *config_to_text(const TrainConfig *c);
// Compares c with a resolved text from config_to_text (e.g. a checkpoint's). Keys the schema marks as
// free to change on resume (steps, logging, validation, checkpoint cadence, loader threads) are
// skipped. Returns 0, or -1 with every difference ("[optim] lr = 0.0001 (checkpoint: 5e-05)").
int config_compare_text(const TrainConfig *c, const char *text, char *err, size_t errlen);
// Writes the Markdown reference of every key (docs/config-reference.md) to f.
void config_write_reference(FILE *f);
