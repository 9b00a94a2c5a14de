// The CLIP text encoder (layers/clip_text.h) and prompt encoding (layers/sd_prompt.h) against
// transformers 4.33: the tiny random CLIPTextModels beside the SD fixtures (tests/fixtures/sd/sdK_tiny/
// model/{tokenizer,text_encoder}: SD 1.x conventions = quick_gelu, f32 file, pad <|endoftext|>, an I64
// position_ids buffer; SD 2.x = gelu, bf16 file, pad "!"), prompts "" / "a photo" / punctuation /
// Unicode / one longer than 77 tokens. Checked: the ids, and last_hidden_state = text_encoder(ids)[0]
// within 1e-5 of the reference's largest value (the reference is float64 from the stored weights); the
// f32 file loaded as bf16 within 2e-2; the prompt cache (reused for the same prompts and files, redone
// otherwise) and the error messages (missing folders, torch pickles, missing tensors, bad config).
// With a GPU, the reference cases run again with the encoder on CUDA (same tolerance).
// Made by scripts/make_clip_fixtures.py.
#include <sys/stat.h>
#include <unistd.h>

#include "autograd/cuda/cuda_backend.h"
#include "check.h"
#include "layers/clip_text.h"
#include "layers/clip_tokenizer.h"
#include "layers/sd_prompt.h"

#define SD_FIX DOD_SOURCE_DIR "/tests/fixtures/sd/"
#define CLIP_FIX DOD_SOURCE_DIR "/tests/fixtures/clip/"

static double rel_err(const float *got, const float *want, int64_t n) {
    double scale;
    double d = max_abs_diff(got, want, (long)n, &scale);
    return d / (scale > 0 ? scale : 1);
}

static void reference_case(const char *preset, Device dev) {
    char model[512], ref[512], err[1024];
    snprintf(model, sizeof model, SD_FIX "%s_tiny/model", preset);
    snprintf(ref, sizeof ref, CLIP_FIX "encode_%s.safetensors", preset);
    char tok_dir[600], enc_dir[600];
    snprintf(tok_dir, sizeof tok_dir, "%s/tokenizer", model);
    snprintf(enc_dir, sizeof enc_dir, "%s/text_encoder", model);
    ClipTokenizer *tok = clip_tokenizer_load(tok_dir, err, sizeof err);
    CHECK(tok != NULL, "%s tokenizer: %s", preset, err);
    ClipTextModel *enc = clip_text_load(enc_dir, DT_F32, err, sizeof err);
    CHECK(enc != NULL, "%s text encoder: %s", preset, err);
    ClipTextModel *enc_bf16 = clip_text_load(enc_dir, DT_BF16, err, sizeof err);
    SafeTensors *st;
    char st_err[ST_ERR_LEN];
    CHECK(safetensors_open(ref, &st, st_err) == ST_OK, "%s", st_err);
    if (!tok || !enc || !enc_bf16) return;
    bool quick = !strcmp(preset, "sd1");
    CHECK(enc->cfg.act == (quick ? SD_TEXT_ACT_QUICK_GELU : SD_TEXT_ACT_GELU) && enc->cfg.num_layers == 2,
          "%s: act %d, %d layers", preset, (int)enc->cfg.act, enc->cfg.num_layers);
    if (dev == DEV_CUDA) clip_text_to_device(enc, dev);
    int count = atoi(safetensors_metadata(st, "count"));
    CHECK(count == 5, "%s: %d reference prompts", preset, count);
    for (int k = 0; k < count; k++) {
        char key[32];
        snprintf(key, sizeof key, "prompt.%d", k);
        const char *prompt = safetensors_metadata(st, key);
        snprintf(key, sizeof key, "ids.%d", k);
        Tensor *ids_ref, *hid_ref;
        safetensors_tensor(st, safetensors_find(st, key), DT_I64, NULL, &ids_ref, st_err);
        snprintf(key, sizeof key, "hidden.%d", k);
        safetensors_tensor(st, safetensors_find(st, key), DT_F32, NULL, &hid_ref, st_err);
        int64_t ids[77];
        int n = clip_tokenize(tok, prompt, ids, NULL, "test", err, sizeof err);
        CHECK(n >= 0 && !memcmp(ids, ids_ref->data, sizeof ids), "%s prompt %d '%.40s': ids differ", preset, k, prompt);
        Tensor *y = clip_text_forward(enc, ids, 77);
        Tensor *yh = tensor_to_device(y, DEV_CPU);
        double e = rel_err(tensor_data_f32(yh), tensor_data_f32(hid_ref), hid_ref->numel);
        CHECK(y->ndim == 2 && y->shape[0] == 77 && y->shape[1] == enc->cfg.hidden_size && e <= 1e-5,
              "%s prompt %d: hidden %s, max rel error %.3g (tol 1e-5)", preset, k, shape_str(y), e);
        Tensor *yb = clip_text_forward(enc_bf16, ids, 77);
        double eb = rel_err(tensor_data_f32(yb), tensor_data_f32(hid_ref), hid_ref->numel);
        // sd2's file is bf16 already (exact); sd1's f32 weights rounded to bf16 move the output by ~1e-2.
        CHECK(quick ? (eb < 2e-2 && eb > 0) : eb <= 1e-5, "%s prompt %d: bf16 weights: max rel error %.3g", preset, k,
              eb);
        tensor_free(ids_ref);
        tensor_free(hid_ref);
        ag_step_reset();
    }
    safetensors_close(st);
    clip_text_free(enc);
    clip_text_free(enc_bf16);
    clip_tokenizer_free(tok);
}

// The prompt layer end to end (tokenizer + encoder + truncation warning) and its cache.
static void prompt_cache(void) {
    char dir[256], cache[300], err[1024];
    snprintf(dir, sizeof dir, "/tmp/dod_test_clip_text_%d", (int)getpid());
    mkdir(dir, 0755);
    snprintf(cache, sizeof cache, "%s/prompt_embeds.safetensors", dir);
    SdPromptEmbeds e;
    bool reused = true;
    int rc = sd_prompt_cached(SD_FIX "sd1_tiny/model", "a photo", "", cache, "[model] prompt", &e, &reused, err,
                              sizeof err);
    CHECK(rc == 0 && !reused && e.prompt && e.negative, "first encode: rc %d reused %d: %s", rc, reused, err);
    if (rc) return;
    // "a photo" is prompt 1 of the reference file, "" prompt 0.
    SafeTensors *st;
    char st_err[ST_ERR_LEN];
    safetensors_open(CLIP_FIX "encode_sd1.safetensors", &st, st_err);
    Tensor *h1, *h0;
    safetensors_tensor(st, safetensors_find(st, "hidden.1"), DT_F32, NULL, &h1, st_err);
    safetensors_tensor(st, safetensors_find(st, "hidden.0"), DT_F32, NULL, &h0, st_err);
    CHECK(rel_err(tensor_data_f32(e.prompt), tensor_data_f32(h1), h1->numel) <= 1e-5 &&
              rel_err(tensor_data_f32(e.negative), tensor_data_f32(h0), h0->numel) <= 1e-5,
          "encoded prompt / empty negative prompt differ from transformers");
    SdPromptEmbeds again;
    rc = sd_prompt_cached(SD_FIX "sd1_tiny/model", "a photo", "", cache, "[model] prompt", &again, &reused, err,
                          sizeof err);
    CHECK(rc == 0 && reused && !memcmp(again.prompt->data, e.prompt->data, sizeof(float) * (size_t)e.prompt->numel),
          "same prompt: cache reused %d", reused);
    sd_prompt_embeds_free(&again);
    rc = sd_prompt_cached(SD_FIX "sd1_tiny/model", "a photo", "blurry", cache, "[model] prompt", &again, &reused, err,
                          sizeof err);
    CHECK(rc == 0 && !reused, "another negative prompt: cache not reused (%d)", reused);
    sd_prompt_embeds_free(&again);
    rc = sd_prompt_cached(SD_FIX "sd2_tiny/model", "a photo", "blurry", cache, "[model] prompt", &again, &reused, err,
                          sizeof err);
    CHECK(rc == 0 && !reused && again.prompt->shape[1] == 16, "another base: cache not reused (%d), width %ld", reused,
          (long)again.prompt->shape[1]);
    sd_prompt_embeds_free(&again);
    sd_prompt_embeds_free(&e);
    tensor_free(h0);
    tensor_free(h1);
    safetensors_close(st);

    // Errors: a base without tokenizer/, invalid UTF-8.
    rc = sd_prompt_cached(dir, "a", NULL, NULL, "[model] prompt", &e, &reused, err, sizeof err);
    CHECK(rc == -1 && strstr(err, "/tokenizer: no such folder"), "no tokenizer folder: %s", err);
    rc = sd_prompt_encode(SD_FIX "sd2_tiny/model", "caf\xc3", NULL, DT_F32, DEV_CPU, "[model] prompt", &e, NULL, err,
                          sizeof err);
    CHECK(rc == -1 && strstr(err, "[model] prompt: not valid UTF-8"), "invalid UTF-8: %s", err);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0, "cleanup");
}

static void write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    fputs(text, f);
    fclose(f);
}

static void load_errors(void) {
    char dir[256], path[400], err[1024];
    snprintf(dir, sizeof dir, "/tmp/dod_test_clip_enc_%d", (int)getpid());
    mkdir(dir, 0755);
    ClipTextModel *m = clip_text_load(dir, DT_F32, err, sizeof err);
    CHECK(!m && strstr(err, "config.json: cannot open"), "no config: %s", err);
    snprintf(path, sizeof path, "%s/config.json", dir);
    write_file(path, "{\"hidden_size\": 10, \"num_attention_heads\": 3}");
    m = clip_text_load(dir, DT_F32, err, sizeof err);
    CHECK(!m && strstr(err, "num_attention_heads: 3 does not divide hidden_size 10"), "bad heads: %s", err);
    write_file(path, "{\"hidden_size\": 8, \"num_attention_heads\": 2, \"use_attention_mask\": true}");
    m = clip_text_load(dir, DT_F32, err, sizeof err);
    CHECK(!m && strstr(err, "use_attention_mask: true is not supported"), "attention mask: %s", err);
    write_file(path, "{\"hidden_size\": 8, \"num_attention_heads\": 2, \"hidden_act\": \"relu\"}");
    m = clip_text_load(dir, DT_F32, err, sizeof err);
    CHECK(!m && strstr(err, "hidden_act: \"relu\" is not supported"), "act: %s", err);
    write_file(path, "{\"hidden_size\": 8, \"num_attention_heads\": 2}");
    m = clip_text_load(dir, DT_F32, err, sizeof err);
    CHECK(!m && strstr(err, "no model.safetensors (nor model.fp16.safetensors, pytorch_model.bin)"), "no weights: %s", err);
    snprintf(path, sizeof path, "%s/pytorch_model.bin", dir);
    write_file(path, "not really a pickle");
    m = clip_text_load(dir, DT_F32, err, sizeof err);
    CHECK(!m && strstr(err, "pytorch_model.bin: "), "torch file: %s", err);
    // The sd1 fixture's weights as transformers' pytorch_model.bin: the very tensors of model.safetensors.
    char cmd[800];
    snprintf(cmd, sizeof cmd, "cp %s/sd1_tiny/model/text_encoder/config.json %s/ && cp %s %s/pytorch_model.bin", SD_FIX,
             dir, DOD_SOURCE_DIR "/tests/fixtures/torch_ckpt/sd1_tiny_text_encoder.bin", dir);
    CHECK(system(cmd) == 0, "copy");
    m = clip_text_load(dir, DT_F32, err, sizeof err);
    ClipTextModel *ref = clip_text_load(SD_FIX "sd1_tiny/model/text_encoder", DT_F32, err, sizeof err);
    CHECK(m && ref && params_count(m->ps) == params_count(ref->ps), "pytorch_model.bin: %s", err);
    int same = 0;
    for (int i = 0; m && ref && i < params_count(ref->ps); i++) {
        Tensor *a = params_at(ref->ps, i), *b = params_get(m->ps, a->name);
        same += b && b->numel == a->numel && !memcmp(a->data, b->data, sizeof(float) * (size_t)a->numel);
    }
    CHECK(ref && same == params_count(ref->ps), "pytorch_model.bin: %d of %d tensors equal model.safetensors'", same,
          ref ? params_count(ref->ps) : 0);
    clip_text_free(m);
    clip_text_free(ref);
    unlink(path);
    // The sd1 fixture's weights under a config with one layer more: every missing tensor is named.
    snprintf(cmd, sizeof cmd, "cp %s/sd1_tiny/model/text_encoder/model.safetensors %s/", SD_FIX, dir);
    CHECK(system(cmd) == 0, "copy");
    snprintf(path, sizeof path, "%s/config.json", dir);
    write_file(path, "{\"vocab_size\": 2014, \"hidden_size\": 12, \"intermediate_size\": 24, \"num_hidden_layers\": 3, "
                     "\"num_attention_heads\": 2}");
    m = clip_text_load(dir, DT_F32, err, sizeof err);
    CHECK(!m && strstr(err, "text_model.encoder.layers.2.self_attn.q_proj.weight"), "missing layer: %s", err);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0, "cleanup");
}

int main(void) {
    reference_case("sd1", DEV_CPU);
    reference_case("sd2", DEV_CPU);
    if (dod_cuda_available()) {  // the GPU suite: the same references with the encoder on CUDA
        reference_case("sd1", DEV_CUDA);
        reference_case("sd2", DEV_CUDA);
    } else {
        printf("skipping the CUDA cases: %s\n", dod_cuda_unavailable_reason());
    }
    prompt_cache();
    load_errors();
    return check_summary();
}
