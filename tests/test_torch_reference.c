// The engine against PyTorch autograd on a small composite graph (scripts/make_autograd_fixture.py):
// conv -> group norm -> SiLU -> attention -> linear -> MSE. Output, loss, every gradient, the
// clipped gradient norms and the parameters after two AdamW steps must match the reference to
// max abs error <= 1e-5 * max(1, max |reference|) in f32.
#include <string.h>

#include "autograd/optim.h"
#include "autograd/params.h"
#include "layers/safetensors.h"
#include "tests/check.h"

static ParamStore *ps;
static const char *PARAM_NAMES[] = {"conv.weight",      "conv.bias",        "norm.weight",        "norm.bias",
                                    "attn.to_q.weight", "attn.to_k.weight", "attn.to_v.weight",   "attn.to_out.weight",
                                    "attn.to_out.bias", "head.weight",      "head.bias"};
#define N_PARAMS (int)(sizeof PARAM_NAMES / sizeof PARAM_NAMES[0])

static ParamStore *fixture;  // every tensor of the fixture file, owned f32 copies

static Tensor *load(const char *name) { return params_require(fixture, name, "test_torch_reference fixture"); }

static void expect_close(const char *what, const float *got, Tensor *ref) {
    double scale;
    double err = max_abs_diff(got, tensor_f32(ref), ref->numel, &scale);
    double tol = 1e-5 * (scale > 1 ? scale : 1);
    CHECK(err <= tol, "%s: max abs error %.3g > %.3g", what, err, tol);
    printf("%-28s max abs err %.3g (tol %.3g)\n", what, err, tol);
}

static Tensor *P(const char *n) { return params_require(ps, n, "test_torch_reference"); }

static Tensor *forward(Tensor *x, Tensor *target, Tensor **out) {
    Tensor *h = op_conv2d(x, P("conv.weight"), P("conv.bias"), 1, 1);
    h = op_group_norm(h, 4, P("norm.weight"), P("norm.bias"), 1e-5f);
    h = op_silu(h);
    int64_t n = h->shape[0], c = h->shape[1], hw = h->shape[2] * h->shape[3];
    int perm[] = {0, 2, 3, 1};
    Tensor *t = op_permute(h, perm);
    int64_t tok_shape[] = {n, hw, c};
    t = op_reshape(t, 3, tok_shape);
    Tensor *q = op_linear(t, P("attn.to_q.weight"), NULL);
    Tensor *k = op_linear(t, P("attn.to_k.weight"), NULL);
    Tensor *v = op_linear(t, P("attn.to_v.weight"), NULL);
    Tensor *a = op_attention(q, k, v, 2, 0.0f);
    a = op_linear(a, P("attn.to_out.weight"), P("attn.to_out.bias"));
    *out = op_linear(a, P("head.weight"), P("head.bias"));
    return op_mse_loss(*out, target);
}

int main(void) {
    char err[ST_ERR_LEN];
    const char *path = DOD_SOURCE_DIR "/tests/fixtures/autograd/composite.safetensors";
    if (!(fixture = safetensors_load_store(path, DT_F32, err))) dod_fatal("test_torch_reference", "%s", err);
    ps = params_new();
    for (int i = 0; i < N_PARAMS; i++) {  // the parameters under their own names (copies: AdamW writes them)
        Tensor *src = load(strcat(strcpy(err, "param."), PARAM_NAMES[i]));
        Tensor *t = tensor_new_persistent(PARAM_NAMES[i], src->ndim, src->shape, DT_F32);
        memcpy(t->data, src->data, sizeof(float) * (size_t)t->numel);
        params_add(ps, PARAM_NAMES[i], t)->requires_grad = true;
    }
    Tensor *x = load("input.x"), *target = load("input.target");
    x->requires_grad = true;

    Tensor *out;
    Tensor *loss = forward(x, target, &out);
    ag_backward(loss);
    char key[128];
    expect_close("out", tensor_f32(out), load("out"));
    expect_close("loss", tensor_f32(loss), load("loss"));
    expect_close("grad input.x", x->grad, load("grad.input.x"));
    for (int i = 0; i < N_PARAMS; i++) {
        snprintf(key, sizeof key, "grad.%s", PARAM_NAMES[i]);
        expect_close(key, P(PARAM_NAMES[i])->grad, load(key));
    }

    // Two AdamW steps with clipping at 0.25, as the fixture did.
    Tensor *train[N_PARAMS];
    int n = params_trainable(ps, train, N_PARAMS);
    AdamWConfig cfg = {1e-2f, 0.9f, 0.999f, 1e-8f, 1e-2f};
    AdamW *opt = adamw_new(train, n, cfg);
    float norms[2];
    for (int step = 0; step < 2; step++) {
        if (step > 0) {
            params_zero_grad(ps);
            ag_step_reset();
            ag_backward(forward(x, target, &out));
        }
        norms[step] = (float)clip_grad_norm(train, n, 0.25);
        adamw_step(opt, 1e-2f);
    }
    expect_close("grad norms", norms, load("grad_norms"));
    for (int i = 0; i < N_PARAMS; i++) {
        snprintf(key, sizeof key, "after2.%s", PARAM_NAMES[i]);
        expect_close(key, tensor_f32(P(PARAM_NAMES[i])), load(key));
    }
    adamw_free(opt);
    params_free(ps);
    params_free(fixture);
    return check_summary();
}
