// Training checkpoints: bitwise save/load of trainable tensors and AdamW state, `latest`,
// keep_last pruning, stage-2 weight loading with dtype conversion, and the error paths (missing,
// truncated, foreign, misshapen, incomplete checkpoints); with a GPU, the same for CUDA-resident state.
#include "tests/check.h"

#include <sys/stat.h>

#include "autograd/cuda/cuda_backend.h"
#include "autograd/optim.h"
#include "layers/safetensors.h"
#include "train/checkpoint.h"

static char scratch[256];

typedef struct {
    ParamStore *ps;
    Tensor *p[2];
    AdamW *opt;
} ParamModel;

// Two trainable tensors with deterministic values; when step, one AdamW step on a fixed gradient.
static ParamModel make_model(uint64_t seed, bool step) {
    ParamModel m;
    m.ps = params_new();
    m.p[0] = params_add(m.ps, "a.weight", tensor_new_persistent("a.weight", 2, (int64_t[]){3, 4}, DT_F32));
    m.p[1] = params_add(m.ps, "b.bias", tensor_new_persistent("b.bias", 1, (int64_t[]){5}, DT_F32));
    tensor_randn(m.p[0], seed, 1.0f);
    tensor_randn(m.p[1], seed + 1, 1.0f);
    params_set_trainable(m.ps, "*", true);
    m.opt = adamw_new(m.p, 2, adamw_defaults());
    if (step) {
        for (int i = 0; i < 2; i++) {
            float *g = tensor_grad(m.p[i]);
            for (int64_t j = 0; j < m.p[i]->numel; j++) g[j] = 0.1f * (float)(j + 1) * (i ? -1 : 1);
        }
        adamw_step(m.opt, 1e-2f);
        adamw_step(m.opt, 1e-2f);
    }
    return m;
}

static void free_model(ParamModel *m) {
    adamw_free(m->opt);
    params_free(m->ps);
}

static CheckpointInfo info_for(int64_t step, const AdamW *opt) {
    CheckpointInfo info = {.step = step, .adamw_step = opt->step, .seed = 123, .loader_next = 2 * step, .stage = 1,
                           .config_text = "[train]\nsteps = 6\n; \"quoted\" \\ text\n"};
    snprintf(info.model_kind, sizeof info.model_kind, "toy");
    return info;
}

static bool same_bits(const Tensor *a, const float *b) { return !memcmp(a->data, b, sizeof(float) * (size_t)a->numel); }

static void test_round_trip(const char *dir) {
    ParamModel a = make_model(7, true), b = make_model(99, false);
    CheckpointInfo info = info_for(3, a.opt);
    info.world_size = 2;   // written by 2 processes (data-parallel training)
    char path[4300], err[CKPT_ERR_LEN];
    CHECK(checkpoint_save(dir, a.p, 2, a.opt, &info, 0, path, sizeof path, err, sizeof err) == 0, "save: %s", err);
    char want[4300];
    snprintf(want, sizeof want, "%s/step_0000003.safetensors", dir);
    CHECK(!strcmp(path, want), "checkpoint path %s", path);
    char latest[4300];
    CHECK(checkpoint_latest(dir, latest, sizeof latest, err, sizeof err) == 0 && !strcmp(latest, want), "latest: %s", err);
    CheckpointInfo got;
    CHECK(checkpoint_load(path, b.p, 2, b.opt, &got, err, sizeof err) == 0, "load: %s", err);
    for (int i = 0; i < 2; i++) {
        CHECK(same_bits(b.p[i], a.p[i]->data), "param %d bitwise", i);
        CHECK(same_bits(b.p[i], a.p[i]->data) && !memcmp(b.opt->m[i], a.opt->m[i], sizeof(float) * (size_t)a.p[i]->numel) &&
                  !memcmp(b.opt->v[i], a.opt->v[i], sizeof(float) * (size_t)a.p[i]->numel),
              "moments %d bitwise", i);
    }
    CHECK(b.opt->step == 2 && got.step == 3 && got.adamw_step == 2 && got.seed == 123 && got.loader_next == 6 && got.stage == 1 &&
              got.world_size == 2,
          "metadata: step %lld adamw %lld world %d", (long long)got.step, (long long)got.adamw_step, got.world_size);
    CHECK(!strcmp(got.model_kind, "toy") && !strcmp(got.config_text, info.config_text), "config text survives: %s", got.config_text);
    checkpoint_info_free(&got);
    // the same next update from both
    for (int i = 0; i < 2; i++) {
        float *ga = tensor_grad(a.p[i]), *gb = tensor_grad(b.p[i]);
        for (int64_t j = 0; j < a.p[i]->numel; j++) ga[j] = gb[j] = 0.05f * (float)j;
    }
    adamw_step(a.opt, 1e-2f);
    adamw_step(b.opt, 1e-2f);
    CHECK(same_bits(b.p[0], a.p[0]->data) && same_bits(b.p[1], a.p[1]->data), "next step identical after load");
    // stage-2 style weight loading into a bf16 store
    ParamStore *ps = params_new();
    Tensor *w = params_add(ps, "a.weight", tensor_new_persistent("a.weight", 2, (int64_t[]){3, 4}, DT_F32));
    Tensor *bb = params_add(ps, "b.bias", tensor_new_persistent("b.bias", 1, (int64_t[]){5}, DT_F32));
    params_add(ps, "extra.weight", tensor_new_persistent("extra.weight", 1, (int64_t[]){2}, DT_F32));
    tensor_convert_dtype(w, DT_BF16);
    int n = 0;
    CHECK(checkpoint_load_weights(path, ps, &n, err, sizeof err) == 0 && n == 2, "load weights: %s", err);
    ParamModel ref = make_model(7, true);
    CHECK(((uint16_t *)w->data)[5] == f32_to_bf16(tensor_data_f32(ref.p[0])[5]) && same_bits(bb, ref.p[1]->data),
          "weights converted to the store's dtype");
    free_model(&ref);
    params_free(ps);
    // a store missing one of the checkpoint's tensors
    ParamStore *ps2 = params_new();
    params_add(ps2, "a.weight", tensor_new_persistent("a.weight", 2, (int64_t[]){3, 4}, DT_F32));
    CHECK(checkpoint_load_weights(path, ps2, NULL, err, sizeof err) == -1 && strstr(err, "b.bias has no counterpart"), "%s", err);
    params_free(ps2);
    free_model(&a);
    free_model(&b);
}

static void test_pruning(const char *dir) {
    ParamModel a = make_model(1, true);
    char err[CKPT_ERR_LEN];
    for (int s = 1; s <= 5; s++) {
        CheckpointInfo info = info_for(s * 10, a.opt);
        CHECK(checkpoint_save(dir, a.p, 2, a.opt, &info, 2, NULL, 0, err, sizeof err) == 0, "save %d: %s", s, err);
    }
    int present = 0;
    for (int s = 1; s <= 5; s++) {
        char name[64], path[4300];
        checkpoint_name(s * 10, name, sizeof name);
        snprintf(path, sizeof path, "%s/%s", dir, name);
        struct stat st;
        bool exists = stat(path, &st) == 0;
        present += exists;
        CHECK(exists == (s >= 4), "step %d %s", s * 10, exists ? "kept" : "pruned");
    }
    CHECK(present == 2, "keep_last 2 keeps 2 (%d)", present);
    char latest[4300];
    CHECK(checkpoint_latest(dir, latest, sizeof latest, err, sizeof err) == 0 && strstr(latest, "step_0000050"), "latest %s", latest);
    free_model(&a);
}

static void write_bytes(const char *path, const char *bytes, size_t n) {
    FILE *f = fopen(path, "wb");
    fwrite(bytes, 1, n, f);
    fclose(f);
}

static void test_errors(const char *dir) {
    ParamModel a = make_model(3, true), b = make_model(4, false);
    CheckpointInfo info = info_for(4, a.opt), got;
    char path[4300], err[CKPT_ERR_LEN], p2[4400];
    checkpoint_save(dir, a.p, 2, a.opt, &info, 0, path, sizeof path, err, sizeof err);
    // missing file and missing latest
    snprintf(p2, sizeof p2, "%s/step_0000099.safetensors", dir);
    CHECK(checkpoint_load(p2, b.p, 2, b.opt, &got, err, sizeof err) == -1 && strstr(err, p2), "missing file: %s", err);
    snprintf(p2, sizeof p2, "%s/empty", dir);
    mkdir(p2, 0755);
    char latest[4300];
    CHECK(checkpoint_latest(p2, latest, sizeof latest, err, sizeof err) == -1 && strstr(err, "no checkpoint to resume from"),
          "no latest: %s", err);
    // latest naming a deleted file
    snprintf(p2, sizeof p2, "%s/latest", dir);
    write_bytes(p2, "step_0000777.safetensors\n", 25);
    CHECK(checkpoint_latest(dir, latest, sizeof latest, err, sizeof err) == -1 && strstr(err, "which is missing"), "dangling: %s", err);
    write_bytes(p2, "garbage\n", 8);
    CHECK(checkpoint_latest(dir, latest, sizeof latest, err, sizeof err) == -1 && strstr(err, "does not name a checkpoint"), "%s", err);
    // truncated copy
    FILE *f = fopen(path, "rb");
    char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    snprintf(p2, sizeof p2, "%s/truncated.safetensors", dir);
    write_bytes(p2, buf, n - 20);
    CHECK(checkpoint_load(p2, b.p, 2, b.opt, &got, err, sizeof err) == -1 && strstr(err, "truncated.safetensors"), "truncated: %s", err);
    // a corrupted header byte
    memcpy(buf + 9, "XX", 2);
    snprintf(p2, sizeof p2, "%s/corrupt.safetensors", dir);
    write_bytes(p2, buf, n);
    CHECK(checkpoint_load(p2, b.p, 2, b.opt, &got, err, sizeof err) == -1 && strstr(err, "corrupt.safetensors"), "corrupt: %s", err);
    // a foreign safetensors file (no checkpoint metadata)
    snprintf(p2, sizeof p2, "%s/foreign.safetensors", dir);
    char sterr[ST_ERR_LEN];
    safetensors_save(p2, a.p, 2, NULL, 0, sterr);
    CHECK(checkpoint_load(p2, b.p, 2, b.opt, &got, err, sizeof err) == -1 && strstr(err, "not a dod-train checkpoint"), "foreign: %s", err);
    // missing optimizer state
    StMetadata meta[] = {{"format", CKPT_FORMAT}, {"format_version", "1"}, {"step", "1"}, {"adamw_step", "1"}, {"seed", "1"},
                         {"loader_next", "1"}, {"stage", "1"}};
    snprintf(p2, sizeof p2, "%s/nooptim.safetensors", dir);
    safetensors_save(p2, a.p, 2, meta, 7, sterr);
    CHECK(checkpoint_load(p2, b.p, 2, b.opt, &got, err, sizeof err) == -1 && strstr(err, "optimizer tensor optim.m.a.weight is missing"),
          "no optimizer state: %s", err);
    // world_size: absent (older files) reads as 1 process; not an integer is an error naming the key
    SafeTensors *st = checkpoint_open(p2, err, sizeof err);
    CHECK(st && checkpoint_read_info(st, &got, err, sizeof err) == 0 && got.world_size == 1, "no world_size: %s", err);
    if (st) {
        checkpoint_info_free(&got);
        safetensors_close(st);
    }
    StMetadata bad_world[8];
    memcpy(bad_world, meta, sizeof meta);
    bad_world[7] = (StMetadata){"world_size", "two"};
    snprintf(p2, sizeof p2, "%s/badworld.safetensors", dir);
    safetensors_save(p2, a.p, 2, bad_world, 8, sterr);
    CHECK(checkpoint_load(p2, b.p, 2, NULL, &got, err, sizeof err) == -1 && strstr(err, "metadata world_size is not an integer"),
          "bad world_size: %s", err);
    // a missing trainable tensor, and a tensor the model does not train
    snprintf(p2, sizeof p2, "%s/onlyone.safetensors", dir);
    safetensors_save(p2, a.p, 1, meta, 7, sterr);
    CHECK(checkpoint_load(p2, b.p, 2, NULL, &got, err, sizeof err) == -1 && strstr(err, "trainable tensor b.bias is missing"), "%s", err);
    CHECK(checkpoint_load(path, b.p, 1, NULL, &got, err, sizeof err) == -1 && strstr(err, "holds tensor b.bias, which the model does not train"),
          "%s", err);
    // a shape mismatch
    Tensor *wrong = tensor_new_persistent("a.weight", 2, (int64_t[]){4, 3}, DT_F32);
    CHECK(checkpoint_load(path, (Tensor *[]){wrong, b.p[1]}, 2, NULL, &got, err, sizeof err) == -1 &&
              strstr(err, "tensor a.weight has shape [3, 4], the model expects [4, 3]"),
          "shape: %s", err);
    tensor_free(wrong);
    free_model(&a);
    free_model(&b);
}

// Whole-file byte comparison.
static bool same_file_bytes(const char *a, const char *b) {
    FILE *fa = fopen(a, "rb"), *fb = fopen(b, "rb");
    bool same = fa && fb;
    for (int ca = 0, cb = 0; same && ca != EOF;) {
        ca = fgetc(fa);
        cb = fgetc(fb);
        same = ca == cb;
    }
    if (fa) fclose(fa);
    if (fb) fclose(fb);
    return same;
}

// Host copy of n floats of device memory (=, malloc'ed).
static float *device_floats(const void *dev, int64_t n) {
    float *h = dod_malloc(sizeof(float) * (size_t)(n ? n : 1), "test host copy");
    device_copy(h, DEV_CPU, dev, DEV_CUDA, sizeof(float) * (size_t)n);
    return h;
}

// Device-resident training state: a checkpoint written from CUDA parameters and moments is byte for
// byte the one written from the same values on the host; loading it into CUDA parameters and
// moments restores them bitwise; stage-2 weight loading converts into a bf16 CUDA tensor. Needs a
// GPU (SKIP line otherwise).
static void test_device_round_trip(const char *dir) {
    if (!dod_cuda_available()) {
        printf("SKIP: device checkpoints: no CUDA device (%s)\n", dod_cuda_unavailable_reason());
        return;
    }
    char host_dir[400], dev_dir[400], hp[4300], dp[4300], err[CKPT_ERR_LEN];
    snprintf(host_dir, sizeof host_dir, "%s/host", dir);
    snprintf(dev_dir, sizeof dev_dir, "%s/cuda", dir);
    ParamModel a = make_model(7, true);   // after two AdamW steps: non-zero moments
    Tensor *d[2];
    for (int i = 0; i < 2; i++) d[i] = tensor_to_device(a.p[i], DEV_CUDA);
    AdamW *dopt = adamw_new(d, 2, adamw_defaults());
    for (int i = 0; i < 2; i++) {
        device_copy(dopt->m[i], DEV_CUDA, a.opt->m[i], DEV_CPU, sizeof(float) * (size_t)a.p[i]->numel);
        device_copy(dopt->v[i], DEV_CUDA, a.opt->v[i], DEV_CPU, sizeof(float) * (size_t)a.p[i]->numel);
    }
    dopt->step = a.opt->step;
    CheckpointInfo info = info_for(3, a.opt);
    CHECK(checkpoint_save(host_dir, a.p, 2, a.opt, &info, 0, hp, sizeof hp, err, sizeof err) == 0, "host save: %s", err);
    CHECK(checkpoint_save(dev_dir, d, 2, dopt, &info, 0, dp, sizeof dp, err, sizeof err) == 0, "device save: %s", err);
    CHECK(same_file_bytes(hp, dp), "checkpoint of CUDA state %s is byte-identical to the host one %s", dp, hp);
    for (int i = 0; i < 2; i++) CHECK(d[i]->device == DEV_CUDA, "saving leaves %s on the device", d[i]->name);

    ParamModel b = make_model(99, false);
    Tensor *e[2];
    for (int i = 0; i < 2; i++) e[i] = tensor_to_device(b.p[i], DEV_CUDA);
    AdamW *eopt = adamw_new(e, 2, adamw_defaults());
    CheckpointInfo got;
    CHECK(checkpoint_load(dp, e, 2, eopt, &got, err, sizeof err) == 0, "device load: %s", err);
    CHECK(eopt->step == a.opt->step && got.step == 3, "counters %lld, step %lld", (long long)eopt->step, (long long)got.step);
    checkpoint_info_free(&got);
    for (int i = 0; i < 2; i++) {
        float *pv = device_floats(e[i]->data, e[i]->numel), *mv = device_floats(eopt->m[i], e[i]->numel),
              *vv = device_floats(eopt->v[i], e[i]->numel);
        CHECK(same_bits(a.p[i], pv) && !memcmp(a.opt->m[i], mv, sizeof(float) * (size_t)e[i]->numel) &&
                  !memcmp(a.opt->v[i], vv, sizeof(float) * (size_t)e[i]->numel),
              "%s and its moments restored bitwise on the device", e[i]->name);
        free(pv);
        free(mv);
        free(vv);
    }

    // stage-2 initialisation into device tensors: a bf16 one (converted on the host, then copied)
    ParamStore *ps = params_new();
    Tensor *w16 = params_add(ps, "a.weight", tensor_new_persistent("a.weight", 2, (int64_t[]){3, 4}, DT_BF16));
    Tensor *b32 = params_add(ps, "b.bias", tensor_new_persistent("b.bias", 1, (int64_t[]){5}, DT_F32));
    tensor_move_to(w16, DEV_CUDA);
    tensor_move_to(b32, DEV_CUDA);
    int n_loaded = 0;
    CHECK(checkpoint_load_weights(dp, ps, &n_loaded, err, sizeof err) == 0 && n_loaded == 2, "load weights: %s", err);
    uint16_t got16[12], want16[12];
    device_copy(got16, DEV_CPU, w16->data, DEV_CUDA, sizeof got16);
    for (int j = 0; j < 12; j++) want16[j] = f32_to_bf16(tensor_data_f32(a.p[0])[j]);
    float *bias = device_floats(b32->data, 5);
    CHECK(!memcmp(got16, want16, sizeof got16) && same_bits(a.p[1], bias), "stage-1 weights converted into CUDA tensors");
    free(bias);
    params_free(ps);

    adamw_free(eopt);
    adamw_free(dopt);
    for (int i = 0; i < 2; i++) {
        tensor_free(d[i]);
        tensor_free(e[i]);
    }
    free_model(&a);
    free_model(&b);
}

int main(void) {
    snprintf(scratch, sizeof scratch, "/tmp/dod_ckpttest_XXXXXX");
    if (!mkdtemp(scratch)) return 1;
    char d1[300], d2[300], d3[300], d4[300];
    snprintf(d1, sizeof d1, "%s/run/checkpoints", scratch);
    snprintf(d2, sizeof d2, "%s/prune", scratch);
    snprintf(d3, sizeof d3, "%s/errors", scratch);
    snprintf(d4, sizeof d4, "%s/device", scratch);
    test_round_trip(d1);
    test_pruning(d2);
    test_errors(d3);
    test_device_round_trip(d4);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", scratch);
    if (system(cmd)) fprintf(stderr, "warning: could not remove %s\n", scratch);
    return check_summary();
}
