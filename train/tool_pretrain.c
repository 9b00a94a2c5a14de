// dod-pretrain: train a tiny SD-shaped base model from scratch (docs/tiny-base.md).
//   dod-pretrain vae  --images DIR|FILE [...] --out ROOT [--steps N --crop 64 --seed S ...]
//   dod-pretrain unet --images DIR|FILE [...] --vae ROOT --out ROOT [--steps N ...]
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/base.h"
#include "train/pretrain.h"

static void usage(void) {
    fprintf(stderr,
            "usage: dod-pretrain vae|unet [options]\n"
            "  --images PATH      training image file or directory (repeatable)\n"
            "  --val-images PATH  held-out image file or directory (repeatable; default: training images)\n"
            "  --out ROOT         diffusers root written: vae/ (vae), unet/ + scheduler/ (+ vae/ if absent) (unet)\n"
            "  --vae ROOT         unet: the trained VAE (a root holding vae/, or the vae/ directory)\n"
            "  --config ROOT      config JSONs to train (default configs/tiny_base of the source tree)\n"
            "  --steps N (1000)  --batch N (8)  --crop N (64)  --seed S (123)\n"
            "  --lr F (1e-3, cosine to 0)  --warmup N (50)  --weight-decay F (1e-4)  --clip F (1.0)\n"
            "  vae:  --l1 F (1)  --mse F (0)  --kl F (1e-6)  --ssim F (0)\n"
            "  unet: --high-t-frac F (0.5)  --high-t-from T (900): that fraction of a batch draws t in [T, 1000)\n"
            "  --log-every N (25)  --eval-every N (0: only at the end)  --eval-crops N (4 per held-out image)\n"
            "  --tensorboard DIR  TensorBoard event files (default ROOT/tb of --out; tags vae/... or unet/...)\n"
            "  --no-tensorboard   no event files\n");
}

static const char *need(int argc, char **argv, int *i) {
    if (*i + 1 >= argc) {
        fprintf(stderr, "dod-pretrain: %s needs a value\n", argv[*i]);
        exit(2);
    }
    return argv[++*i];
}

static double num(const char *flag, const char *s) {
    char *end;
    double v = strtod(s, &end);
    if (end == s || *end) {
        fprintf(stderr, "dod-pretrain: %s: not a number: %s\n", flag, s);
        exit(2);
    }
    return v;
}

int main(int argc, char **argv) {
    if (dod_version_requested(argc, argv, "dod-pretrain")) return 0;
    if (argc < 2 || (strcmp(argv[1], "vae") && strcmp(argv[1], "unet"))) {
        usage();
        return 2;
    }
    bool is_vae = !strcmp(argv[1], "vae");
    PretrainOptions o = pretrain_defaults();
    const char *train_paths[64], *val_paths[64];
    int n_train = 0, n_val = 0;
    const char *tb_dir = NULL;
    bool tensorboard = true;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--images") || !strcmp(a, "--val-images")) {
            bool val = !strcmp(a, "--val-images");
            if ((val ? n_val : n_train) == 64) {
                fprintf(stderr, "dod-pretrain: at most 64 %s\n", a);
                return 2;
            }
            if (val) val_paths[n_val++] = need(argc, argv, &i);
            else train_paths[n_train++] = need(argc, argv, &i);
        } else if (!strcmp(a, "--out")) o.out_dir = need(argc, argv, &i);
        else if (!strcmp(a, "--vae")) o.vae_dir = need(argc, argv, &i);
        else if (!strcmp(a, "--config")) o.config_dir = need(argc, argv, &i);
        else if (!strcmp(a, "--steps")) o.steps = (int)num(a, need(argc, argv, &i));
        else if (!strcmp(a, "--batch")) o.batch = (int)num(a, need(argc, argv, &i));
        else if (!strcmp(a, "--crop")) o.crop = (int)num(a, need(argc, argv, &i));
        else if (!strcmp(a, "--seed")) o.seed = (uint64_t)num(a, need(argc, argv, &i));
        else if (!strcmp(a, "--lr")) o.lr = (float)num(a, need(argc, argv, &i));
        else if (!strcmp(a, "--warmup")) o.warmup = (int)num(a, need(argc, argv, &i));
        else if (!strcmp(a, "--weight-decay")) o.weight_decay = (float)num(a, need(argc, argv, &i));
        else if (!strcmp(a, "--clip")) o.clip_norm = (float)num(a, need(argc, argv, &i));
        else if (!strcmp(a, "--l1")) o.l1_weight = (float)num(a, need(argc, argv, &i));
        else if (!strcmp(a, "--mse")) o.mse_weight = (float)num(a, need(argc, argv, &i));
        else if (!strcmp(a, "--kl")) o.kl_weight = (float)num(a, need(argc, argv, &i));
        else if (!strcmp(a, "--ssim")) o.ssim_weight = (float)num(a, need(argc, argv, &i));
        else if (!strcmp(a, "--high-t-frac")) o.high_t_frac = (float)num(a, need(argc, argv, &i));
        else if (!strcmp(a, "--high-t-from")) o.high_t_from = (int)num(a, need(argc, argv, &i));
        else if (!strcmp(a, "--log-every")) o.log_every = (int)num(a, need(argc, argv, &i));
        else if (!strcmp(a, "--eval-every")) o.eval_every = (int)num(a, need(argc, argv, &i));
        else if (!strcmp(a, "--eval-crops")) o.eval_per_image = (int)num(a, need(argc, argv, &i));
        else if (!strcmp(a, "--tensorboard")) tb_dir = need(argc, argv, &i);
        else if (!strcmp(a, "--no-tensorboard")) tensorboard = false;
        else {
            fprintf(stderr, "dod-pretrain: unknown option %s\n", a);
            usage();
            return 2;
        }
    }
    if (n_train == 0 || !o.out_dir || (!is_vae && !o.vae_dir)) {
        fprintf(stderr, "dod-pretrain %s: --images and --out are required%s\n", argv[1], is_vae ? "" : ", and --vae");
        return 2;
    }
    char tb_default[4200];
    snprintf(tb_default, sizeof tb_default, "%s/tb", o.out_dir);
    o.tb_dir = !tensorboard ? NULL : tb_dir ? tb_dir : tb_default;
    PretrainImages train = {0}, val = {0};
    for (int i = 0; i < n_train; i++) pretrain_images_add(&train, train_paths[i], o.crop);
    for (int i = 0; i < n_val; i++) pretrain_images_add(&val, val_paths[i], o.crop);
    o.train = &train;
    o.val = &val;
    PretrainReport rep;
    if (is_vae) {
        pretrain_vae(&o, &rep, NULL);
        printf("vae: loss %.5f -> %.5f, held-out PSNR %.2f dB (init %.2f), latent std %.4f, scaling_factor %.5f, "
               "%.0f s\n",
               rep.first_loss, rep.last_loss, rep.val_psnr, rep.val_psnr_init, rep.latent_std, rep.scaling_factor,
               rep.seconds);
    } else {
        pretrain_unet(&o, &rep, NULL);
        printf("unet: loss %.5f -> %.5f, held-out objective MSE %.4f (init %.4f), eps-MSE %.4f (init %.4f); t=999: "
               "eps-MSE %.4f vs zero %.4f, linear %.4f; %.0f s\n",
               rep.first_loss, rep.last_loss, rep.obj_mse, rep.obj_mse_init, rep.eps_mse, rep.eps_mse_init,
               rep.eps_mse_999, rep.eps_mse_zero, rep.eps_mse_linear, rep.seconds);
    }
    pretrain_images_free(&train);
    pretrain_images_free(&val);
    return 0;
}
