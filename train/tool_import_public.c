// dod-import-public: a model trained with the public DOD code (its stage-1 / stage-2 .pkl and
// prompt_embeds.pt) into a run dir of ours at step 0, which dod-eval evaluates, dod-train --resume
// fine-tunes and a stage-2 configuration takes as [stage] init_from. See docs/model-loading.md.
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "autograd/base.h"
#include "autograd/optim.h"
#include "layers/dod_import.h"
#include "layers/model_weights.h"
#include "layers/safetensors.h"
#include "train/checkpoint.h"
#include "train/config.h"

#define PROMPT_FILE "public_prompt_embeds.safetensors"

static void usage(FILE *f) {
    fprintf(f,
            "usage: dod-import-public --config FILE [--set section.key=value ...] --stage1 FILE.pkl\n"
            "                         [--prompt-embeds prompt_embeds.pt] --out RUN_DIR\n"
            "       dod-import-public --config STAGE2_FILE [--set ...] --stage2 FILE.pkl --out RUN_DIR\n"
            "\n"
            "  --config FILE         the training configuration of the model (configs/aio3.ini: extractor = adm,\n"
            "                        [lora] rank 8, alpha 8); its [stage] stage says which file is imported\n"
            "  --set S.K=V           override one key (repeatable)\n"
            "  --stage1 FILE         the public code's stage-1 save (state_dict_unet, state_dict_vae, the MLPs)\n"
            "  --stage2 FILE         its stage-2 save (the detail module); the stage-1 tensors come from the\n"
            "                        configuration's [stage] init_from (a run dir this tool wrote from --stage1)\n"
            "  --prompt-embeds FILE  its prompt_embeds.pt ([1, 77, D]): copied into RUN_DIR and used as\n"
            "                        [model] prompt_embedding\n"
            "  --lora-gamma one-plus|plain  the public modulated LoRA's form: (1 + gamma) A x + beta (ours, the\n"
            "                        default) or gamma A x + beta (then 1 is subtracted from the gamma half of\n"
            "                        fuse_mlp's bias; stage 1 only); docs/model-loading.md\n"
            "  --out RUN_DIR         a new run dir: config.ini and checkpoints/step_0000000.safetensors (zero\n"
            "                        optimizer moments), as dod-train leaves them\n"
            "  --version, -h/--help\n"
            "\n"
            "Then: dod-eval run --config RUN_DIR/config.ini --checkpoint RUN_DIR ...; dod-train --resume RUN_DIR\n"
            "--set train.steps=N to fine-tune; stage 2 from it: [stage] init_from = RUN_DIR.\n");
}

#ifdef DOD_HAVE_INIPARSER
// The public prompt_embeds.pt (one [1, L, D] or [L, D] tensor) as RUN_DIR/PROMPT_FILE ("prompt_embeds"
// [L, D] f32). 0, or -1 with err naming the file.
static int copy_prompt(const char *src, const char *dst, char *err, size_t errlen) {
    SafeTensors *st;
    char msg[ST_ERR_LEN];
    if (tensor_file_open(src, &st, msg) != ST_OK) {
        snprintf(err, errlen, "--prompt-embeds: %s", msg);
        return -1;
    }
    const StEntry *e = safetensors_count(st) == 1 ? safetensors_entry(st, 0) : safetensors_find(st, "prompt_embeds");
    bool ok = e && (e->ndim == 2 || (e->ndim == 3 && e->shape[0] == 1)) && e->shape[e->ndim - 1] > 0;
    Tensor *t = NULL;
    int64_t shape[2] = {ok ? e->shape[e->ndim - 2] : 0, ok ? e->shape[e->ndim - 1] : 0};   // before the close
    if (!ok) {
        snprintf(err, errlen, "%s: expected one [1, L, D] or [L, D] tensor (the public code's prompt_embeds.pt)", src);
    } else if (safetensors_tensor(st, e, DT_F32, "prompt_embeds", &t, msg) != ST_OK) {
        snprintf(err, errlen, "%s", msg);
        ok = false;
    }
    safetensors_close(st);
    if (!ok) return -1;
    Tensor *flat = tensor_wrap_persistent("prompt_embeds", 2, shape, DT_F32, t->data);
    StMetadata meta = {"source", src};
    StStatus s = safetensors_save(dst, &flat, 1, &meta, 1, msg);
    tensor_free(flat);
    tensor_free(t);
    if (s != ST_OK) snprintf(err, errlen, "%s", msg);
    return s == ST_OK ? 0 : -1;
}

// Checks of the configuration against what the public code trains. 0, or -1 with err.
static int check_public(const TrainConfig *c, const char *stage1, const char *stage2, char *err, size_t errlen) {
    char where[CFG_STR + 64];
    if (c->model.kind != MODEL_DOD) {
        config_where(c, "model", "kind", where, sizeof where);
        snprintf(err, errlen, "%s: [model] kind must be dod", where);
        return -1;
    }
    if (c->model.extractor != MODEL_EXTRACTOR_ADM) {
        config_where(c, "modulation", "extractor", where, sizeof where);
        snprintf(err, errlen, "%s: [modulation] extractor must be adm: the public code's de_mlp reads the pooled "
                 "guided-diffusion features (256x256_diffusion_uncond.pt)", where);
        return -1;
    }
    if (c->model.lora_alpha != 8) {
        config_where(c, "lora", "alpha", where, sizeof where);
        snprintf(err, errlen, "%s: [lora] alpha = %g, but the public code's LoraConfig leaves lora_alpha at PEFT's "
                 "default 8 (scale 8 / rank): set [lora] alpha = 8", where, c->model.lora_alpha);
        return -1;
    }
    bool s2 = c->model.stage == 2;
    if (s2 ? (!stage2 || stage1) : (!stage1 || stage2)) {
        config_where(c, "stage", "stage", where, sizeof where);
        snprintf(err, errlen, "%s: [stage] stage = %lld: give %s", where, c->model.stage,
                 s2 ? "--stage2 FILE only (the stage-1 tensors come from [stage] init_from: import --stage1 first, "
                      "with a stage-1 configuration)"
                    : "--stage1 FILE only (a stage-2 file is imported with a stage-2 configuration)");
        return -1;
    }
    return 0;
}

int main(int argc, char **argv) {
    if (dod_version_requested(argc, argv, "dod-import-public")) return 0;
    const char *config_path = NULL, *stage1 = NULL, *stage2 = NULL, *prompt = NULL, *out = NULL, *gamma = "one-plus";
    const char **sets = calloc((size_t)argc, sizeof(char *));
    int n_sets = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) return usage(stdout), 0;
        else if (!strcmp(a, "--config") && v) config_path = argv[++i];
        else if (!strcmp(a, "--set") && v) sets[n_sets++] = argv[++i];
        else if (!strcmp(a, "--stage1") && v) stage1 = argv[++i];
        else if (!strcmp(a, "--stage2") && v) stage2 = argv[++i];
        else if (!strcmp(a, "--prompt-embeds") && v) prompt = argv[++i];
        else if (!strcmp(a, "--out") && v) out = argv[++i];
        else if (!strcmp(a, "--lora-gamma") && v) gamma = argv[++i];
        else {
            fprintf(stderr, "dod-import-public: %s: %s\n", a, a[0] == '-' && a[1] == '-' && !v ? "needs a value"
                                                                                           : "unknown argument (see --help)");
            return 2;
        }
    }
    bool plain = !strcmp(gamma, "plain");
    if (!plain && strcmp(gamma, "one-plus")) {
        fprintf(stderr, "dod-import-public: --lora-gamma %s: expected one-plus or plain\n", gamma);
        return 2;
    }
    if (plain && !stage1) {
        fprintf(stderr, "dod-import-public: --lora-gamma plain converts a stage-1 import (the stage-2 model takes its "
                        "stage-1 tensors from [stage] init_from, converted when that was imported)\n");
        return 2;
    }
    if (!config_path || !out || (!stage1 && !stage2)) {
        fprintf(stderr, "dod-import-public: give --config FILE, --stage1 or --stage2 FILE and --out RUN_DIR (see --help)\n");
        return 2;
    }
    static char err[CFG_ERR_LEN + 8192];
    static TrainConfig c;
    char assignment[4300], prompt_path[4200];
    config_defaults(&c);
    int rc = config_load_file(&c, config_path, err, sizeof err);
    for (int i = 0; !rc && i < n_sets; i++) rc = config_set(&c, sets[i], err, sizeof err);
    snprintf(assignment, sizeof assignment, "train.run_dir=%s", out);
    if (!rc) rc = config_set(&c, assignment, err, sizeof err);
    snprintf(prompt_path, sizeof prompt_path, "%s/" PROMPT_FILE, out);
    snprintf(assignment, sizeof assignment, "model.prompt_embedding=%s", prompt_path);
    if (!rc && prompt) rc = config_set(&c, assignment, err, sizeof err);
    if (!rc) rc = config_validate(&c, err, sizeof err);
    if (!rc) rc = check_public(&c, stage1, stage2, err, sizeof err);
    if (rc) {
        fprintf(stderr, "dod-import-public: %s\n", err);
        return 1;
    }
    ModelOptions *mo = &c.model;
    char ckpt_dir[4200], latest[4300], cfg_file[4200];
    if (mo->ckpt_dir[0] == '/') snprintf(ckpt_dir, sizeof ckpt_dir, "%s", mo->ckpt_dir);
    else snprintf(ckpt_dir, sizeof ckpt_dir, "%s/%s", out, mo->ckpt_dir);
    snprintf(latest, sizeof latest, "%s/latest", ckpt_dir);
    struct stat sb;
    if (stat(latest, &sb) == 0) {
        fprintf(stderr, "dod-import-public: %s already holds checkpoints (%s): choose a new --out\n", out, latest);
        return 1;
    }
    snprintf(cfg_file, sizeof cfg_file, "%s/config.ini", out);
    char *text = config_to_text(&c);
    rc = fs_mkdirs(out, err, sizeof err) || (prompt && copy_prompt(prompt, prompt_path, err, sizeof err)) ||
         fs_write_text_atomic(cfg_file, text, err, sizeof err);
    if (rc) {
        fprintf(stderr, "dod-import-public: %s\n", err);
        free(text);
        return 1;
    }
    // The model of the configuration (stage 2: with the stage-1 tensors of init_from), then the file.
    snprintf(mo->prompt_cache, sizeof mo->prompt_cache, "%s/" MODEL_PROMPT_CACHE, out);
    config_where(&c, "modulation", "adm_weights", mo->adm_weights_origin, sizeof mo->adm_weights_origin);
    int n_stage1 = 0;
    Model *m = model_load(mo, &n_stage1, err, sizeof err);
    if (!m) {
        fprintf(stderr, "dod-import-public: %s\n", err);
        free(text);
        return 1;
    }
    const char *file = stage2 ? stage2 : stage1;
    ParamStore *ps = m->params(m->self);
    DodImportStats stats;
    if (dod_import_public(ps, file, &stats, err, sizeof err) ||
        (plain && dod_import_gamma_plain(ps, (int)mo->lora_rank, err, sizeof err))) {
        fprintf(stderr, "dod-import-public: %s\n", err);
        model_free(m);
        free(text);
        return 1;
    }
    int n = params_trainable(ps, NULL, 0);
    Tensor **trainable = dod_calloc(sizeof(Tensor *) * (size_t)(n ? n : 1), "trainable list");
    params_trainable(ps, trainable, n);
    AdamW *opt = adamw_new(trainable, n, adamw_defaults());   // zero moments: a fresh optimizer
    CheckpointInfo info = {.step = 0, .adamw_step = 0, .seed = (uint64_t)mo->seed, .loader_next = 0,
                           .stage = (int)mo->stage, .world_size = 1, .config_text = text, .prompt = mo->prompt,
                           .negative_prompt = mo->negative_prompt, .prompt_embedding = mo->prompt_embedding};
    snprintf(info.model_kind, sizeof info.model_kind, "%s", m->kind);
    char written[4300];
    rc = checkpoint_save(ckpt_dir, trainable, n, opt, &info, 0, written, sizeof written, err, sizeof err);
    adamw_free(opt);
    free(trainable);
    model_free(m);
    free(text);
    free(sets);
    if (rc) {
        fprintf(stderr, "dod-import-public: %s\n", err);
        return 1;
    }
    printf("dod-import-public: stage %lld: %d tensors from %s", mo->stage, stats.copied, file);
    if (stats.skipped) printf(" (%d frozen base weights in it not read)", stats.skipped);
    if (plain) printf(", gamma converted from the plain form");
    if (mo->stage == 2) printf(", %d stage-1 tensors from %s", n_stage1, mo->init_from);
    printf("\n  -> %s (step 0), %s%s%s\n", written, cfg_file, prompt ? ", " : "", prompt ? prompt_path : "");
    printf("evaluate:  dod-eval run --config %s --checkpoint %s ...\n", cfg_file, out);
    printf("fine-tune: dod-train --resume %s --set train.steps=N\n", out);
    if (mo->stage == 1) printf("stage 2:   [stage] init_from = %s\n", out);
    return 0;
}
#else
int main(int argc, char **argv) {
    if (dod_version_requested(argc, argv, "dod-import-public")) return 0;
    if (argc > 1 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) return usage(stdout), 0;
    fprintf(stderr, "dod-import-public: this build has no iniparser (Debian: apt-get install libiniparser-dev, then "
                    "re-run cmake)\n");
    return 1;
}
#endif
