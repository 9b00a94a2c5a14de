// Import of what the public DOD code saves (layers/dod_import.h), on tests/fixtures/dod_import (made by
// scripts/make_dod_import_fixture.py: our fixture model's weights under the public key layout, PEFT's
// own names, written by torch.save):
//  - every tensor name of a stage-2 model maps to a public key and back;
//  - stage 1: the imported model's tensors are bitwise the ones we started from, and it restores an image
//    bitwise as the model loaded from our own names does;
//  - stage 2 (the stage-1 tensors in place): the same for the detail module;
//  - a file lacking one key names it (ours and the public one), an unknown key is named, a model of
//    another shape (the cnn extractor) gets its mismatches and the tensors the public code lacks named,
//    and a full stage-2 save's base weights are skipped.
#include "tests/check.h"

#include "autograd/tape.h"
#include "layers/dod_import.h"
#include "layers/dod_model.h"
#include "layers/safetensors.h"
#include "tests/dod_fixture_config.h"

#ifndef DOD_SOURCE_DIR
#define DOD_SOURCE_DIR "."
#endif
#define FIX DOD_SOURCE_DIR "/tests/fixtures/"
#define STAGE1 FIX "dod_import/stage1.pkl"
#define STAGE2 FIX "dod_import/stage2.pkl"
#define EXPECT1 FIX "dod_import/expect_stage1.safetensors"
#define STEP FIX "dod/step.safetensors"

static char scratch[512];

// The parity fixture's sizes (tests/dod_fixture_config.h) but DOD's modulation sizes (de 256, block 64,
// as the import fixture), with the adm extractor (tests/fixtures/adm) or the fixture's cnn.
static DodModelConfig config(int stage, bool adm) {
    DodModelConfig c = dod_fixture_config(stage);
    c.modulation.de_dim = 256;
    c.modulation.block_dim = 64;
    if (adm) dod_fixture_use_adm(&c);
    return c;
}

static int import(DodModel *m, const char *path, DodImportStats *s, char *err, size_t len) {
    return dod_import_public(dod_model_params(m), path, s, err, len);
}

// Every trainable tensor of a and b bitwise equal (by name); returns how many were compared.
static int same_trainables(DodModel *a, DodModel *b) {
    int n = 0;
    for (int i = 0; i < params_count(a->params); i++) {
        Tensor *t = params_at(a->params, i), *u = params_get(b->params, t->name);
        bool same = u && tensor_same_shape(t, u) && !memcmp(t->data, u->data, sizeof(float) * (size_t)t->numel);
        CHECK(same, "%s differs after the import", t->name);
        n++;
    }
    return n;
}

static void check_restores_same(DodModel *a, DodModel *b, const char *what) {
    int64_t s[4] = {1, 3, 37, 45};
    Tensor *lq = tensor_new_persistent("lq", 4, s, DT_F32);
    tensor_rand_uniform(lq, 9, -1, 1);
    Tensor *x = dod_model_restore(a, lq);
    Tensor *keep = tensor_new_persistent("x", 4, x->shape, DT_F32);
    memcpy(keep->data, x->data, sizeof(float) * (size_t)x->numel);
    ag_step_reset();
    Tensor *y = dod_model_restore(b, lq);
    CHECK(!memcmp(keep->data, y->data, sizeof(float) * (size_t)y->numel), "%s: restored images differ", what);
    ag_step_reset();
    tensor_free(keep);
    tensor_free(lq);
}

static void test_names(void) {
    DodModelConfig c = config(2, true);
    DodModel *m = dod_model_create(&c);
    int n = 0;
    for (int i = 0; i < params_count(m->params); i++) {
        const char *name = params_at(m->params, i)->name;
        char pub[512], back[512];
        int a = dod_ours_to_public(name, pub, sizeof pub), b = a ? -1 : dod_public_to_ours(pub, back, sizeof back);
        CHECK(a == 0 && b == 0 && !strcmp(back, name), "%s -> %s -> %s", name, a ? "(none)" : pub, b ? "(none)" : back);
        n++;
    }
    CHECK(n == 191 + 150, "%d tensor names", n);
    char out[256];
    CHECK(dod_public_to_ours("state_dict_unet/down_blocks.0.resnets.0.conv1.lora_B.default.weight", out, sizeof out) == 0 &&
              !strcmp(out, "unet.down_blocks.0.resnets.0.conv1.lora_B.weight"), "PEFT name: %s", out);
    CHECK(dod_public_to_ours("state_dict_vae/decoder.sft_blocks_2.encode_enc_1.conv_out.bias", out, sizeof out) == 0 &&
              !strcmp(out, "detail.fuse.1.res_in.conv_shortcut.bias"), "shortcut: %s", out);
    CHECK(dod_public_to_ours("state_dict_vae/decoder.up_blocks.0.resnets.0.conv1.weight", out, sizeof out) ==
              DOD_IMPORT_SKIPPED, "a base weight is skipped");
    CHECK(dod_public_to_ours("state_dict_unet/down_blocks.0.resnets.0.conv1.base_layer.weight", out, sizeof out) == -1 &&
              dod_public_to_ours("state_dict_unet/x.lora_A.a.b.weight", out, sizeof out) == -1 &&
              dod_public_to_ours("rank_unet", out, sizeof out) == -1 &&
              dod_public_to_ours("state_dict_vae/decoder.sft_blocks_1.encode_enc_2.0.rdb4.conv1.weight", out, sizeof out) == -1,
          "unexpected keys");
    CHECK(dod_ours_to_public("mod.cnn.0.weight", out, sizeof out) == -1, "the public code has no cnn");
    dod_model_free(m);
}

static void test_stage1(void) {
    DodModelConfig c = config(1, true);
    DodModel *a = dod_model_create(&c), *b = dod_model_create(&c);
    char err[8192];
    DodImportStats s;
    CHECK(import(a, STAGE1, &s, err, sizeof err) == 0, "%s", err);
    CHECK(s.copied == 191 && s.skipped == 0, "%d copied, %d skipped", s.copied, s.skipped);
    CHECK(dod_model_load_tensors(b, EXPECT1, "", true) == 191, "our names");
    CHECK(same_trainables(a, b) == 191, "compared");
    // not the init: the values are the fixture's (B non-zero)
    Tensor *lb = params_get(a->params, "unet.conv_out.lora_B.weight");
    CHECK(lb && fabsf(tensor_data_f32(lb)[0]) > 0, "lora_B imported");
    check_restores_same(a, b, "stage 1");
    // --lora-gamma plain: the gamma half of the fuse bias moves by -1, the beta half stays.
    float before[8], after[8];
    Tensor *fb = params_get(a->params, "mod.fuse_mlp.bias");
    memcpy(before, fb->data, sizeof before);
    CHECK(dod_import_gamma_plain(a->params, 4, err, sizeof err) == 0, "%s", err);
    memcpy(after, fb->data, sizeof after);
    bool ok = true;
    for (int i = 0; i < 8; i++) ok &= after[i] == (i < 4 ? before[i] - 1.0f : before[i]);
    CHECK(ok, "gamma conversion");
    CHECK(dod_import_gamma_plain(a->params, 8, err, sizeof err) == -1 && strstr(err, "rank 8"), "wrong rank: %s", err);
    dod_model_free(a);
    dod_model_free(b);
}

static void test_stage2(void) {
    DodModelConfig c = config(2, true);
    DodModel *a = dod_model_create(&c), *b = dod_model_create(&c);
    char err[8192];
    CHECK(dod_model_load_tensors(a, EXPECT1, "", false) == 191 && dod_model_load_tensors(b, EXPECT1, "", false) == 191,
          "stage-1 tensors");
    DodImportStats s;
    CHECK(import(a, STAGE2, &s, err, sizeof err) == 0, "%s", err);
    CHECK(s.copied == 150, "%d copied", s.copied);
    CHECK(dod_model_load_tensors(b, STEP, "s2.param.", false) == 150, "our detail tensors");
    CHECK(same_trainables(a, b) == 191 + 150, "compared");
    check_restores_same(a, b, "stage 2");
    // A stage-1 file for a stage-2 model lacks the trainable detail module: named.
    CHECK(import(a, STAGE1, NULL, err, sizeof err) == -1 && strstr(err, "150 tensors of the model missing") &&
              strstr(err, "detail.skip_convs.0.weight (public key state_dict_vae/decoder.skip_conv_1.weight)"),
          "stage-1 file into stage 2: %s", err);
    dod_model_free(a);
    dod_model_free(b);
}

// The tensors of a public file under their key paths (converted to f32), minus `drop`, plus `add` (a
// [1] tensor): a safetensors file in scratch, which dod_import_public reads like the .pkl.
static const char *variant(const char *src, const char *drop, const char *add, const char *name) {
    char err[ST_ERR_LEN];
    SafeTensors *st;
    if (tensor_file_open(src, &st, err) != ST_OK) dod_fatal("test_dod_import", "%s", err);
    int n = safetensors_count(st), k = 0;
    Tensor **list = dod_calloc(sizeof(Tensor *) * (size_t)(n + 1), "variant");
    for (int i = 0; i < n; i++) {
        const StEntry *e = safetensors_entry(st, i);
        if (drop && !strcmp(e->name, drop)) continue;
        if (safetensors_tensor(st, e, DT_F32, e->name, &list[k], err) != ST_OK) dod_fatal("test_dod_import", "%s", err);
        k++;
    }
    if (add) {
        int64_t one = 1;
        list[k] = tensor_new_persistent(add, 1, &one, DT_F32);
        tensor_fill(list[k++], 0.5f);
    }
    safetensors_close(st);
    static char path[640];
    snprintf(path, sizeof path, "%s/%s", scratch, name);
    if (safetensors_save(path, list, k, NULL, 0, err) != ST_OK) dod_fatal("test_dod_import", "%s", err);
    for (int i = 0; i < k; i++) tensor_free(list[i]);
    free(list);
    return path;
}

static void test_errors(void) {
    DodModelConfig c = config(1, true);
    DodModel *m = dod_model_create(&c);
    char err[8192];
    const char *key = "state_dict_vae/encoder.down_blocks.1.resnets.0.conv2.lora_A.vae_skip.weight";
    CHECK(import(m, variant(STAGE1, key, NULL, "missing.safetensors"), NULL, err, sizeof err) == -1 &&
              strstr(err, "1 tensors of the model missing from the file") &&
              strstr(err, "vae.encoder.down_blocks.1.resnets.0.conv2.lora_A.weight (public key " ),
          "missing key: %s", err);
    CHECK(strstr(err, key) != NULL, "the missing public key is named: %s", err);
    CHECK(import(m, variant(STAGE1, NULL, "state_dict_unet/mid_block.something.weight", "extra.safetensors"), NULL, err,
                 sizeof err) == -1 &&
              strstr(err, "1 unexpected keys") && strstr(err, "state_dict_unet/mid_block.something.weight (not a key"),
          "unexpected key: %s", err);
    dod_model_free(m);

    // A stage-2 file saved with full = True also holds the frozen decoder: skipped, the rest imports.
    DodModelConfig c2 = config(2, true);
    m = dod_model_create(&c2);
    DodImportStats s;
    CHECK(import(m, variant(STAGE2, NULL, "state_dict_vae/decoder.up_blocks.0.resnets.0.conv1.bias", "full.safetensors"),
                 &s, err, sizeof err) == 0 && s.skipped == 1 && s.copied == 150,
          "full save: %d skipped, %d copied: %s", s.skipped, s.copied, err);
    dod_model_free(m);

    // The cnn extractor: de_mlp's input differs, and the cnn has no public counterpart.
    DodModelConfig cc = config(1, false);
    m = dod_model_create(&cc);
    CHECK(import(m, STAGE1, NULL, err, sizeof err) == -1 && strstr(err, "1 shapes differ") &&
              strstr(err, "state_dict_unet_de_mlp/0.weight is [256, 32], our mod.de_mlp.weight is [256, 8]") &&
              strstr(err, "mod.cnn.0.weight (the public code has no such tensor)"),
          "cnn model: %s", err);
    dod_model_free(m);
}

int main(void) {
    snprintf(scratch, sizeof scratch, "/tmp/dod_test_import_%d", (int)getpid());
    char err[512];
    if (fs_mkdirs(scratch, err, sizeof err)) dod_fatal("test_dod_import", "%s", err);
    test_names();
    test_stage1();
    test_stage2();
    test_errors();
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", scratch);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", scratch);
    return check_summary();
}
