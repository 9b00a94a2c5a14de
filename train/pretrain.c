// Pretraining loops for the tiny SD-shaped base: the VAE as an autoencoder, then the UNet on the
// epsilon or v objective in the frozen VAE's latent space (see train/pretrain.h, docs/tiny-base.md).
#include "train/pretrain.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "autograd/optim.h"
#include "data/keyed_rng.h"
#include "eval/tfevents.h"

PretrainOptions pretrain_defaults(void) {
    PretrainOptions o = {0};
    o.config_dir = DOD_SOURCE_DIR "/configs/tiny_base";
    o.steps = 1000;
    o.batch = 8;
    o.crop = 64;
    o.seed = 123;
    o.lr = 1e-3f;
    o.warmup = 50;
    o.weight_decay = 1e-4f;
    o.clip_norm = 1.0f;
    o.l1_weight = 1.0f;
    o.mse_weight = 0.0f;
    o.kl_weight = 1e-6f;
    o.ssim_weight = 0.0f;
    o.high_t_frac = 0.5f;
    o.high_t_from = 900;
    o.log_every = 25;
    o.eval_every = 0;
    o.eval_per_image = 4;
    return o;
}

static Tensor *slice_batch(Tensor *all, int64_t from, int64_t n) {
    int64_t per = all->numel / all->shape[0];
    int64_t shape[4] = {n, all->shape[1], all->shape[2], all->shape[3]};
    Tensor *t = tensor_new(4, shape, DT_F32);
    memcpy(t->data, tensor_data_f32(all) + from * per, sizeof(float) * (size_t)(n * per));
    return t;
}

typedef struct {
    ParamStore *ps;
    Tensor **train;
    int n_train;
    AdamW *opt;
    LrSchedule sched;
    double window_sum, first_window;
    int window_n;
    double t0;
    TfEvents *tb;        // NULL: no TensorBoard events (o->tb_dir unset)
    const char *part;    // "vae" or "unet": the tags' prefix
} Trainer;

// The scalar <part>/<name> at step to the TensorBoard file, flushed (no-op without one). Fatal naming
// the file when it cannot be written.
static void trainer_scalar(Trainer *tr, const char *name, int step, double value) {
    if (!tr->tb) return;
    char tag[96], err[4400];
    snprintf(tag, sizeof tag, "%s/%s", tr->part, name);
    tfevents_scalar(tr->tb, tag, step, (float)value);
    if (tfevents_flush(tr->tb, err, sizeof err)) dod_fatal(tr->part, "%s", err);
}

static void trainer_init(Trainer *tr, ParamStore *ps, const PretrainOptions *o, const char *part) {
    tr->ps = ps;
    tr->n_train = params_count(ps);
    tr->train = dod_malloc(sizeof(Tensor *) * (size_t)tr->n_train, "pretrain trainables");
    tr->n_train = params_trainable(ps, tr->train, tr->n_train);
    AdamWConfig cfg = adamw_defaults();
    cfg.lr = o->lr;
    cfg.weight_decay = o->weight_decay;
    tr->opt = adamw_new(tr->train, tr->n_train, cfg);
    tr->sched = (LrSchedule){LR_COSINE, o->lr, o->warmup, o->steps};
    tr->window_sum = 0;
    tr->window_n = 0;
    tr->first_window = NAN;
    tr->t0 = dod_now_seconds();
    tr->part = part;
    tr->tb = NULL;
    char err[4400];
    if (o->tb_dir && !(tr->tb = tfevents_open(o->tb_dir, err, sizeof err))) dod_fatal(part, "%s", err);
}

// Backward from loss, clip, AdamW; logs every o->log_every steps. Returns the loss value.
static double trainer_step(Trainer *tr, const PretrainOptions *o, int step, Tensor *loss, const char *what,
                           PretrainReport *rep) {
    double value = tensor_item(loss);
    if (!isfinite(value)) dod_fatal(what, "step %d: loss is %g", step, value);
    ag_backward(loss);
    double gnorm = clip_grad_norm(tr->train, tr->n_train, o->clip_norm);
    float lr = lr_at(&tr->sched, step);
    adamw_step(tr->opt, lr);
    params_zero_grad(tr->ps);
    ag_step_reset();
    tr->window_sum += value;
    tr->window_n++;
    bool last = step == o->steps - 1;
    if (tr->window_n == o->log_every || last) {
        double mean = tr->window_sum / tr->window_n;
        if (isnan(tr->first_window)) tr->first_window = mean;
        rep->first_loss = tr->first_window;
        rep->last_loss = mean;
        double el = dod_now_seconds() - tr->t0;
        fprintf(stderr, "%s step %d/%d loss %.5f lr %.2e grad_norm %.3f %.2fs/step\n", what, step + 1, o->steps, mean,
                lr, gnorm, el / (step + 1));
        trainer_scalar(tr, "loss", step + 1, mean);   // the window's mean; lr and gradient norm of this step
        trainer_scalar(tr, "lr", step + 1, lr);
        trainer_scalar(tr, "grad_norm", step + 1, gnorm);
        trainer_scalar(tr, "it_per_s", step + 1, (step + 1) / el);
        tr->window_sum = 0;
        tr->window_n = 0;
    }
    return value;
}

static void trainer_free(Trainer *tr) {
    char err[4400];
    if (tfevents_close(tr->tb, err, sizeof err)) dod_fatal(tr->part, "%s", err);
    adamw_free(tr->opt);
    free(tr->train);
}

static void check_options(const PretrainOptions *o, const char *who) {
    DOD_CHECK(o->steps >= 0 && o->batch > 0 && o->crop >= 8 && o->log_every > 0, who,
              "bad options: steps %d batch %d crop %d log_every %d", o->steps, o->batch, o->crop, o->log_every);
    DOD_CHECK(o->train && o->train->n > 0, who, "no training images");
    DOD_CHECK(o->out_dir, who, "no output directory");
}

// ---- VAE -----------------------------------------------------------------------------------------
// Training loss of one batch x (a new scalar): reconstruction of a posterior sample + KL.
static Tensor *vae_loss(const Vae *vae, Tensor *x, uint64_t noise_seed, const PretrainOptions *o) {
    VaeEncoded e;
    vae_encode(vae, x, false, NULL, &e);
    Tensor *noise = tensor_like(e.mean);
    tensor_randn(noise, noise_seed, 1.0f);
    Tensor *z = op_posterior_sample(e.mean, e.logvar, noise);
    Tensor *rec = vae_decode(vae, z, NULL, NULL, NULL);
    Tensor *loss = op_scale(op_l1_loss(rec, x), o->l1_weight);
    if (o->mse_weight > 0) loss = op_add(loss, op_scale(op_mse_loss(rec, x), o->mse_weight));
    if (o->ssim_weight > 0) loss = op_add(loss, op_scale(op_add_scalar(op_scale(op_ssim(rec, x, 2.0f), -1), 1), o->ssim_weight));
    if (o->kl_weight > 0) {
        // diffusers DiagonalGaussianDistribution.kl(): 0.5 sum(mu^2 + var - 1 - logvar) per sample; batch mean.
        Tensor *kl = op_sub(op_add(op_mul(e.mean, e.mean), op_exp(e.logvar)), op_add_scalar(e.logvar, 1.0f));
        loss = op_add(loss, op_scale(op_sum(kl), 0.5f * o->kl_weight / (float)x->shape[0]));
    }
    return loss;
}

// Mean PSNR (dB, data range 2) of decode(posterior mean) vs each crop of `crops`; also the std of
// the posterior means over all crops (*latent_std, may be NULL).
static double vae_eval(const Vae *vae, Tensor *crops, int batch, double *latent_std) {
    bool prev = ag_set_grad_enabled(false);
    double psnr_sum = 0, s1 = 0, s2 = 0;
    int64_t n_lat = 0, n = crops->shape[0];
    for (int64_t b = 0; b < n; b += batch) {
        int64_t m = n - b < batch ? n - b : batch;
        Tensor *x = slice_batch(crops, b, m);
        VaeEncoded e;
        vae_encode(vae, x, false, NULL, &e);
        const float *mu = tensor_data_f32(e.mean);
        for (int64_t i = 0; i < e.mean->numel; i++) s1 += mu[i], s2 += (double)mu[i] * mu[i];
        n_lat += e.mean->numel;
        Tensor *rec = op_clamp(vae_decode(vae, e.mean, NULL, NULL, NULL), -1.0f, 1.0f);
        int64_t per = x->numel / m;
        for (int64_t k = 0; k < m; k++) {
            double se = 0;
            const float *a = tensor_data_f32(rec) + k * per, *c = tensor_data_f32(x) + k * per;
            for (int64_t i = 0; i < per; i++) se += (double)(a[i] - c[i]) * (a[i] - c[i]);
            double mse = se / per;
            psnr_sum += 10.0 * log10(4.0 / (mse > 1e-12 ? mse : 1e-12));
        }
        ag_step_reset();
    }
    ag_set_grad_enabled(prev);
    if (latent_std) {
        double mean = s1 / n_lat;
        *latent_std = sqrt(s2 / n_lat - mean * mean);
    }
    return psnr_sum / n;
}

static char *part_config_path(const char *root, const char *part, const char *file) {
    size_t len = strlen(root) + strlen(part) + strlen(file) + 3;
    char *p = dod_malloc(len, "pretrain path");
    snprintf(p, len, "%s/%s/%s", root, part, file);
    return p;
}

void pretrain_vae(const PretrainOptions *o, PretrainReport *rep, ParamStore **ps_out) {
    const char *who = "pretrain vae";
    check_options(o, who);
    memset(rep, 0, sizeof *rep);
    double t0 = dod_now_seconds();
    char *cfg_path = part_config_path(o->config_dir, "vae", "config.json");
    char err[SD_CONFIG_ERR_LEN];
    Vae vae = {0};
    if (sd_vae_config_load(cfg_path, &vae.cfg, err) != 0) dod_fatal(who, "%s", err);
    SdTensorTable table = {0};
    sd_vae_tensor_table(&vae.cfg, &table);
    ParamStore *ps = pretrain_init_params(&table, rng_key(o->seed, rng_hash_string("vae")));
    vae.net = (SdNet){.ps = ps, .prefix = ""};
    fprintf(stderr, "%s: %s, %lld parameters, %d training images, %d held-out images\n", who, cfg_path,
            (long long)params_numel(ps, true), o->train->n, o->val ? o->val->n : 0);

    const PretrainImages *eval_set = o->val && o->val->n > 0 ? o->val : o->train;
    Tensor *eval_crops = pretrain_grid_crops(eval_set, o->crop, o->eval_per_image);
    rep->val_psnr_init = vae_eval(&vae, eval_crops, o->batch, NULL);
    fprintf(stderr, "%s: held-out reconstruction PSNR before training %.2f dB (%lld crops)\n", who, rep->val_psnr_init,
            (long long)eval_crops->shape[0]);

    Trainer tr;
    trainer_init(&tr, ps, o, "vae");
    trainer_scalar(&tr, "heldout_psnr", 0, rep->val_psnr_init);
    uint64_t data_key = rng_key(o->seed, rng_hash_string("vae crops"));
    uint64_t noise_key = rng_key(o->seed, rng_hash_string("vae posterior"));
    for (int step = 0; step < o->steps; step++) {
        Tensor *x = tensor_new4(o->batch, 3, o->crop, o->crop);
        pretrain_random_crops(o->train, o->crop, rng_key(data_key, (uint64_t)step), x);
        Tensor *loss = vae_loss(&vae, x, rng_key(noise_key, (uint64_t)step), o);
        trainer_step(&tr, o, step, loss, who, rep);
        if (o->eval_every > 0 && (step + 1) % o->eval_every == 0 && step + 1 < o->steps) {
            double psnr = vae_eval(&vae, eval_crops, o->batch, NULL);
            fprintf(stderr, "%s step %d: held-out PSNR %.2f dB\n", who, step + 1, psnr);
            trainer_scalar(&tr, "heldout_psnr", step + 1, psnr);
        }
    }
    rep->val_psnr = vae_eval(&vae, eval_crops, o->batch, NULL);
    trainer_scalar(&tr, "heldout_psnr", o->steps, rep->val_psnr);
    trainer_free(&tr);

    // Scaling factor (diffusers convention: 1 / std of the latents), measured on training crops.
    Tensor *train_crops = pretrain_grid_crops(o->train, o->crop, 4);
    vae_eval(&vae, train_crops, o->batch, &rep->latent_std);
    tensor_free(train_crops);
    tensor_free(eval_crops);
    rep->scaling_factor = rep->latent_std > 0 ? 1.0 / rep->latent_std : 1.0;
    rep->seconds = dod_now_seconds() - t0;
    fprintf(stderr, "%s: held-out PSNR %.2f dB (was %.2f), latent std %.4f -> scaling_factor %.5f, %.1f s\n", who,
            rep->val_psnr, rep->val_psnr_init, rep->latent_std, rep->scaling_factor, rep->seconds);

    // Write vae/ with the config's scaling_factor replaced by the measured one.
    char *text = pretrain_read_text(cfg_path);
    cJSON *root = cJSON_Parse(text);
    if (!root) dod_fatal(who, "%s: not valid JSON", cfg_path);
    cJSON *sf = cJSON_CreateNumber((double)(float)rep->scaling_factor);
    if (cJSON_GetObjectItemCaseSensitive(root, "scaling_factor")) cJSON_ReplaceItemInObjectCaseSensitive(root, "scaling_factor", sf);
    else cJSON_AddItemToObject(root, "scaling_factor", sf);
    char *json = cJSON_Print(root);
    size_t jl = strlen(json);
    char *json_nl = dod_malloc(jl + 2, "config text");
    memcpy(json_nl, json, jl);
    memcpy(json_nl + jl, "\n", 2);
    char dir[1200];
    snprintf(dir, sizeof dir, "%s/vae", o->out_dir);
    pretrain_save_part(dir, ps, &table, json_nl);
    fprintf(stderr, "%s: wrote %s\n", who, dir);
    free(json_nl);
    cJSON_free(json);
    cJSON_Delete(root);
    free(text);
    free(cfg_path);
    sd_table_free(&table);
    if (ps_out) *ps_out = ps;
    else params_free(ps);
}

// ---- UNet ----------------------------------------------------------------------------------------
typedef struct {
    const Vae *vae;
    float sf;
    const double *abar;
    SdPrediction pred;   // what the UNet predicts: epsilon or v
} LatentCtx;

// Scaled latents (=, new arena tensor) of crops x: posterior sample (noise_seed != 0) or mean (0),
// times the VAE's scaling_factor. No tape.
static Tensor *encode_latents(const LatentCtx *c, Tensor *x, uint64_t noise_seed) {
    bool prev = ag_set_grad_enabled(false);
    VaeEncoded e;
    vae_encode(c->vae, x, false, NULL, &e);
    Tensor *z = e.mean;
    if (noise_seed) {
        Tensor *n = tensor_like(e.mean);
        tensor_randn(n, noise_seed, 1.0f);
        z = op_posterior_sample(e.mean, e.logvar, n);
    }
    z = op_scale(z, c->sf);
    ag_set_grad_enabled(prev);
    return z;
}

// sqrt(abar_t) u + sign * sqrt(1 - abar_t) w per sample (=, new arena tensor).
static Tensor *mix_per_sample(const double *abar, Tensor *u, Tensor *w, float sign, const float *t) {
    Tensor *out = tensor_like(u);
    int64_t per = u->numel / u->shape[0];
    for (int64_t b = 0; b < u->shape[0]; b++) {
        double a = abar[(int)t[b]];
        float su = (float)sqrt(a), sw = sign * (float)sqrt(1.0 - a);
        for (int64_t i = b * per; i < (b + 1) * per; i++)
            tensor_data_f32(out)[i] = su * tensor_data_f32(u)[i] + sw * tensor_data_f32(w)[i];
    }
    return out;
}

Tensor *pretrain_add_noise(const double *abar, Tensor *z0, Tensor *eps, const float *t) {
    return mix_per_sample(abar, z0, eps, 1.0f, t);
}

Tensor *pretrain_unet_target(SdPrediction pred, const double *abar, Tensor *z0, Tensor *eps, const float *t) {
    if (pred == SD_PRED_EPSILON) return eps;
    DOD_CHECK(pred == SD_PRED_V, "pretrain_unet_target", "prediction type %s is not pretrained",
              sd_prediction_name(pred));
    return mix_per_sample(abar, eps, z0, -1.0f, t);
}

// The UNet output of sample element i as an eps estimate: itself (epsilon), or for v-prediction
// sqrt(abar) v + sqrt(1 - abar) z_t (so both kinds report the same eps-MSE).
static double as_eps(const LatentCtx *c, double a, double out, double zt) {
    return c->pred == SD_PRED_EPSILON ? out : sqrt(a) * out + sqrt(1 - a) * zt;
}

// Mean eps-MSE of the UNet over crops at timestep t_fixed (>= 0) or at spread timesteps (t_fixed < 0:
// crop i at (i * 997 + 13) mod 1000); fixed noise from seed. With zero_mse / linear_mse non-NULL,
// also the MSE of predicting 0 and of the linear MMSE predictor
// sqrt(1 - abar) z_t / (abar var(z0) + 1 - abar) (what a UNet that ignores structure can reach).
// obj_mse (non-NULL): the MSE of the training objective itself (eps, or v for v-prediction).
static double unet_eval(const Unet *unet, const LatentCtx *c, Tensor *crops, int batch, int t_fixed, uint64_t seed,
                        double *zero_mse, double *linear_mse, double *obj_mse) {
    bool prev = ag_set_grad_enabled(false);
    double se = 0, se0 = 0, sel = 0, seo = 0, s1 = 0, s2 = 0;
    int64_t cnt = 0, n = crops->shape[0];
    // var(z0) first (needed by the linear predictor).
    for (int64_t b = 0; b < n; b += batch) {
        int64_t m = n - b < batch ? n - b : batch;
        Tensor *z0 = encode_latents(c, slice_batch(crops, b, m), 0);
        for (int64_t i = 0; i < z0->numel; i++) s1 += tensor_data_f32(z0)[i], s2 += (double)tensor_data_f32(z0)[i] * tensor_data_f32(z0)[i];
        cnt += z0->numel;
        ag_step_reset();
    }
    double var = s2 / cnt - (s1 / cnt) * (s1 / cnt);
    for (int64_t b = 0; b < n; b += batch) {
        int64_t m = n - b < batch ? n - b : batch;
        Tensor *z0 = encode_latents(c, slice_batch(crops, b, m), 0);
        Tensor *eps = tensor_like(z0);
        tensor_randn(eps, rng_key(seed, (uint64_t)b), 1.0f);
        float *t = dod_malloc(sizeof(float) * (size_t)m, "timesteps");
        for (int64_t k = 0; k < m; k++) t[k] = (float)(t_fixed >= 0 ? t_fixed : ((b + k) * 997 + 13) % 1000);
        Tensor *zt = pretrain_add_noise(c->abar, z0, eps, t);
        int64_t ctx_shape[3] = {m, 1, unet->cfg.cross_attention_dim[0]};
        Tensor *ctx = tensor_zeros(3, ctx_shape);
        Tensor *pred = unet_forward(unet, zt, t, ctx, NULL);
        Tensor *target = pretrain_unet_target(c->pred, c->abar, z0, eps, t);
        int64_t per = z0->numel / m;
        for (int64_t k = 0; k < m; k++) {
            double a = c->abar[(int)t[k]];
            double lin = sqrt(1 - a) / (a * var + 1 - a);
            for (int64_t i = k * per; i < (k + 1) * per; i++) {
                double e = tensor_data_f32(eps)[i], p = as_eps(c, a, tensor_data_f32(pred)[i], tensor_data_f32(zt)[i]);
                se += (p - e) * (p - e);
                double o = tensor_data_f32(pred)[i] - tensor_data_f32(target)[i];
                seo += o * o;
                se0 += e * e;
                double l = lin * tensor_data_f32(zt)[i];
                sel += (l - e) * (l - e);
            }
        }
        free(t);
        ag_step_reset();
    }
    ag_set_grad_enabled(prev);
    if (zero_mse) *zero_mse = se0 / cnt;
    if (linear_mse) *linear_mse = sel / cnt;
    if (obj_mse) *obj_mse = seo / cnt;
    return se / cnt;
}

static bool file_exists(const char *p) {
    struct stat sb;
    return stat(p, &sb) == 0;
}

void pretrain_unet(const PretrainOptions *o, PretrainReport *rep, ParamStore **ps_out) {
    const char *who = "pretrain unet";
    check_options(o, who);
    DOD_CHECK(o->vae_dir, who, "no trained VAE given (--vae DIR)");
    DOD_CHECK(o->high_t_frac >= 0 && o->high_t_frac <= 1 && o->high_t_from >= 0 && o->high_t_from < 1000, who,
              "high-t fraction %g / from %d out of range", o->high_t_frac, o->high_t_from);
    memset(rep, 0, sizeof *rep);
    double t0 = dod_now_seconds();
    Vae *vae = vae_load(o->vae_dir, DT_F32, NULL);
    char *ucfg_path = part_config_path(o->config_dir, "unet", "config.json");
    char *scfg_path = part_config_path(o->config_dir, "scheduler", "scheduler_config.json");
    char err[SD_CONFIG_ERR_LEN];
    Unet unet = {0};
    if (sd_unet_config_load(ucfg_path, &unet.cfg, err) != 0) dod_fatal(who, "%s", err);
    SdSchedulerConfig sched;
    if (sd_scheduler_config_load(scfg_path, &sched, err) != 0) dod_fatal(who, "%s", err);
    DOD_CHECK((sched.prediction_type == SD_PRED_EPSILON || sched.prediction_type == SD_PRED_V) &&
                  sched.num_train_timesteps == 1000,
              who, "%s: only epsilon or v_prediction with 1000 steps is pretrained here (got %s, %d)", scfg_path,
              sd_prediction_name(sched.prediction_type), sched.num_train_timesteps);
    DOD_CHECK(unet.cfg.in_channels == vae->cfg.latent_channels, who, "%s: in_channels %d != the VAE's latent_channels %d",
              ucfg_path, unet.cfg.in_channels, vae->cfg.latent_channels);
    double abar[1000];
    sd_scheduler_alphas_cumprod(&sched, abar);
    LatentCtx lc = {vae, vae->cfg.scaling_factor, abar, sched.prediction_type};

    SdTensorTable table = {0};
    sd_unet_tensor_table(&unet.cfg, &table);
    ParamStore *ps = pretrain_init_params(&table, rng_key(o->seed, rng_hash_string("unet")));
    unet.net = (SdNet){.ps = ps, .prefix = ""};
    fprintf(stderr, "%s: %s, %lld parameters, VAE %s (scaling_factor %g), %d training images\n", who, ucfg_path,
            (long long)params_numel(ps, true), o->vae_dir, lc.sf, o->train->n);

    const PretrainImages *eval_set = o->val && o->val->n > 0 ? o->val : o->train;
    Tensor *eval_crops = pretrain_grid_crops(eval_set, o->crop, o->eval_per_image);
    uint64_t eval_seed = rng_key(o->seed, rng_hash_string("unet eval noise"));
    double init_mse = unet_eval(&unet, &lc, eval_crops, o->batch, -1, eval_seed, NULL, NULL, &rep->obj_mse_init);
    fprintf(stderr, "%s: held-out eps-MSE over t before training %.4f\n", who, init_mse);

    Trainer tr;
    trainer_init(&tr, ps, o, "unet");
    trainer_scalar(&tr, "heldout_eps_mse", 0, init_mse);
    uint64_t data_key = rng_key(o->seed, rng_hash_string("unet crops"));
    uint64_t noise_key = rng_key(o->seed, rng_hash_string("unet noise"));
    int64_t ctx_shape[3] = {o->batch, 1, unet.cfg.cross_attention_dim[0]};
    float *t = dod_malloc(sizeof(float) * (size_t)o->batch, "timesteps");
    for (int step = 0; step < o->steps; step++) {
        Tensor *x = tensor_new4(o->batch, 3, o->crop, o->crop);
        uint64_t sk = rng_key(noise_key, (uint64_t)step);
        pretrain_random_crops(o->train, o->crop, rng_key(data_key, (uint64_t)step), x);
        Tensor *z0 = encode_latents(&lc, x, rng_key(sk, 1));
        KeyedRng r = keyed_rng(rng_key(sk, 2));
        int n_high = (int)(o->high_t_frac * o->batch + 0.5f);
        for (int b = 0; b < o->batch; b++)
            t[b] = (float)(b < n_high ? o->high_t_from + (int)rng_below(&r, (uint64_t)(1000 - o->high_t_from))
                                      : (int)rng_below(&r, 1000));
        Tensor *eps = tensor_like(z0);
        tensor_randn(eps, rng_key(sk, 3), 1.0f);
        Tensor *zt = pretrain_add_noise(lc.abar, z0, eps, t);
        Tensor *pred = unet_forward(&unet, zt, t, tensor_zeros(3, ctx_shape), NULL);
        trainer_step(&tr, o, step, op_mse_loss(pred, pretrain_unet_target(lc.pred, lc.abar, z0, eps, t)), who, rep);
        if (o->eval_every > 0 && (step + 1) % o->eval_every == 0 && step + 1 < o->steps) {
            double mse999 = unet_eval(&unet, &lc, eval_crops, o->batch, 999, eval_seed, NULL, NULL, NULL);
            fprintf(stderr, "%s step %d: held-out eps-MSE at t=999 %.4f\n", who, step + 1, mse999);
            trainer_scalar(&tr, "heldout_eps_mse_t999", step + 1, mse999);
        }
    }
    free(t);
    double final_mse = unet_eval(&unet, &lc, eval_crops, o->batch, -1, eval_seed, NULL, NULL, &rep->obj_mse);
    rep->eps_mse_999 = unet_eval(&unet, &lc, eval_crops, o->batch, 999, eval_seed, &rep->eps_mse_zero,
                                 &rep->eps_mse_linear, NULL);
    trainer_scalar(&tr, "heldout_eps_mse", o->steps, final_mse);
    trainer_scalar(&tr, "heldout_eps_mse_t999", o->steps, rep->eps_mse_999);
    trainer_free(&tr);
    rep->eps_mse_init = init_mse;
    rep->eps_mse = final_mse;
    rep->seconds = dod_now_seconds() - t0;
    fprintf(stderr,
            "%s: held-out objective MSE over t %.4f (was %.4f), eps-MSE over t %.4f (was %.4f); eps-MSE at t=999: "
            "UNet %.4f, zero predictor %.4f, linear predictor %.4f; %.1f s\n",
            who, rep->obj_mse, rep->obj_mse_init, final_mse, init_mse, rep->eps_mse_999, rep->eps_mse_zero, rep->eps_mse_linear, rep->seconds);
    tensor_free(eval_crops);

    char dir[1200];
    snprintf(dir, sizeof dir, "%s/unet", o->out_dir);
    char *text = pretrain_read_text(ucfg_path);
    pretrain_save_part(dir, ps, &table, text);
    free(text);
    snprintf(dir, sizeof dir, "%s/scheduler", o->out_dir);
    char *stext = pretrain_read_text(scfg_path);
    pretrain_save_part_text(dir, "scheduler_config.json", stext);
    free(stext);
    // A complete diffusers root: bring the frozen VAE along when the output has none.
    char vae_cfg[1200];
    snprintf(vae_cfg, sizeof vae_cfg, "%s/vae/config.json", o->out_dir);
    if (!file_exists(vae_cfg)) {
        SdTensorTable vt = {0};
        sd_vae_tensor_table(&vae->cfg, &vt);
        char *vtext = pretrain_read_text(vae->cfg.path);
        snprintf(dir, sizeof dir, "%s/vae", o->out_dir);
        pretrain_save_part(dir, vae->owned_ps, &vt, vtext);
        free(vtext);
        sd_table_free(&vt);
    }
    fprintf(stderr, "%s: wrote %s/unet and %s/scheduler\n", who, o->out_dir, o->out_dir);
    free(ucfg_path);
    free(scfg_path);
    sd_table_free(&table);
    vae_free(vae);
    if (ps_out) *ps_out = ps;
    else params_free(ps);
}
