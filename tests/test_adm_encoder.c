// The guided-diffusion (ADM) degradation extractor (layers/adm_encoder.c) against guided-diffusion's own
// UNetModel (tests/fixtures/adm, made by scripts/make_adm_fixture.py from a checkout of
// openai/guided-diffusion): a small random-weight model of the released architecture saved with
// torch.save, read here by the safe PyTorch reader.
//  - pooled middle-block features at t = 0 on a 2 x 64 x 64 batch and a 45 x 37 image, and at t = 417:
//    1e-4 relative to max |ref|;
//  - the unpooled middle output of case 0, the same bound;
//  - only the encoder's tensors are read (output_blocks and out are in the file and ignored), the
//    architecture found (levels, widths, attention) is the fixture's, and the random-tensor table of
//    the same hyperparameters has exactly the file's encoder tensors (names, shapes, order);
//  - bf16 storage stays within 2e-2 of the f32 features;
//  - the FLOP counter (autograd/profile.h) counts for a forward exactly what PyTorch's products count
//    for guided-diffusion's (meta.json "flops"), less the timestep embedding's products, which the
//    encoder folds into its norms at load, plus the one-token attentions' P V products, which
//    torch.einsum runs as a multiply that PyTorch's counter does not see;
//  - no tape node is recorded for an input that requires grad, and the arena holds only the output;
//  - errors: a missing tensor, a misshapen one, the wrong num_res_blocks, too small an image, a
//    missing file.
#include <cjson/cJSON.h>

#include "tests/check.h"

#include "autograd/profile.h"
#include "autograd/tape.h"
#include "layers/adm_encoder.h"
#include "layers/safetensors.h"

#ifndef DOD_SOURCE_DIR
#define DOD_SOURCE_DIR "."
#endif
#define ADM_DIR DOD_SOURCE_DIR "/tests/fixtures/adm/"
#define ADM_FILE ADM_DIR "adm_tiny.pt"
#define REF_FILE ADM_DIR "adm_ref.safetensors"
#define META_FILE ADM_DIR "meta.json"
#define N_ENCODER_TENSORS 240   // meta.json n_encoder_tensors
#define TOL 1e-4

// The fixture's flags (scripts/make_adm_fixture.py): 16 channels, mult 1 1 1 1 1 2, attention on
// levels 3-5, 8 norm groups, 8 channels a head.
static const int MULT[6] = {1, 1, 1, 1, 1, 2};
static const bool ATTN[6] = {false, false, false, true, true, true};

static AdmEncoderConfig fixture_config(float t) {
    AdmEncoderConfig c = adm_encoder_default_config();
    c.head_channels = 8;
    c.groups = 8;
    c.timestep = t;
    return c;
}

static Tensor *ref_tensor(const char *name) {
    char err[ST_ERR_LEN];
    ParamStore *ps = safetensors_load_store(REF_FILE, DT_F32, err);
    if (!ps) dod_fatal("test_adm_encoder", "%s", err);
    Tensor *src = params_require(ps, name, REF_FILE);
    Tensor *t = tensor_new_persistent(name, src->ndim, src->shape, DT_F32);
    memcpy(t->data, src->data, sizeof(float) * (size_t)t->numel);
    params_free(ps);
    return t;
}

static AdmEncoder *load_fixture(float t, DType dtype) {
    char err[1024];
    AdmEncoderConfig c = fixture_config(t);
    AdmEncoder *e = adm_encoder_load(ADM_FILE, &c, dtype, err, sizeof err);
    if (!e) dod_fatal("test_adm_encoder", "%s", err);
    return e;
}

static void compare(const char *what, Tensor *got, Tensor *ref, double tol) {
    CHECK(tensor_same_shape(got, ref), "%s: shape %s, reference %s", what, shape_str(got), shape_str(ref));
    if (!tensor_same_shape(got, ref)) return;
    double scale, diff = max_abs_diff(tensor_f32(got), tensor_f32(ref), (long)ref->numel, &scale);
    CHECK(diff <= tol * scale, "%s: max |diff| %.3g, max |ref| %.3g (tol %.1g relative)", what, diff, scale, tol);
    printf("%s: max |diff| %.3g = %.2g of max |ref| %.3g\n", what, diff, diff / scale, scale);
}

static void test_architecture(void) {
    AdmEncoder *e = load_fixture(0, DT_F32);
    CHECK(e->base_channels == 16 && e->n_levels == 6 && e->n_blocks == 18 && e->out_channels == 32,
          "C0 %d, %d levels, %d blocks, width %d", e->base_channels, e->n_levels, e->n_blocks, e->out_channels);
    int down = 0, attn = 0;
    for (int i = 1; i < e->n_blocks; i++) {
        down += e->block[i].down;
        attn += e->block[i].attention;
        CHECK(e->block[i].attention == (ATTN[e->block[i].level] && !e->block[i].down),
              "block %d (level %d): attention %d", i, e->block[i].level, e->block[i].attention);
    }
    CHECK(down == 5 && attn == 6, "%d downsampling blocks, %d with attention", down, attn);
    CHECK(e->block[16].cin == 16 && e->block[16].cout == 32, "level 5 entry %d -> %d", e->block[16].cin, e->block[16].cout);
    // Nothing of the decoder half, no time_embed / emb_layers / qkv / out_layers.0 kept (folded or split).
    for (int i = 0; i < params_count(e->ps); i++) {
        const char *n = params_at(e->ps, i)->name;
        CHECK(!strncmp(n, "input_blocks.", 13) || !strncmp(n, "middle_block.", 13), "kept tensor %s", n);
        CHECK(!strstr(n, "emb_layers") && !strstr(n, "qkv") && !strstr(n, "out_layers.0.weight"), "kept %s", n);
    }
    adm_encoder_free(e);

    // The table of adm_encoder_random_tensors is the file's encoder, name by name and shape by shape.
    char err[ST_ERR_LEN];
    SafeTensors *st;
    CHECK(tensor_file_open(ADM_FILE, &st, err) == ST_OK, "%s", err);
    AdmEncoderConfig c = fixture_config(0);
    ParamStore *table = adm_encoder_random_tensors(&c, 16, MULT, 6, ATTN, 7);
    int k = 0, skipped = 0;
    for (int i = 0; i < safetensors_count(st); i++) {
        const StEntry *en = safetensors_entry(st, i);
        if (strncmp(en->name, "time_embed.", 11) && strncmp(en->name, "input_blocks.", 13) &&
            strncmp(en->name, "middle_block.", 13)) {
            skipped++;
            continue;
        }
        Tensor *t = k < params_count(table) ? params_at(table, k) : NULL;
        bool same = t && !strcmp(t->name, en->name) && t->ndim == en->ndim;
        for (int d = 0; same && d < en->ndim; d++) same = t->shape[d] == en->shape[d];
        CHECK(same, "file tensor %d %s vs table %s", i, en->name, t ? t->name : "(end)");
        k++;
    }
    CHECK(k == N_ENCODER_TENSORS && params_count(table) == k && skipped == 6,
          "%d encoder tensors in the file, %d in the table, %d others", k, params_count(table), skipped);
    safetensors_close(st);
    // ...and builds: the random model runs.
    AdmEncoder *r = adm_encoder_from_tensors(table, &c, DT_F32, "random", err, sizeof err);
    CHECK(r != NULL, "%s", err);
    if (r) {
        Tensor *x = tensor_new4(1, 3, 32, 32);
        tensor_rand_uniform(x, 3, -1, 1);
        Tensor *d = adm_encoder_features(r, x);
        bool finite = d->shape[1] == 32;
        for (int64_t i = 0; i < d->numel; i++) finite = finite && isfinite(tensor_f32(d)[i]);
        CHECK(finite, "random model features %s finite", shape_str(d));
        adm_encoder_free(r);
    }
    ag_step_reset();
}

static void test_values(void) {
    AdmEncoder *e = load_fixture(0, DT_F32);
    Tensor *x0 = ref_tensor("x0"), *x1 = ref_tensor("x1");
    compare("t = 0, 2 x 64 x 64: middle output", adm_encoder_middle(e, x0), ref_tensor("mid0"), TOL);
    compare("t = 0, 2 x 64 x 64: pooled features", adm_encoder_features(e, x0), ref_tensor("feat0"), TOL);
    compare("t = 0, 45 x 37: pooled features", adm_encoder_features(e, x1), ref_tensor("feat1"), TOL);
    ag_step_reset();

    // bf16 storage of the conv and linear weights: close to f32, not equal.
    AdmEncoder *h = load_fixture(0, DT_BF16);
    Tensor *f32 = adm_encoder_features(e, x0), *bf = adm_encoder_features(h, x0);
    double scale, diff = max_abs_diff(tensor_f32(bf), tensor_f32(f32), (long)f32->numel, &scale);
    CHECK(diff > 0 && diff <= 2e-2 * scale, "bf16 weights: max |diff| %.3g of %.3g", diff, scale);
    printf("bf16 weights vs f32: max |diff| %.3g = %.2g of max |ref|\n", diff, diff / scale);
    adm_encoder_free(h);
    ag_step_reset();

    // No gradient and no kept activations: an input that requires grad records nothing, and what the
    // arena holds after the call is the [N, C] output (plus the one-line pool index) only.
    Tensor *xg = tensor_new_persistent("x", 4, x0->shape, DT_F32);
    memcpy(xg->data, x0->data, sizeof(float) * (size_t)x0->numel);
    xg->requires_grad = true;
    size_t before = arena_used();
    int tape = ag_tape_size();
    Tensor *d = adm_encoder_features(e, xg);
    CHECK(ag_tape_size() == tape && !d->requires_grad, "tape %d -> %d, requires_grad %d", tape, ag_tape_size(),
          d->requires_grad);
    size_t held = arena_used() - before;
    CHECK(held <= 4096, "arena holds %zu bytes after the forward", held);
    tensor_free(xg);
    adm_encoder_free(e);
    ag_step_reset();

    AdmEncoder *t417 = load_fixture(417, DT_F32);
    compare("t = 417, 2 x 64 x 64: pooled features", adm_encoder_features(t417, x0), ref_tensor("feat2"), TOL);
    adm_encoder_free(t417);
    ag_step_reset();
}

// meta.json's "flops" entry of case k: PyTorch's forward FLOPs less its timestep-embedding products,
// plus the products its einsum ran as an elementwise multiply.
static double torch_forward_flops(int k) {
    FILE *f = fopen(META_FILE, "rb");
    if (!f) dod_fatal("test_adm_encoder", "%s: cannot open", META_FILE);
    char buf[8192];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    cJSON *root = cJSON_Parse(buf), *list = cJSON_GetObjectItem(root, "flops"), *e;
    double flops = -1;
    cJSON_ArrayForEach(e, list) {
        cJSON *c = cJSON_GetObjectItem(e, "case"), *fw = cJSON_GetObjectItem(e, "forward"),
              *te = cJSON_GetObjectItem(e, "time_embedding"), *em = cJSON_GetObjectItem(e, "einsum_multiply");
        if (cJSON_IsNumber(c) && c->valueint == k && cJSON_IsNumber(fw) && cJSON_IsNumber(te) && cJSON_IsNumber(em))
            flops = fw->valuedouble - te->valuedouble + em->valuedouble;
    }
    cJSON_Delete(root);
    if (flops < 0) dod_fatal("test_adm_encoder", "%s: no flops entry for case %d (run scripts/make_adm_fixture.py)",
                             META_FILE, k);
    return flops;
}

static void test_flops(void) {
    AdmEncoder *e = load_fixture(0, DT_F32);
    const char *names[2] = {"x0", "x1"};
    for (int k = 0; k < 2; k++) {
        Tensor *x = ref_tensor(names[k]);
        OpFlops before = op_flops_total(FLOPS_KINDS);
        adm_encoder_features(e, x);
        OpFlops d = op_flops_sub(op_flops_total(FLOPS_KINDS), before);
        double want = torch_forward_flops(k);
        CHECK(d.forward == want && d.backward == 0 && d.recomputed == 0,
              "case %d %s: forward FLOPs %.0f (backward %.0f, recomputed %.0f), expected %.0f (PyTorch's, see above)",
              k, shape_str(x), d.forward, d.backward, d.recomputed, want);
        printf("case %d %s: %.0f forward FLOPs, as PyTorch's (see above)\n", k, shape_str(x),
               d.forward);
        tensor_free(x);
        ag_step_reset();
    }
    adm_encoder_free(e);
}

// Error messages: each names the file and the tensor (or the size) at fault.
static bool load_fails(ParamStore *ps, AdmEncoderConfig c, const char *needle) {
    char err[1024] = "";
    AdmEncoder *e = adm_encoder_from_tensors(ps, &c, DT_F32, "fixture.pt", err, sizeof err);
    bool ok = e == NULL && strstr(err, needle) && strstr(err, "fixture.pt");
    if (!ok) fprintf(stderr, "expected an error naming %s, got: %s\n", needle, err);
    adm_encoder_free(e);
    return ok;
}

static ParamStore *fixture_table(void) {
    AdmEncoderConfig c = fixture_config(0);
    return adm_encoder_random_tensors(&c, 16, MULT, 6, ATTN, 11);
}

// A copy of ps without the tensor named `drop`, or with it reshaped to [1] (reshape true).
static ParamStore *edited(ParamStore *ps, const char *name, bool reshape) {
    ParamStore *out = params_new();
    for (int i = 0; i < params_count(ps); i++) {
        Tensor *t = params_at(ps, i);
        bool hit = !strcmp(t->name, name);
        if (hit && !reshape) continue;
        int64_t one = 1;
        Tensor *c = hit ? tensor_new_persistent(t->name, 1, &one, DT_F32)
                        : tensor_new_persistent(t->name, t->ndim, t->shape, DT_F32);
        if (!hit) memcpy(c->data, t->data, sizeof(float) * (size_t)t->numel);
        params_add(out, t->name, c);
    }
    params_free(ps);
    return out;
}

static void test_errors(void) {
    AdmEncoderConfig c = fixture_config(0);
    CHECK(load_fails(edited(fixture_table(), "input_blocks.13.1.qkv.bias", false), c, "input_blocks.13.1.qkv.bias"),
          "missing qkv bias");
    CHECK(load_fails(edited(fixture_table(), "middle_block.2.out_layers.3.weight", true), c,
                     "middle_block.2.out_layers.3.weight has shape [1]"), "misshapen conv");
    CHECK(load_fails(edited(fixture_table(), "time_embed.2.bias", false), c, "time_embed.2.bias"), "missing time_embed");
    AdmEncoderConfig three = c;
    three.num_res_blocks = 3;
    CHECK(load_fails(fixture_table(), three, "num_res_blocks"), "wrong num_res_blocks");
    AdmEncoderConfig heads = c;
    heads.head_channels = 12;
    CHECK(load_fails(fixture_table(), heads, "head_channels 12"), "head width");

    char err[1024] = "";
    CHECK(adm_encoder_load(ADM_DIR "no_such.pt", &c, DT_F32, err, sizeof err) == NULL && strstr(err, "no_such.pt"),
          "missing file: %s", err);

    AdmEncoder *e = load_fixture(0, DT_F32);
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {   // too small an image is fatal, naming the size
        freopen("/dev/null", "w", stderr);
        adm_encoder_features(e, tensor_new4(1, 3, 31, 64));
        _exit(0);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) != 0, "a 31 x 64 image must be refused");
    adm_encoder_free(e);
}

int main(void) {
    test_architecture();
    test_values();
    test_flops();
    test_errors();
    return check_summary();
}
