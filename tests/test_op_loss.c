// op_mse_loss, op_l1_loss and op_ssim: forward against double references (SSIM also against
// scikit-image's Gaussian SSIM, which shares pytorch_msssim's window and valid region), finite-
// difference gradients for both arguments, and shape errors.
#include "tests/check.h"
#include "tests/op_test_util.h"

// Direct (non-separable) SSIM in double: 11 x 11 window w_i w_j, valid region, population stats.
static double ref_ssim(const float *x, const float *y, int64_t planes, int64_t H, int64_t W, double range) {
    double w[11], ws = 0;
    for (int a = 0; a < 11; a++) ws += (w[a] = exp(-(a - 5) * (a - 5) / (2 * 1.5 * 1.5)));
    for (int a = 0; a < 11; a++) w[a] /= ws;
    double C1 = pow(0.01 * range, 2), C2 = pow(0.03 * range, 2), total = 0;
    int64_t Ho = H - 10, Wo = W - 10;
    for (int64_t p = 0; p < planes; p++)
        for (int64_t i = 0; i < Ho; i++)
            for (int64_t j = 0; j < Wo; j++) {
                double m1 = 0, m2 = 0, e11 = 0, e22 = 0, e12 = 0;
                for (int a = 0; a < 11; a++)
                    for (int b = 0; b < 11; b++) {
                        double k = w[a] * w[b], u = x[(p * H + i + a) * W + j + b], v = y[(p * H + i + a) * W + j + b];
                        m1 += k * u; m2 += k * v; e11 += k * u * u; e22 += k * v * v; e12 += k * u * v;
                    }
                double s11 = e11 - m1 * m1, s22 = e22 - m2 * m2, s12 = e12 - m1 * m2;
                total += (2 * m1 * m2 + C1) * (2 * s12 + C2) / ((m1 * m1 + m2 * m2 + C1) * (s11 + s22 + C2));
            }
    return total / (planes * Ho * Wo);
}

static Tensor *mse_fn(void *ctx, Tensor *const *in) { (void)ctx; return op_mse_loss(in[0], in[1]); }
static Tensor *l1_fn(void *ctx, Tensor *const *in) { (void)ctx; return op_l1_loss(in[0], in[1]); }
static Tensor *ssim_fn(void *ctx, Tensor *const *in) { return op_ssim(in[0], in[1], *(float *)ctx); }

static void mse_bad(void *ctx) {
    (void)ctx;
    int64_t a[] = {2, 3}, b[] = {3, 2};
    op_mse_loss(test_input("p", 2, a, 1, 1, false), test_input("t", 2, b, 2, 1, false));
}
static void ssim_small(void *ctx) {
    (void)ctx;
    int64_t a[] = {1, 1, 10, 12};
    op_ssim(test_input("x", 4, a, 1, 1, false), test_input("y", 4, a, 2, 1, false), 1.0f);
}
static void ssim_mismatch(void *ctx) {
    (void)ctx;
    int64_t a[] = {1, 3, 16, 16}, b[] = {1, 1, 16, 16};
    op_ssim(test_input("x", 4, a, 1, 1, false), test_input("y", 4, b, 2, 1, false), 1.0f);
}

static void ssim_forward(int64_t n, int64_t c, int64_t h, int64_t w, float range, float noise) {
    int64_t s[] = {n, c, h, w};
    Tensor *x = test_input("x", 4, s, 80, 0.5f * range, false), *y = test_input("y", 4, s, 81, noise * range, false);
    float *yd = tensor_data_f32(y);
    for (int64_t i = 0; i < y->numel; i++) yd[i] += tensor_data_f32(x)[i];  // y = x + noise
    double ref = ref_ssim(tensor_data_f32(x), yd, n * c, h, w, range);
    Tensor *v = op_ssim(x, y, range);
    char what[96];
    snprintf(what, sizeof what, "ssim %s range %g vs direct 2-d double", shape_str(x), range);
    CHECK_NEAR(tensor_data_f32(v)[0], ref, 1e-6, what);
    Tensor *same = op_ssim(x, x, range);
    CHECK_NEAR(tensor_data_f32(same)[0], 1.0, 1e-6, "ssim(x, x) == 1");
    tensor_free(x);
    tensor_free(y);
    ag_step_reset();
}

int main(void) {
    // MSE / L1 forward.
    {
        int64_t s[] = {3, 5, 7};
        Tensor *p = test_input("p", 3, s, 1, 1, false), *t = test_input("t", 3, s, 2, 1, false);
        double se = 0, ae = 0;
        for (int64_t i = 0; i < p->numel; i++) {
            double d = (double)tensor_data_f32(p)[i] - tensor_data_f32(t)[i];
            se += d * d;
            ae += fabs(d);
        }
        CHECK_NEAR(tensor_data_f32(op_mse_loss(p, t))[0], se / p->numel, 1e-6, "mse vs double");
        CHECK_NEAR(tensor_data_f32(op_l1_loss(p, t))[0], ae / p->numel, 1e-6, "l1 vs double");
        CHECK_NEAR(tensor_data_f32(op_l1_loss(p, p))[0], 0.0, 0, "l1(p, p) == 0");
        tensor_free(p);
        tensor_free(t);
        ag_step_reset();
    }
    // L1 at p == t has gradient 0 (sign(0) = 0), like torch.
    {
        int64_t s[] = {4};
        Tensor *p = test_input("p", 1, s, 3, 1, true), *t = test_input("t", 1, s, 4, 1, true);
        tensor_data_f32(t)[2] = tensor_data_f32(p)[2];
        ag_backward(op_l1_loss(p, t));
        CHECK(p->grad[2] == 0.0f && t->grad[2] == 0.0f, "l1 grad at p == t: %g %g", p->grad[2], t->grad[2]);
        CHECK_NEAR(p->grad[0], tensor_data_f32(p)[0] > tensor_data_f32(t)[0] ? 0.25 : -0.25, 0, "l1 grad p[0]");
        CHECK_NEAR(t->grad[0], -p->grad[0], 0, "l1 grad t[0] = -p[0]");
        tensor_free(p);
        tensor_free(t);
        ag_step_reset();
    }
    // SSIM forward: direct 2-d reference, several shapes and ranges.
    ssim_forward(1, 1, 11, 11, 1.0f, 0.1f);   // single valid pixel
    ssim_forward(2, 3, 16, 13, 2.0f, 0.2f);   // [-1, 1]-style data range 2 (the DOD loss)
    ssim_forward(1, 2, 40, 37, 255.0f, 0.05f);
    // SSIM vs scikit-image (structural_similarity, gaussian_weights, sigma 1.5, population stats) on a
    // photo crop plus noise; skimage filters in float64, we in double from f32 inputs.
    {
        static double shp[4], xv[864], yv[864], ref[1];
        fixture_read("ssim.txt", "shape", shp, 4);
        int n = fixture_read("ssim.txt", "x", xv, 864);
        fixture_read("ssim.txt", "y", yv, 864);
        fixture_read("ssim.txt", "ssim", ref, 1);
        int64_t s[] = {(int64_t)shp[0], (int64_t)shp[1], (int64_t)shp[2], (int64_t)shp[3]};
        Tensor *x = tensor_new_persistent("x", 4, s, DT_F32), *y = tensor_new_persistent("y", 4, s, DT_F32);
        CHECK(x->numel == n, "ssim fixture has %d values for %s", n, shape_str(x));
        for (int i = 0; i < n; i++) {
            tensor_data_f32(x)[i] = (float)xv[i];
            tensor_data_f32(y)[i] = (float)yv[i];
        }
        CHECK_NEAR(tensor_data_f32(op_ssim(x, y, 1.0f))[0], ref[0], 1e-6, "ssim vs skimage fixture");
        tensor_free(x);
        tensor_free(y);
        ag_step_reset();
    }
    // Gradients.
    int64_t shapes[][3] = {{7}, {2, 3, 5}, {1}};
    int nd[] = {1, 3, 1};
    for (int c = 0; c < 3; c++) {
        Tensor *in[2] = {test_input("p", nd[c], shapes[c], 90 + c, 1, true), test_input("t", nd[c], shapes[c], 95 + c, 1, true)};
        char name[64];
        snprintf(name, sizeof name, "mse %s", shape_str(in[0]));
        gradcheck(name, mse_fn, NULL, 2, in, 1e-2, 1e-3, 1e-5, 0);
        // keep |p - t| > eps so finite differences do not cross the kink of |.|
        for (int64_t i = 0; i < in[0]->numel; i++) {
            float *p = tensor_data_f32(in[0]), *t = tensor_data_f32(in[1]);
            if (fabsf(p[i] - t[i]) < 0.05f) p[i] = t[i] + (p[i] < t[i] ? -0.05f : 0.05f);
        }
        snprintf(name, sizeof name, "l1 %s", shape_str(in[0]));
        gradcheck(name, l1_fn, NULL, 2, in, 1e-2, 1e-3, 1e-5, 0);
        tensor_free(in[0]);
        tensor_free(in[1]);
    }
    {
        // SSIM: smooth rational function of filtered moments. eps 1e-3 on inputs of spread ~0.5
        // (range 2): truncation ~1e-6 relative; f32 forward noise / 2 eps ~ 1e-5 absolute.
        int64_t sa[] = {1, 2, 13, 14}, sb[] = {2, 1, 12, 11};
        float range = 2.0f;
        Tensor *in[2] = {test_input("x", 4, sa, 100, 0.5f, true), test_input("y", 4, sa, 101, 0.5f, true)};
        for (int64_t i = 0; i < in[1]->numel; i++) tensor_data_f32(in[1])[i] = 0.7f * tensor_data_f32(in[1])[i] + 0.7f * tensor_data_f32(in[0])[i];
        gradcheck("ssim [1,2,13,14] range 2, x and y", ssim_fn, &range, 2, in, 1e-3, 5e-3, 2e-5, 0);
        tensor_free(in[0]);
        tensor_free(in[1]);
        float r1 = 1.0f;
        Tensor *jn[2] = {test_input("x", 4, sb, 102, 0.3f, true), test_input("y", 4, sb, 103, 0.3f, false)};
        gradcheck("ssim [2,1,12,11] range 1, x only", ssim_fn, &r1, 2, jn, 1e-3, 5e-3, 2e-5, 0);
        tensor_free(jn[0]);
        tensor_free(jn[1]);
    }
    expect_fatal("mse [2,3] vs [3,2]", mse_bad, NULL, (const char *[]){"op_mse_loss", "[2, 3]", "[3, 2]", NULL});
    expect_fatal("ssim on 10x12 images", ssim_small, NULL, (const char *[]){"op_ssim", "[1, 1, 10, 12]", NULL});
    expect_fatal("ssim shape mismatch", ssim_mismatch, NULL, (const char *[]){"op_ssim", "[1, 3, 16, 16]", "[1, 1, 16, 16]", NULL});
    return check_summary();
}
