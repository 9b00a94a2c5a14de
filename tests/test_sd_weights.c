// Stable Diffusion configs and weight loading against the committed diffusers fixtures
// (tests/fixtures/sd/{sd1,sd2}_tiny, made by scripts/make_sd_fixture.py): the tensor tables match the
// files exactly, the original single-file checkpoint loads to the same tensors, dtype handling
// (zero-copy vs converted), layout variants (.fp16, deprecated VAE names, .bin) and the errors for
// missing / reshaped tensors and unsupported config values.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "layers/sd_weights.h"
#include "tests/check.h"

static char tmpdir[64];

static const char *fixture(const char *preset) {
    static char buf[2][512];
    static int slot;
    char *p = buf[slot++ & 1];
    snprintf(p, 512, "%s/tests/fixtures/sd/%s_tiny", DOD_SOURCE_DIR, preset);
    return p;
}

static char *read_text(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) dod_fatal(path, "cannot open");
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    s[fread(s, 1, (size_t)n, f)] = 0;
    fclose(f);
    return s;
}

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    if (!f) dod_fatal(path, "cannot create");
    fputs(text, f);
    fclose(f);
}

// A scratch diffusers dir <tmpdir>/<name>/ with the preset's three configs copied; returns its path.
static const char *scratch_model(const char *name, const char *preset) {
    static char dir[512];
    snprintf(dir, sizeof dir, "%s/%s", tmpdir, name);
    const char *parts[3][2] = {{"unet", "config.json"}, {"vae", "config.json"}, {"scheduler", "scheduler_config.json"}};
    mkdir(dir, 0755);
    for (int i = 0; i < 3; i++) {
        char src[1024], dst[1024];
        snprintf(dst, sizeof dst, "%s/%s", dir, parts[i][0]);
        mkdir(dst, 0755);
        snprintf(src, sizeof src, "%s/model/%s/%s", fixture(preset), parts[i][0], parts[i][1]);
        snprintf(dst, sizeof dst, "%s/%s/%s", dir, parts[i][0], parts[i][1]);
        char *text = read_text(src);
        write_text(dst, text);
        free(text);
    }
    return dir;
}

// Rewrites src's tensors into dst (as dtype): `drop` names are left out, `reshape` gets shape [n]
// (its first n elements), deprecated VAE names are used when old_vae_names. NULL: none.
static void rewrite(const char *src, const char *dst, DType dtype, const char *drop1, const char *drop2,
                    const char *reshape, int64_t n, bool old_vae_names) {
    SafeTensors *st;
    char err[ST_ERR_LEN];
    if (safetensors_open(src, &st, err)) dod_fatal("rewrite", "%s", err);
    int cnt = safetensors_count(st), k = 0;
    Tensor **ts = malloc(sizeof(Tensor *) * (size_t)cnt);
    for (int i = 0; i < cnt; i++) {
        const StEntry *e = safetensors_entry(st, i);
        if ((drop1 && !strcmp(e->name, drop1)) || (drop2 && !strcmp(e->name, drop2))) continue;
        char name[256];
        snprintf(name, sizeof name, "%s", e->name);
        char *at;
        if (old_vae_names && strstr(name, "mid_block.attentions.0.")) {
            const char *from[] = {".to_q.", ".to_k.", ".to_v.", ".to_out.0."}, *to[] = {".query.", ".key.", ".value.", ".proj_attn."};
            for (int r = 0; r < 4; r++)
                if ((at = strstr(name, from[r]))) {
                    char tail[256];
                    snprintf(tail, sizeof tail, "%s", at + strlen(from[r]));
                    snprintf(at, sizeof name - (size_t)(at - name), "%s%s", to[r], tail);
                }
        }
        if (safetensors_tensor(st, e, dtype, name, &ts[k], err)) dod_fatal("rewrite", "%s", err);
        if (reshape && !strcmp(e->name, reshape)) {
            ts[k]->ndim = 1;
            ts[k]->shape[0] = n;
            ts[k]->numel = n;
        }
        k++;
    }
    if (safetensors_save(dst, ts, k, NULL, 0, err)) dod_fatal("rewrite", "%s", err);
    for (int i = 0; i < k; i++) tensor_free(ts[i]);
    free(ts);
    safetensors_close(st);
}

// The config's table and the file hold the same names with the same shapes, nothing more.
static void check_table_matches_file(const SdTensorTable *tab, const char *path) {
    SafeTensors *st;
    char err[ST_ERR_LEN];
    CHECK(safetensors_open(path, &st, err) == ST_OK, "%s", err);
    if (!st) return;
    CHECK(safetensors_count(st) == tab->n, "%s: %d tensors in file, %d in table", path, safetensors_count(st), tab->n);
    int bad = 0;
    for (int i = 0; i < tab->n; i++) {
        const SdTensorSpec *s = &tab->items[i];
        const StEntry *e = safetensors_find(st, s->name);
        bool ok = e && e->ndim == s->ndim && !memcmp(e->shape, s->shape, sizeof(int64_t) * (size_t)s->ndim);
        if (!ok && bad++ < 5) fprintf(stderr, "table entry %s: %s in file\n", s->name, e ? "other shape" : "absent");
    }
    CHECK(bad == 0, "%s: %d table entries differ from the file", path, bad);
    safetensors_close(st);
}

static void test_fixture(const char *preset) {
    char path[1024];
    SdModel m;
    char *lerr;
    snprintf(path, sizeof path, "%s/model", fixture(preset));
    CHECK(sd_model_load_diffusers(path, DT_F32, &m, &lerr) == 0, "%s: %s", preset, lerr ? lerr : "");
    if (lerr) { free(lerr); return; }
    bool sd2 = !strcmp(preset, "sd2");
    const SdUNetConfig *u = &m.unet_cfg;
    CHECK(u->n_levels == 2 && u->block_out_channels[0] == 8 && u->block_out_channels[1] == 16, "%s channels", preset);
    CHECK(u->down_attn[0] && !u->down_attn[1] && !u->up_attn[0] && u->up_attn[1], "%s block types", preset);
    CHECK(u->use_linear_projection == sd2 && u->upcast_attention == sd2, "%s projection flags", preset);
    CHECK(u->num_heads[0] == (sd2 ? 1 : 2) && u->num_heads[1] == 2, "%s heads per level", preset);
    CHECK(u->cross_attention_dim[0] == (sd2 ? 16 : 12) && u->cross_attention_dim[1] == u->cross_attention_dim[0], "cross");
    CHECK(u->layers_per_block[0] == (sd2 ? 1 : 2) && u->norm_num_groups == 4 && u->time_embed_dim == 32, "layers");
    CHECK(fabsf(u->norm_eps - 1e-5f) < 1e-9f && u->flip_sin_to_cos && u->freq_shift == 0, "time embedding");
    CHECK(m.vae_cfg.n_levels == 3 && m.vae_cfg.latent_channels == 4 && m.vae_cfg.norm_num_groups == 4, "vae cfg");
    CHECK(fabsf(m.vae_cfg.scaling_factor - 0.18215f) < 1e-7f && m.vae_cfg.mid_block_add_attention, "vae scaling");
    CHECK(m.sched_cfg.prediction_type == (sd2 ? SD_PRED_V : SD_PRED_EPSILON), "%s prediction", preset);
    CHECK(m.sched_cfg.beta_schedule == SD_BETA_SCALED_LINEAR && m.sched_cfg.num_train_timesteps == 1000, "schedule");
    double ac[1000];
    sd_scheduler_alphas_cumprod(&m.sched_cfg, ac);
    CHECK_NEAR(ac[999], 0.0046601, 2e-7, "alpha_bar(999), scaled_linear 0.00085..0.012");
    CHECK_NEAR(ac[0], 1 - 0.00085, 1e-12, "alpha_bar(0)");

    SdTensorTable ut = {0}, vt = {0};
    sd_unet_tensor_table(u, &ut);
    sd_vae_tensor_table(&m.vae_cfg, &vt);
    snprintf(path, sizeof path, "%s/model/unet/diffusion_pytorch_model.safetensors", fixture(preset));
    check_table_matches_file(&ut, path);
    snprintf(path, sizeof path, "%s/model/vae/diffusion_pytorch_model.safetensors", fixture(preset));
    check_table_matches_file(&vt, path);
    CHECK(params_count(m.unet) == ut.n && params_count(m.vae) == vt.n, "stores hold the whole tables");
    CHECK(m.unet_report.n_converted == 0 && m.unet_report.n_zero_copy == ut.n, "f32 file, f32 load: all zero copy");
    CHECK(m.unet_report.n_unexpected == 0 && m.vae_report.n_unexpected == 0, "nothing unexpected");
    CHECK(m.files[0] && m.files[1], "mappings kept for the views");
    Tensor *proj = params_get(m.unet, "down_blocks.0.attentions.0.proj_in.weight");
    CHECK(proj && proj->ndim == (sd2 ? 2 : 4), "%s proj_in keeps the file's form", preset);
    Tensor *q = params_get(m.vae, "decoder.mid_block.attentions.0.to_q.weight");
    CHECK(q && q->ndim == 2 && q->shape[0] == 16 && q->shape[1] == 16, "vae attention is linear");

    // The original single-file checkpoint (f16, LDM names) holds the same weights.
    SdModel s;
    snprintf(path, sizeof path, "%s/ldm.safetensors", fixture(preset));
    char cfgdir[1024];
    snprintf(cfgdir, sizeof cfgdir, "%s/model", fixture(preset));
    CHECK(sd_model_load_single_file(path, cfgdir, DT_F16, &s, &lerr) == 0, "%s ldm: %s", preset, lerr ? lerr : "");
    if (!lerr) {
        CHECK(s.unet_report.n_converted == 0 && s.vae_report.n_converted == 0, "f16 file, f16 load: zero copy");
        CHECK(s.n_other_tensors == 3, "text encoder / buffers / EMA counter counted as other: %d", s.n_other_tensors);
        CHECK(s.unet_report.n_unexpected == 0 && s.vae_report.n_unexpected == 0, "ldm: nothing unexpected");
        int bad = 0;
        ParamStore *pairs[2][2] = {{m.unet, s.unet}, {m.vae, s.vae}};
        for (int p = 0; p < 2; p++)
            for (int i = 0; i < params_count(pairs[p][0]); i++) {
                Tensor *a = params_at(pairs[p][0], i), *b = params_get(pairs[p][1], a->name);
                bool ok = b && tensor_same_shape(a, b) && b->dtype == DT_F16;
                for (int64_t k = 0; ok && k < a->numel; k++)
                    ok = ((uint16_t *)b->data)[k] == f32_to_f16(((float *)a->data)[k]);
                if (!ok && bad++ < 5) fprintf(stderr, "single-file tensor %s differs\n", a->name);
            }
        CHECK(bad == 0, "%s: %d single-file tensors differ from the diffusers ones", preset, bad);
        sd_model_free(&s);
    }
    free(lerr);

    // bf16 from an f32 file: one converted copy each, the mapping released.
    SdModel b;
    snprintf(path, sizeof path, "%s/model", fixture(preset));
    CHECK(sd_model_load_diffusers(path, DT_BF16, &b, &lerr) == 0, "bf16: %s", lerr ? lerr : "");
    if (!lerr) {
        CHECK(b.unet_report.n_zero_copy == 0 && b.unet_report.n_converted == ut.n, "bf16 load converts");
        CHECK(b.files[0] == NULL && b.files[1] == NULL, "no mapping kept when nothing is a view");
        Tensor *a = params_get(m.unet, "conv_in.weight"), *c = params_get(b.unet, "conv_in.weight");
        bool ok = c && c->dtype == DT_BF16;
        for (int64_t k = 0; ok && k < a->numel; k++) ok = ((uint16_t *)c->data)[k] == f32_to_bf16(((float *)a->data)[k]);
        CHECK(ok, "bf16 values are f32_to_bf16 of the file's");
        sd_model_free(&b);
    }
    free(lerr);

    // A view made writable (to train conv_in in full) gets its own copy.
    Tensor *ci = params_get(m.unet, "conv_in.weight");
    float first = ((float *)ci->data)[0];
    sd_tensor_make_owned(ci);
    CHECK(ci->owns_data, "make_owned");
    ((float *)ci->data)[0] += 1.0f;
    CHECK(((float *)ci->data)[0] == first + 1.0f, "owned copy is writable");
    sd_table_free(&ut);
    sd_table_free(&vt);
    sd_model_free(&m);
    printf("ok %s fixture\n", preset);
}

static void test_broken_files(void) {
    char src[1024], dst[1024], *lerr;
    SdModel m;
    // One tensor removed, one more removed, one reshaped: every name in the message.
    const char *dir = scratch_model("broken", "sd2");
    snprintf(src, sizeof src, "%s/model/unet/diffusion_pytorch_model.safetensors", fixture("sd2"));
    snprintf(dst, sizeof dst, "%s/unet/diffusion_pytorch_model.safetensors", dir);
    rewrite(src, dst, DT_F32, "mid_block.attentions.0.transformer_blocks.0.attn2.to_k.weight", "conv_out.bias",
            "up_blocks.1.resnets.0.conv1.weight", 12, false);
    snprintf(src, sizeof src, "%s/model/vae/diffusion_pytorch_model.safetensors", fixture("sd2"));
    snprintf(dst, sizeof dst, "%s/vae/diffusion_pytorch_model.safetensors", dir);
    rewrite(src, dst, DT_F32, NULL, NULL, NULL, 0, false);
    CHECK(sd_model_load_diffusers(dir, DT_F32, &m, &lerr) == -1, "broken unet must fail");
    if (lerr) {
        printf("expected error:\n%s\n", lerr);
        CHECK(strstr(lerr, "unet/diffusion_pytorch_model.safetensors: weights do not match"), "names file");
        CHECK(strstr(lerr, "2 of ") && strstr(lerr, "expected tensors missing"), "counts missing");
        CHECK(strstr(lerr, "\n    mid_block.attentions.0.transformer_blocks.0.attn2.to_k.weight"), "missing 1 listed");
        CHECK(strstr(lerr, "\n    conv_out.bias"), "missing 2 listed");
        CHECK(strstr(lerr, "up_blocks.1.resnets.0.conv1.weight: file has [12], config expects [8, 24, 3, 3]"),
              "shape mismatch names tensor and both shapes");
        CHECK(m.unet == NULL && m.vae == NULL && !m.files[0] && !m.files[1], "failed load leaves nothing");
    }
    free(lerr);

    // fp16 variant only, extra tensor in the VAE, deprecated VAE attention names.
    dir = scratch_model("variant", "sd1");
    snprintf(src, sizeof src, "%s/model/unet/diffusion_pytorch_model.safetensors", fixture("sd1"));
    snprintf(dst, sizeof dst, "%s/unet/diffusion_pytorch_model.fp16.safetensors", dir);
    rewrite(src, dst, DT_F16, NULL, NULL, NULL, 0, false);
    snprintf(src, sizeof src, "%s/model/vae/diffusion_pytorch_model.safetensors", fixture("sd1"));
    snprintf(dst, sizeof dst, "%s/vae/diffusion_pytorch_model.safetensors", dir);
    rewrite(src, dst, DT_F32, NULL, NULL, NULL, 0, true);
    CHECK(sd_model_load_diffusers(dir, DT_F16, &m, &lerr) == 0, "variant dir: %s", lerr ? lerr : "");
    if (!lerr) {
        CHECK(m.unet_report.n_zero_copy == params_count(m.unet), "fp16 variant, f16 load: zero copy");
        CHECK(m.vae_report.n_converted == params_count(m.vae), "f32 vae converted to f16");
        CHECK(params_get(m.vae, "encoder.mid_block.attentions.0.to_out.0.weight") != NULL, "proj_attn -> to_out.0");
        sd_model_free(&m);
    }
    free(lerr);

    // A .bin that is neither a PyTorch checkpoint nor safetensors: refused naming the file.
    dir = scratch_model("bin", "sd1");
    snprintf(dst, sizeof dst, "%s/unet/diffusion_pytorch_model.bin", dir);
    write_text(dst, "not a pickle");
    snprintf(dst, sizeof dst, "%s/vae/diffusion_pytorch_model.safetensors", dir);
    rewrite(src, dst, DT_F32, NULL, NULL, NULL, 0, false);
    CHECK(sd_model_load_diffusers(dir, DT_F32, &m, &lerr) == -1, "a text .bin must be refused");
    if (lerr) CHECK(strstr(lerr, "unet/diffusion_pytorch_model.bin: ") && strstr(lerr, "not a safetensors file"), "bin: %s", lerr);
    free(lerr);

    // Single file against the other preset's config: LDM names listed as missing, with diffusers names.
    snprintf(src, sizeof src, "%s/ldm.safetensors", fixture("sd2"));
    snprintf(dst, sizeof dst, "%s/model", fixture("sd1"));
    CHECK(sd_model_load_single_file(src, dst, DT_F32, &m, &lerr) == -1, "sd2 weights with sd1 config must fail");
    if (lerr) CHECK(strstr(lerr, "model.diffusion_model.input_blocks.2.0.in_layers.0.weight "
                                 "(down_blocks.0.resnets.1.norm1.weight)"), "ldm missing name: %.300s", lerr);
    free(lerr);
    CHECK(sd_model_load_single_file("/x/model.ckpt", dst, DT_F32, &m, &lerr) == -1 && strstr(lerr, "/x/model.ckpt: cannot open"),
          "a missing .ckpt is named");
    free(lerr);
}

static void expect_config_error(const char *what, const char *from, const char *to, const char *frag) {
    const char *dir = scratch_model("cfg", "sd2");
    char path[1024], err[SD_CONFIG_ERR_LEN] = "";
    snprintf(path, sizeof path, "%s/unet/config.json", dir);
    char *text = read_text(path), *at = strstr(text, from);
    CHECK(at != NULL, "%s: fixture config lacks %s", what, from);
    if (!at) return;
    char *edited = malloc(strlen(text) + strlen(to) + 1);
    sprintf(edited, "%.*s%s%s", (int)(at - text), text, to, at + strlen(from));
    write_text(path, edited);
    SdUNetConfig u;
    CHECK(sd_unet_config_load(path, &u, err) == -1, "%s must be rejected", what);
    CHECK(strstr(err, path) && strstr(err, frag), "%s: message '%s' lacks '%s'", what, err, frag);
    printf("ok config %s -> %s\n", what, err);
    free(text);
    free(edited);
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/dod_test_sd_XXXXXX");
    if (!mkdtemp(tmpdir)) dod_fatal("test_sd_weights", "cannot create a temp dir");
    test_fixture("sd2");
    test_fixture("sd1");
    test_broken_files();
    expect_config_error("class_embed_type", "\"class_embed_type\": null", "\"class_embed_type\": \"timestep\"",
                        "class_embed_type: \"timestep\" is not supported");
    expect_config_error("dual_cross_attention", "\"dual_cross_attention\": false", "\"dual_cross_attention\": true",
                        "dual_cross_attention: true is not supported");
    expect_config_error("block type", "\"CrossAttnDownBlock2D\"", "\"SimpleCrossAttnDownBlock2D\"",
                        "down_block_types: entry 0 (SimpleCrossAttnDownBlock2D) is not supported");
    expect_config_error("heads", "\"attention_head_dim\": [\n    1,", "\"attention_head_dim\": [\n    3,",
                        "attention_head_dim: level 0: 3 heads do not divide 8 channels");
    expect_config_error("list length", "\"attention_head_dim\": [\n    1,", "\"attention_head_dim\": [\n    1, 1,",
                        "attention_head_dim: has 3 entries but block_out_channels has 2");
    expect_config_error("bad json", "\"act_fn\"", "act_fn", "not a JSON object");
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "warning: could not remove %s\n", tmpdir);
    return check_summary();
}
