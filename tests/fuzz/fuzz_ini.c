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
    const char *names[] = {"toy.ini", "tiny.ini", "aio3.ini"};
    for (int k = 0; k < 3; k++) {
        char src[4096];
        snprintf(src, sizeof src, "%s/configs/%s", DOD_SOURCE_DIR, names[k]);
        FILE *f = fopen(src, "rb");
        if (!f) return 1;
        char buf[65536];
        size_t n = fread(buf, 1, sizeof buf, f);
        fclose(f);
        if (fuzz_seed(dir, names[k], buf, n)) return 1;
    }
    return 0;
}
