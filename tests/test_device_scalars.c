// DeviceScalars (autograd/device_scalars.h) and clip_grad_norm_into on the CPU: slots add the values of
// one-element tensors in order (as host doubles would), zero and read; clip_grad_norm_into gives
// clip_grad_norm's norm and scaled gradients bit for bit, clipping or not; wrong inputs fail naming them.
#include "autograd/device_scalars.h"
#include "autograd/optim.h"
#include "tests/check.h"

static Tensor *scalar(float v) {
    Tensor *t = tensor_new1(1);
    tensor_data_f32(t)[0] = v;
    return t;
}

static void test_slots(void) {
    DeviceScalars *s = device_scalars_new(DEV_CPU, 3);
    const double *v = device_scalars_read(s);
    CHECK(v[0] == 0 && v[1] == 0 && v[2] == 0, "new slots are zero");
    float xs[4] = {0.1f, 1e8f, -3.25f, 7e-9f};
    double want = 0;
    for (int i = 0; i < 4; i++) {
        device_scalars_add(s, 1, scalar(xs[i]));
        want += xs[i];  // what a host double accumulating the floats gives
    }
    v = device_scalars_read(s);
    CHECK(v[1] == want && v[0] == 0 && v[2] == 0, "slot 1 %.17g, want %.17g", v[1], want);
    device_scalars_zero(s);
    v = device_scalars_read(s);
    CHECK(v[1] == 0, "zeroed");
    *device_scalars_slot(s, 2) = 5.5;
    CHECK(device_scalars_read(s)[2] == 5.5, "written through its slot pointer");
    device_scalars_free(s);
    ag_step_reset();
}

static Tensor *param(const char *name, int64_t n, uint64_t seed, float std) {
    int64_t shape[1] = {n};
    Tensor *p = tensor_new_persistent(name, 1, shape, DT_F32);
    p->requires_grad = true;
    tensor_randn(p, seed, 1.0f);
    float *g = tensor_grad(p);
    for (int64_t i = 0; i < n; i++) g[i] = std * (float)((i * 37 + (int64_t)seed) % 101 - 50) / 50.0f;
    return p;
}

static void test_clip(void) {
    for (int clip = 0; clip < 2; clip++) {
        double max_norm = clip ? 0.5 : 1e6;
        Tensor *a[3] = {param("a0", 1000, 1, 0.1f), param("a1", 17, 2, 3.0f), param("a2", 4096, 3, 0.01f)};
        Tensor *b[3] = {param("b0", 1000, 1, 0.1f), param("b1", 17, 2, 3.0f), param("b2", 4096, 3, 0.01f)};
        double norm = clip_grad_norm(a, 3, max_norm);
        DeviceScalars *s = device_scalars_new(DEV_CPU, 2);
        clip_grad_norm_into(b, 3, max_norm, s, 1);
        double norm_into = device_scalars_read(s)[1];
        CHECK(norm == norm_into && norm > 0.5, "norm %.17g vs %.17g", norm, norm_into);
        bool same = true;
        for (int i = 0; i < 3; i++) same = same && !memcmp(a[i]->grad, b[i]->grad, sizeof(float) * (size_t)a[i]->numel);
        CHECK(same, "clip %d: the gradients differ between clip_grad_norm and clip_grad_norm_into", clip);
        double after = 0;  // the norm after clipping: max_norm when clipped, unchanged otherwise
        for (int i = 0; i < 3; i++)
            for (int64_t j = 0; j < a[i]->numel; j++) after += (double)a[i]->grad[j] * a[i]->grad[j];
        after = sqrt(after);
        CHECK(fabs(after - (clip ? max_norm : norm)) <= 1e-6 * after, "clip %d: norm after %.9g, before %.9g", clip,
              after, norm);
        device_scalars_free(s);
        for (int i = 0; i < 3; i++) {
            tensor_free(a[i]);
            tensor_free(b[i]);
        }
    }
}

static void add_wrong_tensor(void *ctx) {
    (void)ctx;
    DeviceScalars *s = device_scalars_new(DEV_CPU, 2);
    device_scalars_add(s, 0, tensor_new2(2, 2));
}
static void add_wrong_slot(void *ctx) {
    (void)ctx;
    DeviceScalars *s = device_scalars_new(DEV_CPU, 2);
    device_scalars_add(s, 2, scalar(1.0f));
}

int main(void) {
    test_slots();
    test_clip();
    expect_fatal("a [2, 2] tensor", add_wrong_tensor, NULL, (const char *[]){"device_scalars_add", "[2, 2]", NULL});
    expect_fatal("slot 2 of 2", add_wrong_slot, NULL, (const char *[]){"device_scalars_add", "slot 2 of 2", NULL});
    return check_summary();
}
