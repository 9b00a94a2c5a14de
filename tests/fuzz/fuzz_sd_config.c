// Fuzz target: diffusers config.json files (UNet, VAE and scheduler parsers on the same bytes). A
// config that parses yields a tensor table and a noise schedule of bounded size.
#include <stdlib.h>

#include "layers/sd_config.h"
#include "layers/sd_weights.h"
#include "tests/fuzz/fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[256], err[SD_CONFIG_ERR_LEN];
    fuzz_scratch(path, sizeof path, "config.json");
    if (fuzz_write_file(path, data, size)) return 0;
    SdUNetConfig u;
    SdVaeConfig v;
    SdSchedulerConfig s;
    SdTensorTable table = {0};
    if (sd_unet_config_load(path, &u, err) == 0) {
        sd_unet_tensor_table(&u, &table);
        if (table.n > 200000) abort();   // the range checks bound it far below this
        sd_table_free(&table);
    }
    if (sd_vae_config_load(path, &v, err) == 0) {
        sd_vae_tensor_table(&v, &table);
        sd_table_free(&table);
    }
    if (sd_scheduler_config_load(path, &s, err) == 0) {
        double *abar = malloc(sizeof(double) * (size_t)s.num_train_timesteps);
        sd_scheduler_alphas_cumprod(&s, abar);
        free(abar);
    }
    unlink(path);
    return 0;
}

// The tiny base model's three configs (configs/tiny_base), copied byte for byte.
int fuzz_write_seeds(const char *dir) {
    return fuzz_seed_from_repo(dir, "configs/tiny_base/unet/config.json", "unet.json") ||
           fuzz_seed_from_repo(dir, "configs/tiny_base/vae/config.json", "vae.json") ||
           fuzz_seed_from_repo(dir, "configs/tiny_base/scheduler/scheduler_config.json", "scheduler.json");
}
