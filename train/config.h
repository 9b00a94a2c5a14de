// Training configuration: an INI file (read with Debian's libiniparser) checked against one schema
// table that drives parsing, validation, `--set section.key=value` overrides, the resolved-config
// text (run dir copy, checkpoint metadata, `dod-train --print-config`) and the generated reference
// (`dod-train --config-reference` -> docs/config-reference.md).
//
// Line numbers: iniparser does not report them, so after it has parsed the file a small second
// scan of the raw text records, for every `[section]` header and every `key = ...` line inside a
// section, the line it is on (lower-cased as iniparser does). Every error then reads
//     FILE:LINE: [section] key: what is wrong
// (an override reads "--set section.key=value: [section] key: what is wrong"; a missing required
// key names the line of its section header, or only FILE when the section is absent).
//
// INI dialect (iniparser 4.1): `[section]`, `key = value`, whole-line comments starting with ; or #,
// inline comments after an unquoted value (`crop = 256 ; pixels`), values may be "double quoted"
// (needed for a value containing ; or #). Keys and sections are case-insensitive.
//
// The parser is compiled only when iniparser is found (train/config*.c in CMakeLists.txt); the
// TrainConfig struct itself is plain data and usable everywhere.
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define CFG_STR 1024        // capacity of string and list values
#define CFG_ERR_LEN 8192    // error buffers: every problem found, one line each
#define CFG_MAX_FIELDS 64   // schema rows (checked at startup)
#define CFG_ORIGIN_LEN 320
#define CFG_MAX_SECTIONS 16

typedef enum { CFG_MODEL_TOY = 0, CFG_MODEL_DOD = 1 } CfgModelKind;
typedef enum { CFG_FROZEN_F32 = 0, CFG_FROZEN_BF16 = 1 } CfgFrozenDtype;
typedef enum { CFG_EXTRACTOR_CNN = 0, CFG_EXTRACTOR_VAE = 1 } CfgExtractor;
typedef enum { CFG_SCHEDULE_CONSTANT = 0, CFG_SCHEDULE_COSINE = 1 } CfgSchedule;
typedef enum { CFG_DEVICE_CPU = 0, CFG_DEVICE_CUDA = 1 } CfgDevice;
typedef enum { CFG_PRECISION_F32 = 0, CFG_PRECISION_MIXED = 1 } CfgPrecision;
typedef enum { CFG_ACTIVATIONS_AUTO = 0, CFG_ACTIVATIONS_F32 = 1, CFG_ACTIVATIONS_BF16 = 2 } CfgActivations;

typedef struct {
    // [model]
    int model_kind;                   // CfgModelKind
    char model_base[CFG_STR];         // diffusers SD 2.1-base directory (dod)
    char prompt_embedding[CFG_STR];   // precomputed 77 x 1024 prompt embedding (dod)
    int frozen_dtype;                 // CfgFrozenDtype
    long long toy_width;              // toy model: hidden channels
    int device;                       // CfgDevice: model, batches and optimizer state
    int precision;                    // CfgPrecision: CUDA compute mode
    int activations;                  // CfgActivations: storage dtype of activations
    // [lora]
    long long lora_rank;
    double lora_alpha;
    // [modulation]
    int extractor;                    // CfgExtractor
    // [stage]
    long long stage;                  // 1 or 2
    char init_from[CFG_STR];          // stage 2: a stage-1 run dir or checkpoint file
    // [data]
    char train_file[CFG_STR];
    char tasks[CFG_STR];              // "dehaze:3,derain:2,denoise:2"
    long long crop;
    bool flips;
    long long loader_threads;
    char val_file[CFG_STR];           // "" = no validation
    // [optim]
    double lr, beta1, beta2, weight_decay, eps, clip_norm;
    int schedule;                     // CfgSchedule
    long long warmup;
    long long grad_accum;
    // [loss]
    double loss_mse, loss_ssim, loss_lpips;
    // [train]
    long long steps;
    long long seed;
    bool recompute;
    char run_dir[CFG_STR];
    // [log]
    long long log_every;
    char log_jsonl[CFG_STR];          // relative to the run dir unless absolute
    bool log_tensorboard;             // event files in <run_dir>/tb
    // [checkpoint]
    long long ckpt_every;
    long long ckpt_keep_last;         // 0 = keep all
    char ckpt_dir[CFG_STR];           // relative to the run dir unless absolute
    // [val]
    long long val_every;              // 0 = never
    long long val_images;
    bool val_grid;
    // Where each schema row's value came from, as the error prefix: "FILE:LINE" or
    // "--set section.key=value"; "" for a default. Indexed like the schema.
    char origin[CFG_MAX_FIELDS][CFG_ORIGIN_LEN];
    char source_file[CFG_STR];        // the config file read last ("" if none)
    int section_line[CFG_MAX_SECTIONS];   // line of each schema section's header in it (0: absent)
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
