// Fuzz target: dod-train checkpoints (checkpoint_load into a fixed two-tensor model with AdamW, and
// checkpoint_load_weights, the stage-2 path). A load that succeeds leaves finite values behind.
#include <stdlib.h>

#include "autograd/finite.h"
#include "train/checkpoint.h"
#include "tests/fuzz/fuzz_util.h"

static Tensor *params[2];
static AdamW *opt;
static ParamStore *store;

static void make_model(void) {
    if (opt) return;
    int64_t s1[2] = {4, 3}, s2[1] = {3};
    params[0] = tensor_new_persistent("net.weight", 2, s1, DT_F32);
    params[1] = tensor_new_persistent("net.bias", 1, s2, DT_F32);
    for (int i = 0; i < 12; i++) ((float *)params[0]->data)[i] = 0.25f * (float)i;
    opt = adamw_new(params, 2, adamw_defaults());
    store = params_new();
    params_add(store, "net.weight", tensor_new_persistent("net.weight", 2, s1, DT_BF16));
    params_add(store, "net.bias", tensor_new_persistent("net.bias", 1, s2, DT_F32));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    make_model();
    char path[256], err[CKPT_ERR_LEN];
    fuzz_scratch(path, sizeof path, "step_0000001.safetensors");
    if (fuzz_write_file(path, data, size)) return 0;
    CheckpointInfo info;
    if (checkpoint_load(path, params, 2, opt, &info, err, sizeof err) == 0) {
        if (info.step < 0 || tensor_first_nonfinite(params[0]) >= 0 || tensor_first_nonfinite(params[1]) >= 0) abort();
        checkpoint_info_free(&info);
    }
    int n = 0;
    checkpoint_load_weights(path, store, &n, err, sizeof err);
    unlink(path);
    return 0;
}

int fuzz_write_seeds(const char *dir) {
    make_model();
    CheckpointInfo info = {.step = 1, .adamw_step = 1, .seed = 5, .loader_next = 2, .stage = 1,
                           .config_text = "[model]\nkind = toy\n"};
    snprintf(info.model_kind, sizeof info.model_kind, "toy");
    char err[CKPT_ERR_LEN], latest[4096];
    int rc = checkpoint_save(dir, params, 2, opt, &info, 0, NULL, 0, err, sizeof err) != 0;
    snprintf(latest, sizeof latest, "%s/latest", dir);
    unlink(latest);   // not a checkpoint
    return rc;
}
