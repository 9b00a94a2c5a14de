// Fuzz target: adapter files (layers/adapter.h: what dod-restore and dod-eval run --adapter read
// first): the safetensors header, every metadata key (the modulation's sizes, the adm extractor's flags
// and weights identity included), the tensors' hash and the prompt embedding.
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
        const DodModulationConfig *c = &info.modulation;
        if (c->rank != info.rank || c->feature_dim < 1 || c->de_dim < 1 || c->block_dim < 1 || c->feature_dim > 16384 ||
            c->de_dim > 16384 || c->block_dim > 16384 || info.detail_growth < 0 || (info.stage == 2) != (info.detail_growth > 0))
            abort();
        for (int i = 0; i < DOD_CNN_LAYERS; i++)
            if (c->cnn_channels[i] < 1 || c->cnn_channels[i] > 16384) abort();
        if (info.extractor == DOD_EXTRACTOR_ADM &&
            (info.adm.head_channels < 1 || info.adm.groups < 1 || info.adm.num_res_blocks < 1 ||
             strlen(info.adm_weights.hash) != 16 || info.adm_weights.bytes < 0))
            abort();
    }
    unlink(path);
    return 0;
}

// The seeds: the adapters of the parity fixture's small stage-1 model (tests/dod_fixture_config.h) on
// the tiny SD fixture, with its cnn extractor (seed.safetensors) and with the adm extractor on the small
// guided-diffusion fixture (seed_adm.safetensors), bf16, as dod-export writes them; the base is named by
// its path in the source tree (the metadata records it; no machine's path goes into the committed corpus).
static int write_seed(const char *dir, const char *name, bool adm) {
    char path[4096], err[ADAPTER_ERR_LEN];
    if (!realpath(dir, path)) return 1;
    strncat(path, name, sizeof path - strlen(path) - 1);
    DodModelConfig cfg = dod_fixture_config(1);
    if (adm) dod_fixture_use_adm(&cfg);
    DodModel *m = dod_model_create(&cfg);
    if (chdir(DOD_SOURCE_DIR)) return 1;
    AdapterExportOptions eo = {.base_dir = "tests/fixtures/sd/sd2_tiny/model", .checkpoint = "fuzz seed", .step = 1,
                               .prompt = "", .dtype = DT_BF16};
    int rc = adapter_export(m, path, &eo, err, sizeof err);
    if (rc) fprintf(stderr, "%s\n", err);
    dod_model_free(m);
    return rc ? 1 : 0;
}

int fuzz_write_seeds(const char *dir) {
    char abs[4096];
    if (!realpath(dir, abs)) return 1;   // write_seed changes the working directory
    return write_seed(abs, "/seed.safetensors", false) || write_seed(abs, "/seed_adm.safetensors", true);
}
