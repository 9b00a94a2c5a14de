// dod-train configuration: the shipped configs, every error class with its FILE:LINE: [section] key
// prefix, overrides, the resolved text round trip and the resume comparison; the model's keys read
// alone from a training configuration (layers/config_model.h, what dod-eval run does).
#include "tests/check.h"
#include "tests/data_test_util.h"

#ifdef DOD_HAVE_INIPARSER
#include "layers/config_model.h"
#include "train/config.h"

static char scratch[256];

// Writes text to scratch/name and returns the path (static buffer per call site is enough here).
static const char *write_ini(const char *name, const char *text) {
    static char path[4][512];
    static int slot = 0;
    char *p = path[slot++ % 4];
    snprintf(p, 512, "%s/%s", scratch, name);
    FILE *f = fopen(p, "w");
    fputs(text, f);
    fclose(f);
    return p;
}

static const char *MINIMAL = "[model]\nkind = toy\n[data]\ntrain = t.h5\ntasks = dehaze:3, derain:2\n[train]\nrun_dir = runs/x\n";

// Loads text (defaults first); returns the load status, err filled.
static int load_text(const char *name, const char *text, TrainConfig *c, char *err, size_t len) {
    config_defaults(c);
    return config_load_file(c, write_ini(name, text), err, len);
}

static void test_shipped_configs(void) {
    // the first four reproduce the public defaults; toy.ini and the embedded default (the demo's two
    // stages) only have to load and validate
    const char *names[] = {"aio3.ini", "aio5.ini", "aio3_stage2.ini", "aio5_stage2.ini",
                           "toy.ini",  "tiny.ini", "tiny_stage2.ini"};
    for (int i = 0; i < 7; i++) {
        char path[1024], err[CFG_ERR_LEN];
        snprintf(path, sizeof path, "%s/configs/%s", DOD_SOURCE_DIR, names[i]);
        TrainConfig c;
        config_defaults(&c);
        int rc = config_load_file(&c, path, err, sizeof err);
        CHECK(rc == 0, "%s: %s", names[i], err);
        CHECK(config_validate(&c, err, sizeof err) == 0, "%s: %s", names[i], err);
        if (i >= 4) continue;
        // the public defaults (dod-spec.md, Training)
        CHECK(c.model.kind == MODEL_DOD && c.lr == 5e-5 && c.beta1 == 0.9 && c.beta2 == 0.999, "%s optim", names[i]);
        CHECK(c.weight_decay == 1e-2 && c.eps == 1e-8 && c.clip_norm == 1.0 && c.model.seed == 123, "%s", names[i]);
        CHECK(c.steps == 100000 && c.crop == 256 && c.flips && c.schedule == CFG_SCHEDULE_CONSTANT, "%s", names[i]);
        // stage 1: 2 MSE + 5 LPIPS with both weight files named; stage 2: MSE + 0.1 (1 - SSIM), no LPIPS
        bool stage1 = c.model.stage == 1;
        CHECK(c.model.lora_rank == 8 && c.loss_lpips == (stage1 ? 5 : 0) && c.loss_mse == (stage1 ? 2 : 1), "%s losses",
              names[i]);
        CHECK(!stage1 || (strstr(c.lpips_vgg, "vgg16-397923af.pth") && c.lpips_lin[0]), "%s LPIPS files", names[i]);
        CHECK(strstr(c.model.base, "stable-diffusion-2-1-base") != NULL, "%s base %s", names[i], c.model.base);
    }
    TrainConfig c;
    char path[1024], err[CFG_ERR_LEN];
    snprintf(path, sizeof path, "%s/configs/aio3.ini", DOD_SOURCE_DIR);
    config_defaults(&c);
    config_load_file(&c, path, err, sizeof err);
    CHECK(!strcmp(c.tasks, "dehaze:3,derain:2,denoise:2"), "aio3 tasks %s", c.tasks);
    CHECK(c.model.stage == 1 && c.loss_mse == 2, "aio3 stage 1 loss");
    snprintf(path, sizeof path, "%s/configs/aio3_stage2.ini", DOD_SOURCE_DIR);
    config_defaults(&c);
    config_load_file(&c, path, err, sizeof err);
    CHECK(c.model.stage == 2 && c.loss_mse == 1 && c.loss_ssim == 0.1 && !strcmp(c.tasks, "dehaze:1,derain:1,denoise:1"), "aio3 stage 2");
    CHECK(!strcmp(c.model.init_from, "runs/aio3_stage1"), "stage 2 init_from %s", c.model.init_from);
}

static void test_values(void) {
    TrainConfig c;
    char err[CFG_ERR_LEN];
    int rc = load_text("ok.ini",
                       "; comment\n# another\n[MODEL]\nKind = toy   ; inline\ntoy_width = 4\n[optim]\nlr = 2.5e-4\n"
                       "schedule = cosine\n[data]\ntrain = \"a;b.h5\"\ntasks = dehaze:3, derain:2\nflips = no\n"
                       "[train]\nrun_dir = runs/x\n",
                       &c, err, sizeof err);
    CHECK(rc == 0, "ok.ini: %s", err);
    CHECK(c.model.kind == MODEL_TOY && c.model.toy_width == 4, "kind/width");
    CHECK(c.lr == 2.5e-4 && c.schedule == CFG_SCHEDULE_COSINE && !c.flips, "values");
    CHECK(!strcmp(c.train_file, "a;b.h5"), "quoted value: %s", c.train_file);
    CHECK(c.steps == 100000 && c.ckpt_keep_last == 3, "defaults kept");
    CHECK(config_validate(&c, err, sizeof err) == 0, "%s", err);
}

// Each bad file must fail with the exact prefix given.
static void expect_load_error(const char *name, const char *text, const char *want) {
    TrainConfig c;
    char err[CFG_ERR_LEN];
    int rc = load_text(name, text, &c, err, sizeof err);
    char prefix[600];
    snprintf(prefix, sizeof prefix, "%s/%s", scratch, want);
    CHECK(rc == -1 && strstr(err, prefix), "%s: want '%s', got '%s'", name, prefix, err);
}

static void test_errors(void) {
    expect_load_error("unknown_key.ini", "[optim]\nlr = 1e-4\n\nlrr = 1\n", "unknown_key.ini:4: [optim] lrr: unknown key");
    expect_load_error("unknown_sec.ini", "[model]\nkind = toy\n[optimizer]\nlr = 1\n", "unknown_sec.ini:3: [optimizer]: unknown section");
    expect_load_error("bad_int.ini", "[data]\ncrop = 25.5\n", "bad_int.ini:2: [data] crop: expected an integer, got '25.5'");
    expect_load_error("bad_float.ini", "[optim]\n\nlr = fast\n", "bad_float.ini:3: [optim] lr: expected a number");
    expect_load_error("range.ini", "[optim]\ngrad_accum = 0\n", "range.ini:2: [optim] grad_accum: 0 is out of range");
    expect_load_error("bool.ini", "[data]\nflips = maybe\n", "bool.ini:2: [data] flips: expected true or false");
    expect_load_error("enum.ini", "[model]\nfrozen_dtype = f16\n", "enum.ini:2: [model] frozen_dtype: 'f16' is not one of f32|bf16");
    expect_load_error("tasks.ini", "[data]\ntasks = dehaze:3,derain\n", "tasks.ini:2: [data] tasks: task 'derain' has no count");
    expect_load_error("tasks2.ini", "[data]\ntasks = dehaze:3,dehaze:1\n", "tasks2.ini:2: [data] tasks: task dehaze listed twice");
    {   // loads, but does not validate: an LPIPS weight needs both weight files
        TrainConfig c;
        char err[CFG_ERR_LEN], want[600];
        CHECK(load_text("lpips.ini", "[loss]\nlpips = 5\nlpips_vgg = vgg16.pth\n", &c, err, sizeof err) == 0, "%s", err);
        snprintf(want, sizeof want, "%s/lpips.ini:2: [loss] lpips: a non-zero LPIPS weight needs [loss] lpips_vgg", scratch);
        CHECK(config_validate(&c, err, sizeof err) == -1 && strstr(err, want) && strstr(err, "lpips_lin"), "lpips.ini: %s", err);
    }
    expect_load_error("dup.ini", "[optim]\nlr = 1\nlr = 2\n", "dup.ini:3: [optim] lr: given twice (first on line 2)");
    expect_load_error("outside.ini", "lr = 1\n[optim]\n", "outside.ini:1: lr: key outside any [section]");
    expect_load_error("syntax.ini", "[optim]\nlr 1e-4\n", "syntax.ini:2: syntax error");
    expect_load_error("cont.ini", "[optim]\nlr = 1e-4 \\\n", "cont.ini:2: continuation lines");
    TrainConfig c;
    char err[CFG_ERR_LEN];
    config_defaults(&c);
    CHECK(config_load_file(&c, "/nonexistent/x.ini", err, sizeof err) == -1 && strstr(err, "/nonexistent/x.ini: cannot open"),
          "missing file: %s", err);
    // several problems are all reported
    load_text("many.ini", "[optim]\nlr = x\nbeta1 = y\n", &c, err, sizeof err);
    CHECK(strstr(err, "many.ini:2:") && strstr(err, "many.ini:3:"), "all errors listed: %s", err);
}

static void test_validate(void) {
    TrainConfig c;
    char err[CFG_ERR_LEN];
    load_text("missing.ini", "[model]\nkind = toy\n\n[data]\ncrop = 64\n", &c, err, sizeof err);
    char want[600];
    snprintf(want, sizeof want, "%s/missing.ini:4: [data] train: required key is missing", scratch);
    CHECK(config_validate(&c, err, sizeof err) == -1 && strstr(err, want), "missing train: %s", err);
    snprintf(want, sizeof want, "%s/missing.ini: [train] run_dir: required key is missing", scratch);
    CHECK(strstr(err, want), "missing run_dir (no section): %s", err);
    load_text("dod.ini", "[data]\ntrain = t.h5\ntasks = a:1\n[train]\nrun_dir = r\n", &c, err, sizeof err);
    CHECK(config_validate(&c, err, sizeof err) == -1 && strstr(err, "[model] base: required for kind = dod"), "dod base: %s", err);
    load_text("stage2.ini", MINIMAL, &c, err, sizeof err);
    CHECK(config_set(&c, "stage.stage=2", err, sizeof err) == 0, "%s", err);
    CHECK(config_validate(&c, err, sizeof err) == -1 && strstr(err, "[stage] init_from: required for stage 2"), "stage 2: %s", err);
    CHECK(config_set(&c, "stage.init_from=runs/s1", err, sizeof err) == 0, "%s", err);
    CHECK(config_validate(&c, err, sizeof err) == 0, "stage 2 ok: %s", err);
    load_text("zero.ini", MINIMAL, &c, err, sizeof err);
    config_set(&c, "loss.mse=0", err, sizeof err);
    CHECK(config_validate(&c, err, sizeof err) == -1 && strstr(err, "--set loss.mse=0: [loss] mse: every loss weight is 0"),
          "zero losses: %s", err);
    load_text("mixed.ini", MINIMAL, &c, err, sizeof err);
    CHECK(config_set(&c, "model.precision=mixed", err, sizeof err) == 0 && c.model.precision == MODEL_PRECISION_MIXED, "%s", err);
    CHECK(config_validate(&c, err, sizeof err) == -1 &&
              strstr(err, "[model] precision: mixed precision is a CUDA mode: set [model] device = cuda"),
          "mixed on the CPU: %s", err);
    CHECK(config_set(&c, "model.device=cuda", err, sizeof err) == 0, "%s", err);
    CHECK(config_validate(&c, err, sizeof err) == 0, "mixed on cuda: %s", err);
    // [model] activations: auto follows the precision; f32 / bf16 on any device.
    CHECK(model_activation_dtype(&c.model) == DT_BF16, "auto under mixed precision: %s",
          dtype_name(model_activation_dtype(&c.model)));
    CHECK(config_set(&c, "model.activations=f32", err, sizeof err) == 0, "%s", err);
    CHECK(model_activation_dtype(&c.model) == DT_F32, "activations = f32 under mixed: %s",
          dtype_name(model_activation_dtype(&c.model)));
    load_text("act.ini", MINIMAL, &c, err, sizeof err);
    CHECK(c.model.activations == MODEL_ACTIVATIONS_AUTO && model_activation_dtype(&c.model) == DT_F32, "default: f32 (%s)",
          dtype_name(model_activation_dtype(&c.model)));
    CHECK(config_set(&c, "model.activations=bf16", err, sizeof err) == 0 && config_validate(&c, err, sizeof err) == 0,
          "bf16 on the CPU: %s", err);
    CHECK(model_activation_dtype(&c.model) == DT_BF16, "activations = bf16: %s",
          dtype_name(model_activation_dtype(&c.model)));
    CHECK(config_set(&c, "model.activations=f16", err, sizeof err) == -1 && strstr(err, "[model] activations") &&
              strstr(err, "auto|f32|bf16"),
          "bad activations: %s", err);
}

static void test_overrides(void) {
    TrainConfig c;
    char err[CFG_ERR_LEN];
    load_text("min.ini", MINIMAL, &c, err, sizeof err);
    CHECK(config_set(&c, "optim.lr=1e-3", err, sizeof err) == 0 && c.lr == 1e-3, "set lr: %s", err);
    CHECK(config_set(&c, "Train.Steps = 42", err, sizeof err) == 0 && c.steps == 42, "set steps (case, spaces): %s", err);
    CHECK(config_set(&c, "optim.lr=abc", err, sizeof err) == -1 && strstr(err, "--set optim.lr=abc: [optim] lr: expected a number"),
          "bad override: %s", err);
    CHECK(config_set(&c, "optim.rate=1", err, sizeof err) == -1 && strstr(err, "--set optim.rate=1: [optim] rate: unknown key"),
          "unknown override: %s", err);
    CHECK(config_set(&c, "nosection=1", err, sizeof err) == -1 && strstr(err, "expected section.key=value"), "%s", err);
    CHECK(config_set(&c, "foo.bar=1", err, sizeof err) == -1 && strstr(err, "[foo]: unknown section"), "%s", err);
    CHECK(c.lr == 1e-3, "failed override leaves the value");
}

static void test_round_trip_and_compare(void) {
    TrainConfig c, d;
    char err[CFG_ERR_LEN];
    load_text("rt.ini", MINIMAL, &c, err, sizeof err);
    config_set(&c, "optim.lr=3.3e-5", err, sizeof err);
    config_set(&c, "optim.beta2=0.99", err, sizeof err);
    char *text = config_to_text(&c);
    int rc = load_text("rt_resolved.ini", text, &d, err, sizeof err);
    CHECK(rc == 0, "resolved text reloads: %s", err);
    char *text2 = config_to_text(&d);
    CHECK(!strcmp(text, text2), "round trip is exact");
    CHECK(d.lr == c.lr && d.beta2 == c.beta2 && !strcmp(d.tasks, c.tasks), "round trip values");
    CHECK(config_compare_text(&d, text, err, sizeof err) == 0, "same config compares equal: %s", err);
    config_set(&d, "train.steps=7", err, sizeof err);
    config_set(&d, "log.every=3", err, sizeof err);
    CHECK(config_compare_text(&d, text, err, sizeof err) == 0, "steps/log may change: %s", err);
    config_set(&d, "optim.lr=1e-4", err, sizeof err);
    config_set(&d, "data.crop=64", err, sizeof err);
    CHECK(config_compare_text(&d, text, err, sizeof err) == -1 && strstr(err, "[optim] lr = 0.0001 (checkpoint: 3.3e-05)") &&
              strstr(err, "[data] crop = 64 (checkpoint: 256)"),
          "differences listed: %s", err);
    // A checkpoint's text written before a key existed (here: without [modulation] adm_norm_groups and
    // [optim] eps) resumes while those keys are at their defaults, and names them otherwise.
    TrainConfig e;
    config_defaults(&e);
    char *full = config_to_text(&e);
    char *old = dod_malloc(strlen(full) + 1, "old text"), *o = old;
    for (const char *p = full; *p;) {
        const char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p + 1) : strlen(p);
        if (strncmp(p, "adm_norm_groups =", 17) && strncmp(p, "eps =", 5)) memcpy(o, p, n), o += n;
        p += n;
    }
    *o = 0;
    CHECK(config_compare_text(&e, old, err, sizeof err) == 0, "keys absent at their defaults resume: %s", err);
    config_set(&e, "modulation.adm_norm_groups=8", err, sizeof err);
    config_set(&e, "optim.eps=1e-6", err, sizeof err);
    CHECK(config_compare_text(&e, old, err, sizeof err) == -1 &&
              strstr(err, "[modulation] adm_norm_groups = 8: absent from the checkpoint's config") &&
              strstr(err, "only its default 32 resumes") && strstr(err, "[optim] eps = 1e-06: absent") &&
              strstr(err, "default 1e-8"),
          "absent keys off their defaults listed: %s", err);
    free(full);
    free(old);
    free(text);
    free(text2);
}

static void test_reference(void) {
    char path[512];
    snprintf(path, sizeof path, "%s/ref.md", scratch);
    FILE *f = fopen(path, "w");
    config_write_reference(f);
    fclose(f);
    f = fopen(path, "r");
    char buf[1 << 15];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = 0;
    fclose(f);
    CHECK(strstr(buf, "## [optim]") && strstr(buf, "| `lr` | float | `5e-5` |") && strstr(buf, "**required**"),
          "reference has sections, keys, defaults");
}

// The model's schema alone: a whole training configuration gives the ModelOptions dod-train reads from
// it (the other sections and [checkpoint]'s other keys skipped); its own sections stay strict, with
// line numbers; overrides of other sections are skipped, of its own keys applied and checked.
static void test_model_keys(void) {
    char path[1024], err[CFG_ERR_LEN];
    TrainConfig c;
    ModelOptions mo;
    CfgSource src;
    snprintf(path, sizeof path, "%s/configs/aio3_stage2.ini", DOD_SOURCE_DIR);
    config_defaults(&c);
    CHECK(config_load_file(&c, path, err, sizeof err) == 0 && config_set(&c, "checkpoint.dir=ck", err, sizeof err) == 0,
          "%s", err);
    model_config_defaults(&mo, &src);
    CHECK(model_config_load(&mo, &src, path, err, sizeof err) == 0, "model keys of %s: %s", path, err);
    CHECK(model_config_set(&mo, &src, "checkpoint.dir=ck", err, sizeof err) == 0 &&
              model_config_set(&mo, &src, "optim.lr=5", err, sizeof err) == 0 &&
              model_config_set(&mo, &src, "checkpoint.every=7", err, sizeof err) == 0,
          "overrides: %s", err);
    mo.seed = c.model.seed;   // [train] keys: not the model schema's
    mo.recompute = c.model.recompute;
    CHECK(!memcmp(&mo, &c.model, sizeof mo), "the model's keys read alone equal dod-train's");
    err[0] = 0;
    CHECK(model_config_check(&mo, &src, err, sizeof err) == 0, "checks: %s", err);
    CHECK(model_config_set(&mo, &src, "lora.rnk=4", err, sizeof err) == -1 && strstr(err, "[lora] rnk: unknown key"),
          "unknown model key: %s", err);
    CHECK(model_config_set(&mo, &src, "stage.stage=3", err, sizeof err) == -1 && strstr(err, "3 is out of range"),
          "bad model value: %s", err);
    const char *bad = write_ini("model_bad.ini", "[data]\nwhatever = 1\n[model]\nkind = toy\nwidth = 3\n[lora]\nrank = x\n");
    model_config_defaults(&mo, &src);
    CHECK(model_config_load(&mo, &src, bad, err, sizeof err) == -1 && strstr(err, "model_bad.ini:5: [model] width: unknown key") &&
              strstr(err, "model_bad.ini:7: [lora] rank: expected an integer") && !strstr(err, "whatever"),
          "own sections strict, others skipped: %s", err);
    const char *s2 = write_ini("model_s2.ini", "[model]\nkind = dod\n[stage]\nstage = 2\n");
    model_config_defaults(&mo, &src);
    err[0] = 0;
    CHECK(model_config_load(&mo, &src, s2, err, sizeof err) == 0 && model_config_check(&mo, &src, err, sizeof err) == 2 &&
              strstr(err, "model_s2.ini:1: [model] base: required for kind = dod") &&
              strstr(err, "model_s2.ini:3: [stage] init_from: required for stage 2"),
          "cross-key checks name the section lines: %s", err);
}

int main(void) {
    data_scratch_dir("cfgtest", scratch, sizeof scratch);
    test_shipped_configs();
    test_values();
    test_errors();
    test_validate();
    test_overrides();
    test_round_trip_and_compare();
    test_reference();
    test_model_keys();
    data_rm_rf(scratch);
    return check_summary();
}
#else
int main(void) {
    printf("test_config: skipped (built without iniparser)\n");
    return check_summary();
}
#endif
