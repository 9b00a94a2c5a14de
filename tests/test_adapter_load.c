// adapter_export -> adapter_load (layers/adapter.h) of models whose sizes are not the defaults: the
// parity fixture's small modulation (cnn 4-6-8-8, de 12, block 6) and detail growth 2, in stage 1 and
// 2, and the adm extractor on the small guided-diffusion fixture (8-channel heads, 8 norm groups):
//  - every tensor of the loaded model equals the exported one (bitwise; the tensors are randomised
//    first, so a model initialised alike would not pass), built with the recorded sizes;
//  - an adm adapter without its weights file is refused naming the adapter and --adm-weights; with
//    bf16 frozen weights (the CUDA path) the encoder's weights are still recognised as the exported ones;
//  - malformed modulation metadata (a width out of range, a cnn whose last width is not feature_dim,
//    a missing field) is refused naming the adapter, the key and the field.
#include "tests/check.h"

#include "layers/adapter.h"

#include "tests/dod_fixture_config.h"

static void randomize(DodModel *m, uint64_t seed) {
    for (int i = 0; i < params_count(m->params); i++)
        tensor_rand_uniform(params_at(m->params, i), seed + (uint64_t)i, -0.5f, 0.5f);
}

// Whether every tensor of a is in b with the same shape and bits.
static bool same_params(DodModel *a, DodModel *b) {
    if (params_count(a->params) != params_count(b->params)) return false;
    for (int i = 0; i < params_count(a->params); i++) {
        const Tensor *x = params_at(a->params, i), *y = params_get(b->params, x->name);
        if (!y || !tensor_same_shape(x, y) || memcmp(tensor_f32(x), tensor_f32(y), sizeof(float) * (size_t)x->numel)) {
            fprintf(stderr, "tensor %s differs\n", x->name);
            return false;
        }
    }
    return true;
}

// Exports a randomised model of cfg to path (=); the model is returned for comparison.
static DodModel *export_model(const DodModelConfig *cfg, const char *path) {
    DodModel *m = dod_model_create(cfg);
    randomize(m, 77);
    char err[ADAPTER_ERR_LEN] = "";
    AdapterExportOptions eo = {.base_dir = DOD_FIXTURE_BASE, .checkpoint = "test", .step = 3, .dtype = DT_F32};
    CHECK(adapter_export(m, path, &eo, err, sizeof err) == 0, "export: %s", err);
    return m;
}

// A copy of src at dst with the first `from` replaced by `to` (same length: the header keeps its size).
static void patched_copy(const char *src, const char *dst, const char *from, const char *to) {
    FILE *f = fopen(src, "rb");
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n);
    CHECK(fread(buf, 1, (size_t)n, f) == (size_t)n, "read %s", src);
    fclose(f);
    char *p = memmem(buf, (size_t)n, from, strlen(from));
    CHECK(p && strlen(from) == strlen(to), "%s holds %s", src, from);
    if (p) memcpy(p, to, strlen(to));
    f = fopen(dst, "wb");
    fwrite(buf, 1, (size_t)n, f);
    fclose(f);
    free(buf);
}

static void expect_refused(const char *path, const char *what, const char *needle) {
    AdapterInfo info;
    char err[ADAPTER_ERR_LEN] = "";
    CHECK(adapter_read_info(path, &info, err, sizeof err) != 0 && strstr(err, path) && strstr(err, needle),
          "%s: refused naming the file and '%s' (got: %s)", what, needle, err);
}

int main(void) {
    char dir[] = "/tmp/dod-adapter-load-XXXXXX", path[256], bad[256];
    if (!mkdtemp(dir)) return 1;
    snprintf(path, sizeof path, "%s/a.safetensors", dir);
    snprintf(bad, sizeof bad, "%s/bad.safetensors", dir);
    char err[ADAPTER_ERR_LEN] = "";

    for (int stage = 1; stage <= 2; stage++) {
        DodModelConfig cfg = dod_fixture_config(stage);
        DodModel *m = export_model(&cfg, path);
        AdapterInfo info;
        DodModel *l = adapter_load(DOD_FIXTURE_BASE, path, NULL, DT_F32, &info, err, sizeof err);
        CHECK(l != NULL, "stage %d: the fixture's sizes load: %s", stage, err);
        if (l) {
            CHECK(l->mod.cfg.de_dim == 12 && l->mod.cfg.block_dim == 6 && l->mod.cfg.feature_dim == 8 &&
                      l->mod.cfg.cnn_channels[0] == 4 && l->mod.cfg.cnn_channels[1] == 6,
                  "stage %d: built with the recorded modulation sizes", stage);
            CHECK(stage == 1 || l->detail.cfg.growth == DOD_FIXTURE_GROWTH, "stage 2: detail growth %d",
                  l->detail.cfg.growth);
            CHECK(same_params(m, l), "stage %d: every tensor as exported", stage);
            dod_model_free(l);
        }
        dod_model_free(m);
    }

    // Malformed modulation metadata (the stage-2 adapter written last).
    // The metadata values are strings in the JSON header: the modulation's quotes are escaped there.
    patched_copy(path, bad, "\\\"de_dim\\\":12", "\\\"de_dim\\\":-1");
    expect_refused(bad, "de_dim -1", "modulation: de_dim");
    patched_copy(path, bad, "\\\"cnn_channels\\\":[4,6,8,8]", "\\\"cnn_channels\\\":[4,6,8,9]");
    expect_refused(bad, "a cnn whose last width is not feature_dim", "not feature_dim 8");
    patched_copy(path, bad, "\\\"block_dim\\\":6", "\\\"blockxdim\\\":6");
    expect_refused(bad, "block_dim missing", "block_dim: expected an integer in [1, 16384] (missing)");
    patched_copy(path, bad, "\\\"de_dim\\\":12", "\\\"de_dim\\\":1e");
    expect_refused(bad, "modulation not JSON", "modulation is not a JSON object");

    // The adm extractor: its flags recorded, its weights file required and checked.
    DodModelConfig cfg = dod_fixture_config(1);
    dod_fixture_use_adm(&cfg);
    DodModel *m = export_model(&cfg, path);
    DodModel *l = adapter_load(DOD_FIXTURE_BASE, path, NULL, DT_F32, NULL, err, sizeof err);
    CHECK(!l && strstr(err, path) && strstr(err, "--adm-weights") && strstr(err, "adm_tiny.pt"),
          "adm without its weights: refused naming the adapter, the option and the file (got: %s)", err);
    AdapterInfo info;
    l = adapter_load(DOD_FIXTURE_BASE, path, DOD_FIXTURE_ADM, DT_F32, &info, err, sizeof err);
    CHECK(l != NULL, "adm adapter loads with its weights: %s", err);
    if (l) {
        CHECK(info.extractor == DOD_EXTRACTOR_ADM && l->adm && l->adm->cfg.head_channels == 8 && l->adm->cfg.groups == 8,
              "adm: built with the recorded flags");
        CHECK(l->mod.cfg.feature_dim == 32, "adm: the encoder's 32 features, got %d", l->mod.cfg.feature_dim);
        CHECK(same_params(m, l), "adm: every tensor as exported");
        dod_model_free(l);
    }
    // bf16 frozen weights (the CUDA path): the encoder's weights hash alike (values rounded to bf16).
    l = adapter_load(DOD_FIXTURE_BASE, path, DOD_FIXTURE_ADM, DT_BF16, NULL, err, sizeof err);
    CHECK(l != NULL, "adm adapter loads with bf16 frozen weights: %s", err);
    if (l) dod_model_free(l);
    dod_model_free(m);
    unlink(path);
    unlink(bad);
    rmdir(dir);
    return check_summary();
}
