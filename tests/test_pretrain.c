// dod-pretrain's library (train/pretrain.h): diffusers-style initialisation, crops, a few VAE and
// UNet pretraining steps on the committed photo crops (tests/fixtures/data) with the tiny base
// configs (configs/tiny_base) at 32 x 32: the held-out metrics improve, runs are deterministic by
// seed, and the written directories load back through vae_load / unet_load with identical tensors;
// TensorBoard events (o.tb_dir) hold the scalars of the log windows and evaluations.
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "layers/sd_config.h"
#include "tests/check.h"
#include "train/pretrain.h"

static char *read_bytes(const char *path, long *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    *len = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)*len);
    if (fread(b, 1, (size_t)*len, f) != (size_t)*len) *len = -1;
    fclose(f);
    return b;
}

static bool same_file(const char *a, const char *b) {
    long la = 0, lb = 0;
    char *x = read_bytes(a, &la), *y = read_bytes(b, &lb);
    bool same = x && y && la == lb && la > 0 && memcmp(x, y, (size_t)la) == 0;
    free(x);
    free(y);
    return same;
}

// How many times tag occurs in the event files of dir (a tag's string is in each of its records;
// tests/test_tfevents.c checks the records themselves). -1: no event file.
static int tag_records(const char *dir, const char *tag) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    int count = -1;
    struct dirent *e;
    while ((e = readdir(d)))
        if (!strncmp(e->d_name, "events.out.tfevents.", 20)) {
            char path[1024];
            long len = 0;
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
            char *b = read_bytes(path, &len);
            if (count < 0) count = 0;
            for (long i = 0; b && i + (long)strlen(tag) + 1 <= len; i++)   // the tag, then simple_value's key
                count += !memcmp(b + i, tag, strlen(tag)) && b[i + (long)strlen(tag)] == 0x15;
            free(b);
        }
    closedir(d);
    return count;
}

// Every tensor of ps equals (bitwise) the loaded store's tensor of the same name; counts match.
static bool same_store(ParamStore *ps, ParamStore *loaded) {
    if (params_count(ps) != params_count(loaded)) return false;
    for (int i = 0; i < params_count(ps); i++) {
        Tensor *a = params_at(ps, i), *b = params_get(loaded, a->name);
        if (!b || !tensor_same_shape(a, b) || b->dtype != DT_F32) return false;
        if (memcmp(a->data, b->data, sizeof(float) * (size_t)a->numel)) return false;
    }
    return true;
}

static void test_init(void) {
    SdVaeConfig cfg;
    char err[SD_CONFIG_ERR_LEN];
    CHECK(sd_vae_config_load(DOD_SOURCE_DIR "/configs/tiny_base/vae/config.json", &cfg, err) == 0, "test_init");
    SdTensorTable table = {0};
    sd_vae_tensor_table(&cfg, &table);
    ParamStore *a = pretrain_init_params(&table, 5), *b = pretrain_init_params(&table, 5), *c = pretrain_init_params(&table, 6);
    CHECK(params_count(a) == table.n, "test_init");
    CHECK(same_store(a, b), "test_init");
    CHECK(!same_store(a, c), "test_init");
    // GroupNorm: weight 1, bias 0.
    Tensor *gw = params_get(a, "encoder.down_blocks.0.resnets.0.norm1.weight");
    Tensor *gb = params_get(a, "decoder.mid_block.attentions.0.group_norm.bias");
    CHECK(gw && tensor_data_f32(gw)[0] == 1.0f && tensor_data_f32(gw)[gw->numel - 1] == 1.0f, "test_init");
    CHECK(gb && tensor_data_f32(gb)[0] == 0.0f, "test_init");
    // conv_in [16, 3, 3, 3]: U(-1/sqrt(27), 1/sqrt(27)) for weight and bias, spread over the range.
    Tensor *w = params_get(a, "encoder.conv_in.weight"), *bias = params_get(a, "encoder.conv_in.bias");
    float bound = 1.0f / sqrtf(27.0f), lo = 1, hi = -1;
    for (int64_t i = 0; i < w->numel; i++) {
        float v = tensor_data_f32(w)[i];
        lo = v < lo ? v : lo;
        hi = v > hi ? v : hi;
    }
    CHECK(lo >= -bound && hi <= bound && lo < -0.8f * bound && hi > 0.8f * bound, "test_init");
    for (int64_t i = 0; i < bias->numel; i++) CHECK(fabsf(tensor_data_f32(bias)[i]) <= bound, "test_init");
    CHECK(w->requires_grad && gw->requires_grad, "test_init");
    params_free(a);
    params_free(b);
    params_free(c);
    sd_table_free(&table);
}

static void test_crops(const PretrainImages *set) {
    Tensor *x = tensor_new4(3, 3, 32, 32), *y = tensor_new4(3, 3, 32, 32), *z = tensor_new4(3, 3, 32, 32);
    pretrain_random_crops(set, 32, 11, x);
    pretrain_random_crops(set, 32, 11, y);
    pretrain_random_crops(set, 32, 12, z);
    CHECK(memcmp(x->data, y->data, sizeof(float) * (size_t)x->numel) == 0, "test_crops");
    CHECK(memcmp(x->data, z->data, sizeof(float) * (size_t)x->numel) != 0, "test_crops");
    float lo = 1, hi = -1;
    for (int64_t i = 0; i < x->numel; i++) {
        lo = fminf(lo, tensor_data_f32(x)[i]);
        hi = fmaxf(hi, tensor_data_f32(x)[i]);
    }
    CHECK(lo >= -1.0f && hi <= 1.0f && hi - lo > 0.5f, "test_crops");
    ag_step_reset();
}

static PretrainOptions small_options(const PretrainImages *train, const PretrainImages *val, const char *out) {
    PretrainOptions o = pretrain_defaults();
    o.train = train;
    o.val = val;
    o.out_dir = out;
    o.steps = 10;
    o.batch = 2;
    o.crop = 32;
    o.seed = 7;
    o.lr = 2e-3f;
    o.warmup = 1;
    o.log_every = 5;
    o.eval_per_image = 2;
    return o;
}

static void test_vae_and_unet(const PretrainImages *train, const PretrainImages *val) {
    char d1[] = "/tmp/dod_pretrain_a_XXXXXX", d2[] = "/tmp/dod_pretrain_b_XXXXXX";
    CHECK(mkdtemp(d1) != NULL && mkdtemp(d2) != NULL, "test_vae_and_unet");
    PretrainOptions o = small_options(train, val, d1);
    PretrainReport r1, r2;
    ParamStore *vae_ps = NULL;
    char tb[512];
    snprintf(tb, sizeof tb, "%s/tb", d1);
    o.tb_dir = tb;
    pretrain_vae(&o, &r1, &vae_ps);
    // 10 steps, log every 5: two windows; held-out PSNR before and after
    CHECK(tag_records(tb, "vae/loss") == 2 && tag_records(tb, "vae/lr") == 2 && tag_records(tb, "vae/it_per_s") == 2 &&
          tag_records(tb, "vae/heldout_psnr") == 2, "vae TensorBoard records: loss %d, heldout_psnr %d",
          tag_records(tb, "vae/loss"), tag_records(tb, "vae/heldout_psnr"));
    CHECK(r1.last_loss < r1.first_loss, "vae loss %g -> %g", r1.first_loss, r1.last_loss);
    CHECK(r1.val_psnr > r1.val_psnr_init + 0.5, "held-out PSNR %g dB -> %g dB", r1.val_psnr_init, r1.val_psnr);
    CHECK(r1.latent_std > 0 && fabs(r1.scaling_factor * r1.latent_std - 1.0) < 1e-9, "test_vae_and_unet");
    o.out_dir = d2;
    o.tb_dir = NULL;
    pretrain_vae(&o, &r2, NULL);
    char p1[512], p2[512];
    snprintf(p1, sizeof p1, "%s/vae/diffusion_pytorch_model.safetensors", d1);
    snprintf(p2, sizeof p2, "%s/vae/diffusion_pytorch_model.safetensors", d2);
    CHECK(same_file(p1, p2), "test_vae_and_unet");
    CHECK(r1.val_psnr == r2.val_psnr, "test_vae_and_unet");

    Vae *vae = vae_load(d1, DT_F32, NULL);
    CHECK(same_store(vae_ps, vae->owned_ps), "test_vae_and_unet");
    CHECK(fabsf(vae->cfg.scaling_factor - (float)r1.scaling_factor) <= 1e-6f * (float)r1.scaling_factor, "test_vae_and_unet");
    vae_free(vae);
    params_free(vae_ps);

    // UNet on the committed base's VAE (a ten-step VAE's posterior samples are too wild for ten UNet
    // steps to show progress), twice: once into d1 (which has its own vae/), once into d3 (which has
    // none: it gets a copy of the frozen one).
    o.out_dir = d1;
    o.vae_dir = DOD_SOURCE_DIR "/configs/tiny_base";
    ParamStore *unet_ps = NULL;
    o.tb_dir = tb;
    pretrain_unet(&o, &r1, &unet_ps);
    o.tb_dir = NULL;
    CHECK(tag_records(tb, "unet/loss") == 2 && tag_records(tb, "unet/grad_norm") == 2 &&
          tag_records(tb, "unet/heldout_eps_mse") == 2 && tag_records(tb, "unet/heldout_eps_mse_t999") == 1,
          "unet TensorBoard records: loss %d, heldout_eps_mse %d, t999 %d", tag_records(tb, "unet/loss"),
          tag_records(tb, "unet/heldout_eps_mse"), tag_records(tb, "unet/heldout_eps_mse_t999"));
    // Ten steps of batch 2 at mixed timesteps: the training-loss windows are too noisy to compare, the
    // held-out objective over fixed crops, noise and timesteps is not (runs are deterministic).
    CHECK(r1.obj_mse < r1.obj_mse_init, "held-out objective (v) MSE %g -> %g", r1.obj_mse_init, r1.obj_mse);
    CHECK(r1.eps_mse_zero > 0.5 && r1.eps_mse_zero < 1.5, "test_vae_and_unet");   // mean eps^2 of the fixed noise
    char d3[] = "/tmp/dod_pretrain_c_XXXXXX";
    CHECK(mkdtemp(d3) != NULL, "test_vae_and_unet");
    o.out_dir = d3;
    pretrain_unet(&o, &r2, NULL);
    snprintf(p1, sizeof p1, "%s/unet/diffusion_pytorch_model.safetensors", d1);
    snprintf(p2, sizeof p2, "%s/unet/diffusion_pytorch_model.safetensors", d3);
    CHECK(same_file(p1, p2), "test_vae_and_unet");
    snprintf(p2, sizeof p2, "%s/vae/diffusion_pytorch_model.safetensors", d3);
    CHECK(same_file(DOD_SOURCE_DIR "/configs/tiny_base/vae/diffusion_pytorch_model.safetensors", p2),
          "the frozen VAE copied into d3");
    Unet *unet = unet_load(d1, DT_F32, NULL);
    CHECK(same_store(unet_ps, unet->owned_ps), "test_vae_and_unet");
    unet_free(unet);
    params_free(unet_ps);
    SdSchedulerConfig sched;
    char err[SD_CONFIG_ERR_LEN];
    snprintf(p1, sizeof p1, "%s/scheduler/scheduler_config.json", d3);
    CHECK(sd_scheduler_config_load(p1, &sched, err) == 0 && sched.prediction_type == SD_PRED_V, "test_vae_and_unet");
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' '%s' '%s'", d1, d2, d3);
    CHECK(system(cmd) == 0, "test_vae_and_unet");
}

// The v-prediction target against its two readers: eps = sqrt(a) v + sqrt(1 - a) z_t (the eps-MSE
// report) and x0 = sqrt(a) z_t - sqrt(1 - a) v (DOD's one step, layers/dod_model.c). Both must give back
// the eps and z0 that made z_t, at several timesteps including DOD's t = 999.
static void test_v_objective(void) {
    SdSchedulerConfig sched;
    char err[SD_CONFIG_ERR_LEN];
    CHECK(sd_scheduler_config_load(DOD_SOURCE_DIR "/configs/tiny_base/scheduler/scheduler_config.json", &sched, err) == 0,
          "%s", err);
    double abar[1000];
    sd_scheduler_alphas_cumprod(&sched, abar);
    ag_step_reset();
    Tensor *z0 = tensor_new4(4, 4, 3, 2), *eps = tensor_like(z0);
    tensor_randn(z0, 11, 1.3f);
    tensor_randn(eps, 12, 1.0f);
    const float t[4] = {0, 500, 980, 999};
    Tensor *zt = pretrain_add_noise(abar, z0, eps, t);
    Tensor *v = pretrain_unet_target(SD_PRED_V, abar, z0, eps, t);
    CHECK(pretrain_unet_target(SD_PRED_EPSILON, abar, z0, eps, t) == eps, "epsilon target is eps itself");
    double e_eps = 0, e_x0 = 0;
    for (int b = 0; b < 4; b++) {
        double a = abar[(int)t[b]];
        for (int64_t i = b * 24; i < (b + 1) * 24; i++) {
            double zi = tensor_data_f32(zt)[i], vi = tensor_data_f32(v)[i];
            e_eps = fmax(e_eps, fabs(sqrt(a) * vi + sqrt(1 - a) * zi - tensor_data_f32(eps)[i]));
            e_x0 = fmax(e_x0, fabs(sqrt(a) * zi - sqrt(1 - a) * vi - tensor_data_f32(z0)[i]));
        }
    }
    CHECK(e_eps < 1e-5 && e_x0 < 1e-5, "v round trip: max |eps error| %.3g, max |x0 error| %.3g", e_eps, e_x0);
    ag_step_reset();
}

int main(void) {
    test_init();
    test_v_objective();
    PretrainImages train = {0}, val = {0};
    const char *names[] = {"astronaut.png", "rocket.jpg", "hubble.bmp"};
    for (int i = 0; i < 3; i++) {
        char p[512];
        snprintf(p, sizeof p, "%s/tests/fixtures/data/%s", DOD_SOURCE_DIR, names[i]);
        pretrain_images_add(&train, p, 32);
    }
    pretrain_images_add(&val, DOD_SOURCE_DIR "/tests/fixtures/data/coffee.png", 32);
    CHECK(train.n == 3 && val.n == 1, "test_vae_and_unet");
    test_crops(&train);
    test_vae_and_unet(&train, &val);
    pretrain_images_free(&train);
    pretrain_images_free(&val);
    return check_summary();
}
