// The model's keys of a configuration file: [model], [lora], [modulation], [stage], [eval] and
// [checkpoint] dir, read into ModelOptions (layers/model.h) through one schema (layers/config_schema.h). dod-train
// composes this schema with its own (train/config.c); dod-eval reads the model's part of a training
// configuration with it, skipping the other sections.
//
// Compiled only when iniparser is found (layers/config_model.c; CMakeLists.txt), like the reader.
#pragma once
#include <stddef.h>

#include "layers/config_schema.h"
#include "layers/model.h"

// The model's schema: field offsets are into ModelOptions. Sections [model], [lora], [modulation],
// [stage], [eval] are its own; of [checkpoint] it reads `dir` only.
const CfgSchema *model_config_schema(void);
// Defaults of the model's keys (=; o is cleared first, so seed and recompute are 0 / false).
void model_config_defaults(ModelOptions *o, CfgSource *src);
// Reads the model's keys of a configuration file over *o; other sections are skipped. 0, or -1
// with every problem, one "FILE:LINE: [section] key: what is wrong" line each.
int model_config_load(ModelOptions *o, CfgSource *src, const char *path, char *err, size_t errlen);
// Applies one "section.key=value" override of a model key (other sections are skipped). 0 or -1.
int model_config_set(ModelOptions *o, CfgSource *src, const char *assignment, char *err, size_t errlen);
// Cross-key checks of the model's keys (kind = dod needs a base, stage 2 needs init_from and only
// stage 2 has one, extractor = adm needs adm_weights, mixed precision needs device = cuda; files are
// not opened here). Appends (+=) one line per problem to err,
// each naming where the value came from (src); returns how many.
int model_config_check(const ModelOptions *o, const CfgSource *src, char *err, size_t errlen);
