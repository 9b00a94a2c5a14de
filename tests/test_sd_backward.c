// Backward through the SD UNet and VAE forwards (layers/unet.c, layers/vae.c), on a tiny fixture.
//
//  1. Activation recomputation: outputs and gradients (input sample and chosen weights) with
//     recompute_blocks on are bitwise equal to those without it (the recomputed block accumulates
//     into its inputs' own gradient buffers in the plain run's order), and arena_peak() of the
//     recomputing run is lower. Run first: arena_peak() is a high-water mark.
//  2. Central finite differences (f32 forwards, the weighted sum L = sum w_i out_i accumulated in
//     double) against the analytic gradient for a few entries of the input and of chosen weights
//     (evenly strided plus the entry with the largest gradient):
//         |analytic - (L(x+h) - L(x-h)) / 2h| <= 2e-3 + 2e-2 * max(|analytic|, 0.1 * max |analytic|)
//     at h = 1e-2, or, when that misses, at h = 1e-3. Two steps because the tiny fixtures' norms
//     over 4-8 channels have strong local curvature at some entries (the h = 1e-2 difference is
//     then off by its O(h^2) truncation term: measured 17.4 vs -3.62 for sd1_tiny conv_in.weight[144],
//     while h = 1e-3 gives -3.56), and h = 1e-3 alone is near the f32 rounding floor (~3e-3) at
//     others. A wrong gradient misses at both.
//
// Usage: test_sd_backward [FIXTURE_DIR]   (default: tests/fixtures/sd/sd2_tiny of the source tree)
#include <string.h>

#include "layers/sd_weights.h"
#include "layers/unet.h"
#include "layers/vae.h"
#include "tests/check.h"

#define MAX_CHOSEN 8

// The first weight of the store whose name contains `pattern` (fatal when none), made trainable.
static Tensor *choose(ParamStore *ps, const char *pattern) {
    for (int i = 0; i < params_count(ps); i++) {
        Tensor *t = params_at(ps, i);
        if (strstr(t->name, pattern)) {
            sd_tensor_make_owned(t);  // finite differences write to it
            t->requires_grad = true;
            return t;
        }
    }
    dod_fatal("test_sd_backward", "no weight matching '%s' in the fixture", pattern);
}

// ---- forwards as gradcheck functions -----------------------------------------------------------
typedef struct {
    const Unet *unet;
    const Vae *vae;
    const float *timesteps;
    Tensor *context;
    bool recompute;
} Ctx;

static Tensor *unet_fn(void *vctx, Tensor *const *in) {  // in[0] = sample; weights live in the store
    const Ctx *c = vctx;
    UnetOptions opt = {.recompute_blocks = c->recompute};
    return unet_forward(c->unet, in[0], c->timesteps, c->context, &opt);
}

static Tensor *vae_fn(void *vctx, Tensor *const *in) {  // in[0] = image; decode(mean + 0.1 logvar)
    const Ctx *c = vctx;
    VaeOptions opt = {.recompute_blocks = c->recompute};
    VaeEncoded enc;
    vae_encode(c->vae, in[0], false, &opt, &enc);
    Tensor *z = op_add(enc.mean, op_scale(enc.logvar, 0.1f));
    return vae_decode(c->vae, z, NULL, NULL, &opt);
}

// Forward + backward with fixed output weights; gradients of the n tensors copied into grads[i]
// (heap, caller frees); the output copied into *out_copy. Returns arena_peak() afterwards.
static size_t run_backward(GradcheckFn fn, Ctx *c, Tensor *const *tensors, int n, float **grads, float **out_copy) {
    for (int i = 0; i < n; i++) tensor_zero_grad(tensors[i]);
    ag_step_reset();
    Tensor *out = fn(c, tensors);
    float *seed = dod_malloc(sizeof(float) * (size_t)out->numel, "seed");
    Tensor seed_t = {.ndim = 1, .shape = {out->numel}, .numel = out->numel, .data = seed, .dtype = DT_F32};
    tensor_randn(&seed_t, 7, 1.0f);
    ag_backward_from(out, seed);
    free(seed);
    *out_copy = dod_malloc(sizeof(float) * (size_t)out->numel, "output copy");
    memcpy(*out_copy, out->data, sizeof(float) * (size_t)out->numel);
    for (int i = 0; i < n; i++) {
        grads[i] = dod_malloc(sizeof(float) * (size_t)tensors[i]->numel, "gradient copy");
        CHECK(tensors[i]->grad != NULL, "%s received no gradient", tensors[i]->name);
        if (tensors[i]->grad) memcpy(grads[i], tensors[i]->grad, sizeof(float) * (size_t)tensors[i]->numel);
        else memset(grads[i], 0, sizeof(float) * (size_t)tensors[i]->numel);
    }
    size_t peak = arena_peak();
    ag_step_reset();
    return peak;
}

// Recompute on vs off: same outputs, same gradients; returns (peak_on, peak_off) via pointers.
static void compare_recompute(const char *what, GradcheckFn fn, Ctx *c, Tensor *const *tensors, int n,
                              size_t *peak_on, size_t *peak_off) {
    float *g_on[MAX_CHOSEN], *g_off[MAX_CHOSEN], *out_on, *out_off;
    c->recompute = true;
    *peak_on = run_backward(fn, c, tensors, n, g_on, &out_on);
    c->recompute = false;
    *peak_off = run_backward(fn, c, tensors, n, g_off, &out_off);
    ag_step_reset();
    Tensor *probe = fn(c, tensors);
    CHECK(memcmp(out_on, out_off, sizeof(float) * (size_t)probe->numel) == 0, "%s: outputs differ with recomputation",
          what);
    ag_step_reset();
    for (int i = 0; i < n; i++) {
        double scale;
        double diff = max_abs_diff(g_on[i], g_off[i], (long)tensors[i]->numel, &scale);
        CHECK(memcmp(g_on[i], g_off[i], sizeof(float) * (size_t)tensors[i]->numel) == 0,
              "%s: gradient of %s differs by %.3g (max|g| %.3g) with recomputation", what, tensors[i]->name, diff, scale);
        printf("%s: %-55s recompute vs plain max diff %.3g (max|g| %.3g)\n", what, tensors[i]->name, diff, scale);
        free(g_on[i]);
        free(g_off[i]);
    }
    free(out_on);
    free(out_off);
}

// L(inputs) = sum_i w_i out_i in double, no tape.
static double weighted_sum(GradcheckFn fn, Ctx *c, Tensor *const *in, const float *w) {
    bool prev = ag_set_grad_enabled(false);
    Tensor *out = fn(c, in);
    const float *o = tensor_f32(out);
    double L = 0;
    for (int64_t i = 0; i < out->numel; i++) L += (double)o[i] * w[i];
    ag_set_grad_enabled(prev);
    ag_step_reset();
    return L;
}

static double central_difference(GradcheckFn fn, Ctx *c, Tensor *const *in, const float *w, float *x, double h) {
    float orig = *x;
    *x = orig + (float)h;
    double lp = weighted_sum(fn, c, in, w);
    *x = orig - (float)h;
    double lm = weighted_sum(fn, c, in, w);
    double step = (double)(orig + (float)h) - (double)(orig - (float)h);  // the step f32 really took
    *x = orig;
    return (lp - lm) / step;
}

// Checks `per_tensor` entries of every tensor (see the header for the rule); one CHECK per entry.
static void finite_differences(const char *what, GradcheckFn fn, Ctx *c, Tensor *const *in, int n, int per_tensor) {
    ag_step_reset();
    bool prev = ag_set_grad_enabled(false);
    int64_t n_out = fn(c, in)->numel;
    ag_set_grad_enabled(prev);
    float *w = dod_malloc(sizeof(float) * (size_t)n_out, "output weights");
    Tensor w_t = {.ndim = 1, .shape = {n_out}, .numel = n_out, .data = w, .dtype = DT_F32};
    tensor_rand_uniform(&w_t, 99, -1.0f, 1.0f);
    for (int i = 0; i < n; i++) tensor_zero_grad(in[i]);
    ag_step_reset();
    ag_backward_from(fn(c, in), w);
    for (int i = 0; i < n; i++) {
        Tensor *t = in[i];
        float *g = dod_malloc(sizeof(float) * (size_t)t->numel, "gradient copy");
        memcpy(g, tensor_grad(t), sizeof(float) * (size_t)t->numel);
        int64_t arg = 0;
        double gmax = 0;
        for (int64_t j = 0; j < t->numel; j++)
            if (fabs(g[j]) > gmax) gmax = fabs(g[arg = j]);
        for (int k = 0; k <= per_tensor; k++) {
            int64_t j = k < per_tensor ? k * (t->numel / per_tensor) + t->numel / (2 * per_tensor) : arg;
            double a = g[j], tol = 2e-3 + 2e-2 * fmax(fabs(a), 0.1 * gmax);
            double num = central_difference(fn, c, in, w, (float *)t->data + j, 1e-2), h = 1e-2;
            if (!(fabs(a - num) <= tol)) {
                num = central_difference(fn, c, in, w, (float *)t->data + j, 1e-3);
                h = 1e-3;
            }
            CHECK(fabs(a - num) <= tol, "%s: d/d %s[%ld]: analytic %.6g, finite difference %.6g (h %g, tol %.3g)", what,
                  t->name, (long)j, a, num, h, tol);
        }
        free(g);
    }
    free(w);
    ag_step_reset();
    printf("%s: finite differences checked (%d tensors)\n", what, n);
}

int main(int argc, char **argv) {
    char fix[1024], path[1100];
    snprintf(fix, sizeof fix, "%s", argc > 1 ? argv[1] : DOD_SOURCE_DIR "/tests/fixtures/sd/sd2_tiny");
    snprintf(path, sizeof path, "%s/model/unet", fix);
    Unet *unet = unet_load(path, DT_F32, NULL);
    snprintf(path, sizeof path, "%s/model/vae", fix);
    Vae *vae = vae_load(path, DT_F32, NULL);

    // Small inputs of the fixture's widths (values are what matters for the gradients, not sizes).
    int64_t sshape[4] = {2, unet->cfg.in_channels, 8, 8};
    Tensor *sample = test_input("sample", 4, sshape, 11, 1.0f, true);
    int64_t cshape[3] = {2, 5, unet->cfg.cross_attention_dim[0]};
    Tensor *context = test_input("context", 3, cshape, 12, 1.0f, false);
    int64_t ishape[4] = {1, vae->cfg.in_channels, 16, 16};
    Tensor *image = test_input("image", 4, ishape, 13, 0.5f, true);
    float timesteps[2] = {999.0f, 250.0f};
    Ctx ctx = {.unet = unet, .vae = vae, .timesteps = timesteps, .context = context};

    const char *unet_picks[] = {"conv_in.weight", "time_embedding.linear_1.weight", "attn1.to_q.weight",
                                "attn2.to_k.weight", "ff.net.0.proj.weight", "up_blocks.1.resnets.0.conv1.weight",
                                "conv_out.bias"};
    Tensor *unet_in[MAX_CHOSEN] = {sample};
    int n_unet = 1;
    for (size_t i = 0; i < sizeof unet_picks / sizeof *unet_picks; i++) unet_in[n_unet++] = choose(unet->owned_ps, unet_picks[i]);
    const char *vae_picks[] = {"encoder.conv_in.weight", "encoder.mid_block.attentions.0.to_q.weight",
                               "conv_shortcut.weight", "post_quant_conv.weight",
                               "decoder.up_blocks.1.resnets.0.conv1.weight", "decoder.conv_out.bias"};
    Tensor *vae_in[MAX_CHOSEN] = {image};
    int n_vae = 1;
    for (size_t i = 0; i < sizeof vae_picks / sizeof *vae_picks; i++) vae_in[n_vae++] = choose(vae->owned_ps, vae_picks[i]);

    // 1. recomputation (first: arena_peak() only grows)
    size_t peak_on, peak_off;
    compare_recompute("unet", unet_fn, &ctx, unet_in, n_unet, &peak_on, &peak_off);
    printf("unet arena peak: recompute %.2f MiB, plain %.2f MiB\n", peak_on / 1048576.0, peak_off / 1048576.0);
    CHECK(peak_off > peak_on, "recomputation did not lower the arena peak (%zu vs %zu bytes)", peak_on, peak_off);
    compare_recompute("vae", vae_fn, &ctx, vae_in, n_vae, &peak_on, &peak_off);

    // 2. finite differences
    ctx.recompute = false;
    finite_differences("unet", unet_fn, &ctx, unet_in, n_unet, 4);
    finite_differences("vae", vae_fn, &ctx, vae_in, n_vae, 4);
    ctx.recompute = true;
    finite_differences("unet recompute", unet_fn, &ctx, unet_in, n_unet, 2);

    unet_free(unet);
    vae_free(vae);
    return check_summary();
}
