// Fuzz target: dod-train INI configurations (the line scan, iniparser, overrides, validation and
// the resolved text).
#include <stdlib.h>

#include "train/config.h"
#include "tests/fuzz/fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[256];
    static char err[CFG_ERR_LEN];
    fuzz_scratch(path, sizeof path, "config.ini");
    if (fuzz_write_file(path, data, size)) return 0;
    TrainConfig c;
    config_defaults(&c);
    if (config_load_file(&c, path, err, sizeof err) == 0 && config_validate(&c, err, sizeof err) == 0) {
        char *text = config_to_text(&c);
        if (config_compare_text(&c, text, err, sizeof err) != 0) abort();   // its own text reads back equal
        free(text);
    }
    unlink(path);
    return 0;
}

int fuzz_write_seeds(const char *dir) {
    return fuzz_seed_from_repo(dir, "configs/toy.ini", "toy.ini") || fuzz_seed_from_repo(dir, "configs/tiny.ini", "tiny.ini") ||
           fuzz_seed_from_repo(dir, "configs/aio3.ini", "aio3.ini") ||
           fuzz_seed_from_repo(dir, "configs/tiny_stage2.ini", "tiny_stage2.ini");
}
