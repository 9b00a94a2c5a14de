// dod-export: a trained DOD model (a run dir or a checkpoint) as one adapter file for inference
// (layers/adapter.h, docs/restore.md).
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "layers/adapter.h"
#include "layers/config_model.h"
#include "layers/model.h"
#include "layers/model_weights.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: dod-export (--run RUN_DIR | --checkpoint FILE) --out ADAPTER.safetensors [--dtype f32|bf16|f16]\n"
            "                  [--set S.K=V ...]\n"
            "\n"
            "Writes the trained part of a DOD model (UNet and VAE-encoder LoRA under diffusers/PEFT names, conv_in,\n"
            "the modulation, the detail module of stage 2) and its prompt embedding to one safetensors file, with\n"
            "metadata naming the base model it belongs to (docs/restore.md). dod-restore and dod-eval run --adapter\n"
            "read it.\n"
            "\n"
            "  --run RUN_DIR      a dod-train run: its config.ini and latest checkpoint\n"
            "  --checkpoint FILE  one checkpoint file; the configuration recorded in it is used\n"
            "  --out FILE         the adapter (written to a temporary name, then renamed)\n"
            "  --dtype D          storage of the tensors: f32 (default), bf16 or f16\n"
            "  --set S.K=V        override a model key of the configuration, e.g. --set model.base=DIR\n"
            "\n"
            "The base model ([model] base) is loaded to record its identity (hashes of its config files and\n"
            "weights). Exit status: 0 written, 1 failed (named), 2 usage.\n");
}

#ifdef DOD_HAVE_INIPARSER
// The configuration text recorded in a checkpoint, in a temporary file (=: path); 0 or -1.
static int config_from_checkpoint(const char *ckpt, char *path, size_t len, char *err, size_t errlen) {
    SafeTensors *st = checkpoint_open(ckpt, err, errlen);
    if (!st) return -1;
    CheckpointInfo info;
    int rc = checkpoint_read_info(st, &info, err, errlen);
    safetensors_close(st);
    if (rc) return -1;
    const char *tmpdir = getenv("TMPDIR");
    snprintf(path, len, "%s/dod-export-config-XXXXXX", tmpdir && *tmpdir ? tmpdir : "/tmp");
    int fd = mkstemp(path);
    FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (!f || fputs(info.config_text, f) < 0 || fclose(f)) {
        snprintf(err, errlen, "%s: cannot write the checkpoint's configuration to a temporary file", path);
        if (fd >= 0) unlink(path);
        checkpoint_info_free(&info);
        return -1;
    }
    checkpoint_info_free(&info);
    return 0;
}

static DType parse_dtype(const char *s) {
    if (!strcmp(s, "f32")) return DT_F32;
    if (!strcmp(s, "bf16")) return DT_BF16;
    if (!strcmp(s, "f16")) return DT_F16;
    return (DType)-1;
}

int main(int argc, char **argv) {
    if (dod_version_requested(argc, argv, "dod-export")) return 0;
    const char *run = NULL, *ckpt = NULL, *out = NULL;
    const char **sets = calloc((size_t)argc + 1, sizeof(char *));
    int n_sets = 0;
    DType dtype = DT_F32;
    static const struct option longopts[] = {{"run", required_argument, 0, 'r'},  {"checkpoint", required_argument, 0, 'c'},
                                             {"out", required_argument, 0, 'o'},  {"dtype", required_argument, 0, 'd'},
                                             {"set", required_argument, 0, 's'},  {"help", no_argument, 0, 'h'},
                                             {0, 0, 0, 0}};
    opterr = 0;
    int ch;
    while ((ch = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (ch) {
        case 'r': run = optarg; break;
        case 'c': ckpt = optarg; break;
        case 'o': out = optarg; break;
        case 's': sets[n_sets++] = optarg; break;
        case 'd':
            if ((int)(dtype = parse_dtype(optarg)) < 0) {
                fprintf(stderr, "dod-export: --dtype %s: expected f32, bf16 or f16\n", optarg);
                return 2;
            }
            break;
        case 'h': usage(stdout); return 0;
        default:
            fprintf(stderr, "dod-export: %s '%s' (--help lists the options)\n", optopt ? "option needs a value:" : "unknown option",
                    argv[optind - 1]);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "dod-export: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    if (!out || !run == !ckpt) {
        fprintf(stderr, "dod-export: --out and one of --run / --checkpoint are required (--help)\n");
        return 2;
    }

    static char err[16384];
    char config[4200], tmp_config[4200] = "";
    if (run) snprintf(config, sizeof config, "%s/config.ini", run);
    else if (config_from_checkpoint(ckpt, tmp_config, sizeof tmp_config, err, sizeof err)) {
        fprintf(stderr, "dod-export: %s\n", err);
        return 1;
    } else snprintf(config, sizeof config, "%s", tmp_config);
    static ModelOptions mo;
    static CfgSource src;
    model_config_defaults(&mo, &src);
    int rc = model_config_load(&mo, &src, config, err, sizeof err);
    if (tmp_config[0]) unlink(tmp_config);
    if (rc) {
        fprintf(stderr, "dod-export: %s%s\n", ckpt ? "the configuration recorded in the checkpoint: " : "", err);
        return 1;
    }
    for (int i = 0; i < n_sets; i++)
        if (model_config_set(&mo, &src, sets[i], err, sizeof err)) {
            fprintf(stderr, "dod-export: %s\n", err);
            return 2;
        }
    if (mo.kind != MODEL_DOD) {
        fprintf(stderr, "dod-export: %s: a %s model; only DOD models export adapters\n", run ? run : ckpt,
                model_kind_name(mo.kind));
        return 1;
    }
    // Export reads host f32 tensors: the model is built on the CPU whatever it was trained on.
    mo.device = DEV_CPU;
    mo.precision = MODEL_PRECISION_F32;
    mo.activations = MODEL_ACTIVATIONS_AUTO;
    mo.frozen_dtype = MODEL_FROZEN_F32;
    // The prompt embeddings the run trained with (its cache, layers/sd_prompt.h), when they still match;
    // else [model] prompt is encoded here as dod-train encodes it.
    if (run) snprintf(mo.prompt_cache, sizeof mo.prompt_cache, "%s/" MODEL_PROMPT_CACHE, run);
    Model *model = model_load(&mo, NULL, err, sizeof err);
    if (!model) {
        fprintf(stderr, "dod-export: %s\n", err);
        return 1;
    }
    char ckpt_file[4200];
    CheckpointInfo info;
    if (model_load_checkpoint(model, &mo, run ? config : "", run ? run : ckpt, ckpt_file, sizeof ckpt_file, &info, err,
                              sizeof err)) {
        fprintf(stderr, "dod-export: %s\n", err);
        model_free(model);
        return 1;
    }
    DodModel *dm = model->self;
    AdapterExportOptions eo = {.base_dir = mo.base, .checkpoint = ckpt_file, .step = (long long)info.step,
                               .prompt = mo.prompt_embedding[0] ? NULL : mo.prompt, .dtype = dtype};
    rc = adapter_export(dm, out, &eo, err, sizeof err);
    if (rc) {
        fprintf(stderr, "dod-export: %s\n", err);
    } else {
        AdapterInfo ai;
        if (adapter_read_info(out, &ai, err, sizeof err)) {
            fprintf(stderr, "dod-export: %s: written, but it does not read back: %s\n", out, err);
            rc = 1;
        } else {
            printf("dod-export: %s: stage-%d DOD adapter (rank %d, alpha %g, %d UNet + %d VAE LoRA, %s extractor) from %s (step "
                   "%lld), %s tensors; base %s: config %s, weights %s\n",
                   out, ai.stage, ai.rank, (double)ai.alpha, ai.n_unet_lora, ai.n_vae_lora,
                   adapter_extractor_name(ai.extractor), ckpt_file, ai.step, ai.dtype,
                   mo.base, ai.base.config_hash, ai.base.weights_hash);
        }
    }
    checkpoint_info_free(&info);
    model_free(model);
    free(sets);
    return rc ? 1 : 0;
}
#else
int main(int argc, char **argv) {
    if (dod_version_requested(argc, argv, "dod-export")) return 0;
    if (argc > 1 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) return usage(stdout), 0;
    fprintf(stderr, "dod-export: this build has no iniparser (the run's configuration is an INI file; Debian: "
                    "apt-get install libiniparser-dev, then re-run cmake)\n");
    return 1;
}
#endif
