// dod-sd-inspect: check that a Stable Diffusion model loads, or print what a config expects.
//
//   dod-sd-inspect MODEL_DIR [--dtype f32|f16|bf16]          load a diffusers directory, print a summary
//   dod-sd-inspect --single-file CKPT CONFIG_DIR              load an original single-file checkpoint
//                                                             (.safetensors or a PyTorch .ckpt)
//   dod-sd-inspect --table CONFIG_DIR                         print the expected tensors: part, diffusers
//                                                             name, LDM name, shape (one per line)
//   dod-sd-inspect --header FILE                              list the tensors of a safetensors file or
//                                                             PyTorch checkpoint (name dtype shape)
// Exits 1 with the loader's message (every missing / mismatched tensor) when something does not fit.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/base.h"
#include "layers/sd_weights.h"

static void usage(FILE *out, int status) {
    fprintf(out, "usage: dod-sd-inspect MODEL_DIR [--dtype f32|f16|bf16]\n"
                    "       dod-sd-inspect --single-file CKPT.safetensors|CKPT.ckpt CONFIG_DIR [--dtype ...]\n"
                    "       dod-sd-inspect --table CONFIG_DIR\n"
                    "       dod-sd-inspect --header FILE.safetensors|FILE.pt|.pth|.pkl|.ckpt|.bin\n");
    exit(status);
}

static void print_table(const char *part, const SdTensorTable *t) {
    for (int i = 0; i < t->n; i++) {
        const SdTensorSpec *s = &t->items[i];
        printf("%s %s %s [", part, s->name, s->ldm_name);
        for (int d = 0; d < s->ndim; d++) printf(d ? ", %lld" : "%lld", (long long)s->shape[d]);
        printf("]\n");
    }
}

int main(int argc, char **argv) {
    if (dod_version_requested(argc, argv, "dod-sd-inspect")) return 0;
    if (argc < 2) usage(stderr, 2);
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) usage(stdout, 0);
    DType dtype = DT_F32;
    for (int i = 1; i < argc - 1; i++)
        if (!strcmp(argv[i], "--dtype")) {
            const char *d = argv[i + 1];
            dtype = !strcmp(d, "f32") ? DT_F32 : !strcmp(d, "f16") ? DT_F16 : !strcmp(d, "bf16") ? DT_BF16 : (DType)-1;
            if ((int)dtype < 0) dod_fatal("--dtype", "%s is not one of f32, f16, bf16", d);
            argc = i;   // options come last
        }
    if (!strcmp(argv[1], "--header")) {
        if (argc != 3) usage(stderr, 2);
        SafeTensors *st;
        char err[ST_ERR_LEN];
        if (tensor_file_open(argv[2], &st, err)) dod_fatal("dod-sd-inspect", "%s", err);
        for (int i = 0; i < safetensors_count(st); i++) {
            const StEntry *e = safetensors_entry(st, i);
            printf("%s %s [", e->name, tensor_file_stored_dtype(st, e));
            for (int d = 0; d < e->ndim; d++) printf(d ? ", %lld" : "%lld", (long long)e->shape[d]);
            printf("]\n");
        }
        safetensors_close(st);
        return 0;
    }
    if (!strcmp(argv[1], "--table")) {
        if (argc != 3) usage(stderr, 2);
        char path[4096], err[SD_CONFIG_ERR_LEN];
        SdUNetConfig u;
        SdVaeConfig v;
        snprintf(path, sizeof path, "%s/unet/config.json", argv[2]);
        if (sd_unet_config_load(path, &u, err)) dod_fatal("dod-sd-inspect", "%s", err);
        snprintf(path, sizeof path, "%s/vae/config.json", argv[2]);
        if (sd_vae_config_load(path, &v, err)) dod_fatal("dod-sd-inspect", "%s", err);
        SdTensorTable t = {0};
        sd_unet_tensor_table(&u, &t);
        print_table("unet", &t);
        sd_vae_tensor_table(&v, &t);
        print_table("vae", &t);
        sd_table_free(&t);
        return 0;
    }
    SdModel m;
    char *err = NULL;
    int rc;
    if (!strcmp(argv[1], "--single-file")) {
        if (argc != 4) usage(stderr, 2);
        rc = sd_model_load_single_file(argv[2], argv[3], dtype, &m, &err);
    } else {
        if (argc != 2) usage(stderr, 2);
        rc = sd_model_load_diffusers(argv[1], dtype, &m, &err);
    }
    if (rc) {
        fprintf(stderr, "dod: %s\n", err);
        free(err);
        return 1;
    }
    sd_model_print_summary(&m);
    printf("unet: %lld params, vae: %lld params, prediction_type %s, scaling_factor %g\n",
           (long long)params_numel(m.unet, false), (long long)params_numel(m.vae, false),
           sd_prediction_name(m.sched_cfg.prediction_type), m.vae_cfg.scaling_factor);
    printf("peak resident memory: %.1f MiB\n", dod_peak_rss_mib());
    sd_model_free(&m);
    return 0;
}
