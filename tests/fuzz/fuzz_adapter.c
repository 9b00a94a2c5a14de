// Fuzz target: adapter files (layers/adapter.h: what dod-restore and dod-eval run --adapter read
// first): the safetensors header, every metadata key, the tensors' hash and the prompt embedding.
// A file that reads has sane metadata; anything else is an error, never a crash.
#include <limits.h>
#include <math.h>
#include <stdlib.h>

#include "layers/adapter.h"
#include "tests/dod_fixture_config.h"
#include "tests/fuzz/fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[256], err[ADAPTER_ERR_LEN];
    fuzz_scratch(path, sizeof path, "adapter.safetensors");
    if (fuzz_write_file(path, data, size)) return 0;
    AdapterInfo info;
    if (adapter_read_info(path, &info, err, sizeof err) == 0) {
        if (info.stage < 1 || info.stage > 2 || info.rank < 1 || !(info.alpha > 0) || !isfinite(info.alpha) ||
            info.n_unet_lora < 0 || info.n_vae_lora < 0 || strlen(info.base.config_hash) != 16 ||
            strlen(info.base.weights_hash) != 16)
            abort();
    }
    unlink(path);
    return 0;
}

// The seed: the adapter of the parity fixture's small stage-1 model (tests/dod_fixture_config.h) on
// the tiny SD fixture, bf16, as dod-export writes it; the base is named by its path in the source tree
// (the metadata records it; no machine's path goes into the committed corpus).
int fuzz_write_seeds(const char *dir) {
    char path[4096], err[ADAPTER_ERR_LEN];
    if (!realpath(dir, path)) return 1;
    strncat(path, "/seed.safetensors", sizeof path - strlen(path) - 1);
    DodModelConfig cfg = dod_fixture_config(1);
    DodModel *m = dod_model_create(&cfg);
    if (chdir(DOD_SOURCE_DIR)) return 1;
    AdapterExportOptions eo = {.base_dir = "tests/fixtures/sd/sd2_tiny/model", .checkpoint = "fuzz seed", .step = 1,
                               .prompt = "", .dtype = DT_BF16};
    int rc = adapter_export(m, path, &eo, err, sizeof err);
    if (rc) fprintf(stderr, "%s\n", err);
    dod_model_free(m);
    return rc ? 1 : 0;
}
