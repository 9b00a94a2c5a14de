// The DOD model configuration of the committed parity fixture (tests/fixtures/dod, made by
// scripts/make_dod_fixture.py: R, ALPHA, CNN, DE, BLK, GROWTH there), shared by the DOD tests and
// `dod-bench train`. Include after layers/dod_model.h; DOD_SOURCE_DIR comes from the build.
#pragma once
#include "layers/dod_model.h"

#define DOD_FIXTURE_BASE DOD_SOURCE_DIR "/tests/fixtures/sd/sd2_tiny/model"
#define DOD_FIXTURE_PROMPT DOD_SOURCE_DIR "/tests/fixtures/dod/prompt.safetensors"
#define DOD_FIXTURE_RANK 4
#define DOD_FIXTURE_ALPHA 6.0f
#define DOD_FIXTURE_GROWTH 2

// The fixture's stage-1 or stage-2 model on the sd2_tiny base (=, a value).
static inline DodModelConfig dod_fixture_config(int stage) {
    DodModelConfig c = dod_model_default_config(stage);
    c.base_model_dir = DOD_FIXTURE_BASE;
    c.prompt_path = DOD_FIXTURE_PROMPT;
    c.lora_rank = DOD_FIXTURE_RANK;
    c.lora_alpha = DOD_FIXTURE_ALPHA;
    c.modulation = dod_modulation_default_config(DOD_FIXTURE_RANK);
    static const int cnn[DOD_CNN_LAYERS] = {4, 6, 8, 8};
    for (int i = 0; i < DOD_CNN_LAYERS; i++) c.modulation.cnn_channels[i] = cnn[i];
    c.modulation.feature_dim = 8;
    c.modulation.de_dim = 12;
    c.modulation.block_dim = 6;
    c.detail_growth = DOD_FIXTURE_GROWTH;
    return c;
}

// The paper's adm extractor on the small guided-diffusion fixture (tests/fixtures/adm, made by
// scripts/make_adm_fixture.py: 8-channel heads, 8 norm groups, 32 features) (+= into c).
#define DOD_FIXTURE_ADM DOD_SOURCE_DIR "/tests/fixtures/adm/adm_tiny.pt"
static inline void dod_fixture_use_adm(DodModelConfig *c) {
    c->extractor = DOD_EXTRACTOR_ADM;
    c->adm_weights = DOD_FIXTURE_ADM;
    c->adm.head_channels = 8;
    c->adm.groups = 8;
}

// A synthetic training pair, as scripts/bench_train_torch.py builds one: hq uniform in [-1, 1],
// lq = clamp(hq + 0.15 noise, -1, 1); persistent f32 CPU tensors [batch, 3, crop, crop] (=).
static inline void dod_synthetic_pair(int64_t batch, int64_t crop, Tensor **lq, Tensor **hq) {
    int64_t shape[4] = {batch, 3, crop, crop};
    *hq = tensor_new_persistent("hq", 4, shape, DT_F32);
    *lq = tensor_new_persistent("lq", 4, shape, DT_F32);
    tensor_rand_uniform(*hq, 1, -1.0f, 1.0f);
    tensor_randn(*lq, 2, 0.15f);
    float *l = tensor_data_f32(*lq);
    const float *h = tensor_data_f32(*hq);
    for (int64_t i = 0; i < (*lq)->numel; i++) {
        float v = l[i] + h[i];
        l[i] = v < -1 ? -1 : v > 1 ? 1 : v;
    }
}
