// OSEDiff's VSD regulariser on the DOD model's shared UNet (see dod_vsd.h).
#include "layers/dod_vsd.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/tape.h"
#include "layers/dod_model_util.h"
#include "layers/model_weights.h"

struct DodVsd {
    DodModel *m;
    DodVsdConfig cfg;
    ParamStore *params;   // CKPT_REGULARISER_PREFIX + the adapters' names (owned)
    LoraSet *lora;        // attached to m as m->regulariser_lora
    double *abar;         // alphas_cumprod[0 .. T-1] of m's scheduler (double)
    int T;
    Tensor *latent;       // sg(x) of the last generator term (persistent, x's device and dtype; NULL before)
};

DodVsd *dod_vsd_create(DodModel *m, const DodVsdConfig *c, char *err, size_t errlen) {
    int T = m->sched.num_train_timesteps;
    bool bad = true;
    if (m->cfg.stage != 1) snprintf(err, errlen, "the VSD regulariser is a stage-1 term; this is a stage-%d model", m->cfg.stage);
    else if (!m->negative_prompt)
        snprintf(err, errlen, "the VSD regulariser's teacher needs the negative prompt's embedding, and the model has "
                              "none ([model] prompt_embedding is a file without negative_prompt_embeds and [model] "
                              "negative_prompt is empty): set negative_prompt (encoded with the base's text encoder), "
                              "or write the file with dod-encode-prompt --negative-prompt");
    else if (m->regulariser_lora) snprintf(err, errlen, "the model already has a VSD regulariser attached");
    else if (c->t_min < 0 || c->t_max > T || c->t_min >= c->t_max)
        snprintf(err, errlen, "VSD timesteps [%d, %d): need 0 <= vsd_t_min < vsd_t_max <= %d (the scheduler's "
                              "num_train_timesteps)", c->t_min, c->t_max, T);
    else if (c->lora_rank <= 0 || !(c->lora_alpha > 0) || !isfinite(c->cfg))
        snprintf(err, errlen, "VSD regulariser LoRA rank %d and alpha %g must be positive and cfg_vsd %g finite",
                 c->lora_rank, c->lora_alpha, c->cfg);
    else bad = false;
    if (bad) return NULL;
    DodVsd *v = dod_calloc(sizeof *v, "VSD regulariser");
    v->m = m;
    v->cfg = *c;
    v->T = T;
    v->abar = dod_malloc(sizeof(double) * (size_t)T, "alphas_cumprod");
    sd_scheduler_alphas_cumprod(&m->sched, v->abar);
    v->params = params_new();
    v->lora = lora_set_new();
    lora_add_targets(v->lora, m->unet->net.ps, m->unet->net.prefix, LORA_TARGETS_UNET_OSEDIFF, v->params,
                     CKPT_REGULARISER_PREFIX, c->lora_rank, c->lora_alpha, c->seed);
    if (m->device != DEV_CPU) params_to_device(v->params, m->device);
    m->regulariser_lora = v->lora;
    return v;
}

void dod_vsd_free(DodVsd *v) {
    if (!v) return;
    if (v->m->regulariser_lora == v->lora) {
        v->m->regulariser_lora = NULL;
        dod_model_set_unet_adapters(v->m, DOD_UNET_GENERATOR);
    }
    lora_set_free(v->lora);
    params_free(v->params);
    tensor_free(v->latent);
    free(v->abar);
    free(v);
}

ParamStore *dod_vsd_params(DodVsd *v) { return v->params; }

// ---- pieces -------------------------------------------------------------------------------------------
// vals[0 .. n-1] as an [n, 1, 1, 1] f32 arena tensor on `device` (=): per-sample factors that broadcast.
static Tensor *per_sample(const double *vals, int64_t n, Device device) {
    Tensor *t = tensor_new4(n, 1, 1, 1);
    for (int64_t i = 0; i < n; i++) ((float *)t->data)[i] = (float)vals[i];
    return device == DEV_CPU ? t : tensor_to_device(t, device);
}

// Per sample i with timestep t[i]: sqrt(a), sqrt(1 - a) (the forward process) and the x0 coefficients
// x0 = cz x_t - cp p of the scheduler's prediction type (see dod_vsd.h).
typedef struct {
    Tensor *sa, *sb, *cz, *cp;
} Coefficients;

static Coefficients coefficients(const DodVsd *v, const int *t, int64_t n, Device device) {
    double *sa = dod_malloc(sizeof(double) * 4 * (size_t)n, "VSD coefficients"), *sb = sa + n, *cz = sb + n, *cp = cz + n;
    bool eps = v->m->sched.prediction_type == SD_PRED_EPSILON;   // else v_prediction (dod_model_create checks)
    for (int64_t i = 0; i < n; i++) {
        DOD_CHECK(t[i] >= 0 && t[i] < v->T, "VSD regulariser", "timestep %d of sample %ld is outside [0, %d)", t[i],
                  (long)i, v->T);
        double a = v->abar[t[i]];
        sa[i] = sqrt(a);
        sb[i] = sqrt(1.0 - a);
        cz[i] = eps ? 1.0 / sqrt(a) : sqrt(a);
        cp[i] = eps ? sqrt(1.0 - a) / sqrt(a) : sqrt(1.0 - a);
    }
    Coefficients c = {per_sample(sa, n, device), per_sample(sb, n, device), per_sample(cz, n, device),
                      per_sample(cp, n, device)};
    free(sa);
    return c;
}

// sqrt(a) x + sqrt(1 - a) noise (no gradient is meant to flow: callers pass sg(x)).
static Tensor *add_noise(const Coefficients *c, Tensor *x, Tensor *noise) {
    return op_add(op_mul(x, c->sa), op_mul(noise, c->sb));
}

// The x0 estimate from the noisy latent and the UNet's output.
static Tensor *x0_estimate(const Coefficients *c, Tensor *x_t, Tensor *pred) {
    return op_sub(op_mul(x_t, c->cz), op_mul(pred, c->cp));
}

// t[0 .. n-1] repeated `times` times as the UNet's float timesteps (arena).
static const float *timesteps(const int *t, int64_t n, int times) {
    float *ts = arena_alloc(sizeof(float) * (size_t)(n * times), "VSD timesteps");
    for (int k = 0; k < times; k++)
        for (int64_t i = 0; i < n; i++) ts[k * n + i] = (float)t[i];
    return ts;
}

typedef struct {
    const Unet *unet;
    const float *timesteps;
} UnetCall;

static Tensor *unet_call(void *ctx, Tensor *const *in) {
    const UnetCall *c = ctx;
    return unet_forward(c->unet, in[0], c->timesteps, in[1], NULL);
}

// The UNet with `which` adapters on sample / context, grad mode off, keeping only its output (=).
static Tensor *unet_no_grad(DodModel *m, DodUnetAdapters which, Tensor *sample, const float *ts, Tensor *context) {
    dod_model_set_unet_adapters(m, which);
    UnetCall *c = arena_alloc(sizeof *c, "VSD UNet call");   // before the call: the arena is rewound after it
    *c = (UnetCall){m->unet, ts};
    Tensor *in[2] = {sample, context};
    return ag_run_keeping_output(unet_call, c, 2, in);
}

// x's shape and the noise's, the noise on x's device (=, a copy when it was on the host).
static Tensor *check_inputs(const DodVsd *v, Tensor *x, Tensor *noise, const char *who) {
    DOD_CHECK(x->ndim == 4 && x->shape[1] == v->m->unet->cfg.in_channels, who, "latent %s: expected [N, %d, h, w]",
              shape_str(x), v->m->unet->cfg.in_channels);
    DOD_CHECK(tensor_same_shape(x, noise), who, "noise %s, the latent is %s", shape_str(noise), shape_str(x));
    return noise->device == x->device ? noise : tensor_to_device(noise, x->device);
}

// v->latent = sg(x), (re)allocated for x's shape, dtype and device.
static void keep_latent(DodVsd *v, const Tensor *x) {
    Tensor *k = v->latent;
    if (!k || !tensor_same_shape(k, x) || k->dtype != x->dtype || k->device != x->device) {
        tensor_free(k);
        k = v->latent = tensor_new_persistent("vsd.latent", x->ndim, x->shape, x->dtype);
        if (x->device != DEV_CPU) tensor_move_to(k, x->device);
    }
    device_copy(k->data, k->device, x->data, x->device, (size_t)x->numel * dtype_size(x->dtype));
}

// ---- the two terms ------------------------------------------------------------------------------------
Tensor *dod_vsd_loss(DodVsd *v, Tensor *x, Tensor *noise, const int *t) {
    DodModel *m = v->m;
    noise = check_inputs(v, x, noise, "dod_vsd_loss");
    int64_t n = x->shape[0];
    keep_latent(v, x);
    bool prev = ag_set_grad_enabled(false);
    Tensor *xd = op_scale(x, 1.0f);   // sg(x): a copy made without the tape
    Coefficients c = coefficients(v, t, n, x->device);
    Tensor *x_t = add_noise(&c, xd, noise);
    Tensor *positive = dod_repeat_constant(m->prompt, n), *negative = dod_repeat_constant(m->negative_prompt, n);
    Tensor *x0_reg = x0_estimate(&c, x_t, unet_no_grad(m, DOD_UNET_REGULARISER, x_t, timesteps(t, n, 1), positive));
    // The teacher's two prompts in one call: [x_t, x_t] with [negative, positive] (OSEDiff's order).
    Tensor *pair[2] = {x_t, x_t}, *contexts[2] = {negative, positive}, *halves[2];
    Tensor *both = unet_no_grad(m, DOD_UNET_FROZEN, op_concat(pair, 2, 0), timesteps(t, n, 2), op_concat(contexts, 2, 0));
    dod_model_set_unet_adapters(m, DOD_UNET_GENERATOR);   // the generator's backward may recompute its blocks
    op_chunk(both, 2, 0, halves);
    Tensor *guided = op_add(halves[0], op_scale(op_sub(halves[1], halves[0]), v->cfg.cfg));
    Tensor *x0_fix = x0_estimate(&c, x_t, guided);
    // w_i = mean |x_i - x0_fix_i| per sample, as an [N, 1, 1, 1] tensor on the device; g = (x0_reg - x0_fix) / w
    Tensor **xs = arena_alloc(sizeof(Tensor *) * 3 * (size_t)n, "VSD samples"), **fs = xs + n, **ws = fs + n;
    op_chunk(xd, (int)n, 0, xs);
    op_chunk(x0_fix, (int)n, 0, fs);
    for (int64_t i = 0; i < n; i++) ws[i] = op_l1_loss(xs[i], fs[i]);
    Tensor *w = op_reshape(op_concat(ws, (int)n, 0), 4, (const int64_t[]){n, 1, 1, 1});
    Tensor *g = op_div(op_sub(x0_reg, x0_fix), w);
    Tensor *target = op_sub(xd, g);
    ag_set_grad_enabled(prev);
    return op_mse_loss(x, target);
}

Tensor *dod_vsd_diffusion_loss(DodVsd *v, Tensor *x, Tensor *noise, const int *t) {
    DodModel *m = v->m;
    noise = check_inputs(v, x, noise, "dod_vsd_diffusion_loss");
    int64_t n = x->shape[0];
    bool prev = ag_set_grad_enabled(false);
    Tensor *xd = op_scale(x, 1.0f);
    Coefficients c = coefficients(v, t, n, x->device);
    Tensor *x_t = add_noise(&c, xd, noise);
    Tensor *target = m->sched.prediction_type == SD_PRED_EPSILON ? noise : op_sub(op_mul(noise, c.sa), op_mul(xd, c.sb));
    Tensor *positive = dod_repeat_constant(m->prompt, n);
    ag_set_grad_enabled(prev);
    dod_model_set_unet_adapters(m, DOD_UNET_REGULARISER);   // until its backward has run (recomputation)
    UnetOptions uopt = {.recompute_blocks = m->cfg.recompute};
    Tensor *pred = unet_forward(m->unet, x_t, timesteps(t, n, 1), positive, &uopt);
    return op_mse_loss(pred, target);
}

// ---- keyed draws --------------------------------------------------------------------------------------
// noise (host, x's shape) and t[n] (arena, uniform in [lo, hi)) from the engine's counter-based
// generators (tensor_randn, tensor_rand_uniform) seeded with key ^ (2 term + 1) and key ^ (2 term + 2).
static void draw(const Tensor *x, uint64_t key, int term, int lo, int hi, Tensor **noise, int **t) {
    int64_t n = x->shape[0];
    *noise = tensor_new(x->ndim, x->shape, DT_F32);
    tensor_randn(*noise, key ^ (2 * (uint64_t)term + 1), 1.0f);
    Tensor *u = tensor_new(1, &n, DT_F32);
    tensor_rand_uniform(u, key ^ (2 * (uint64_t)term + 2), 0.0f, 1.0f);
    *t = arena_alloc(sizeof(int) * (size_t)n, "VSD timesteps");
    for (int64_t i = 0; i < n; i++) {
        int k = (int)(tensor_f32(u)[i] * (float)(hi - lo));   // u < 1; a float rounded up to 1 is clamped
        (*t)[i] = lo + (k < hi - lo ? k : hi - lo - 1);
    }
}

DodVsdSample dod_vsd_generator_sample(DodVsd *v, uint64_t key) {
    DodVsdSample s = {.latent = v->m->train_latent};
    DOD_CHECK(s.latent, "VSD regulariser", "the model has no train-mode latent: run its training forward first");
    int *t;
    draw(s.latent, key, 0, v->cfg.t_min, v->cfg.t_max, &s.noise, &t);
    s.t = t;
    return s;
}

DodVsdSample dod_vsd_regulariser_sample(DodVsd *v, uint64_t key) {
    DodVsdSample s = {.latent = v->latent};
    DOD_CHECK(s.latent, "VSD regulariser", "no generator term ran yet: its latent is the regulariser's input");
    int *t;
    draw(s.latent, key, 1, 0, v->T, &s.noise, &t);   // OSEDiff's diff_loss: t ~ U{0 .. T - 1}
    s.t = t;
    return s;
}
