// LPIPS (VGG16, v0.1) as ops. See lpips.h; reference: the lpips package (lpips/lpips.py: LPIPS.forward,
// ScalingLayer, NetLinLayer; lpips/pretrained_networks.py: vgg16 slices; lpips/__init__.py:
// normalize_tensor) and torchvision's vgg16 `features`.
#include "layers/lpips.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/ops.h"
#include "autograd/tape.h"
#include "layers/safetensors.h"
#include "layers/sd_weights.h"

// torchvision vgg16().features: the index of each conv, its channels, and after which convs a
// 2x2 max pool follows (the ends of stages 1-4); the LPIPS taps are the ReLUs ending stages 1-5.
static const int conv_index[LPIPS_N_CONV] = {0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28};
static const int conv_cout[LPIPS_N_CONV] = {64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512};
static const int stage_end[LPIPS_N_LAYERS] = {1, 3, 6, 9, 12};   // last conv of each stage
static const int lin_channels[LPIPS_N_LAYERS] = {64, 128, 256, 512, 512};
static const float shift[3] = {-.030f, -.088f, -.188f}, scale[3] = {.458f, .448f, .450f};
#define LPIPS_EPS 1e-10f

static int conv_cin(int k) { return k == 0 ? 3 : conv_cout[k - 1]; }

static bool same_shape(const StEntry *e, int ndim, const int64_t *shape) {
    if (e->ndim != ndim) return false;
    for (int d = 0; d < ndim; d++)
        if (e->shape[d] != shape[d]) return false;
    return true;
}

static const char *dims(int ndim, const int64_t *shape, char *buf, size_t len) {
    int k = snprintf(buf, len, "[");
    for (int d = 0; d < ndim && k < (int)len; d++) k += snprintf(buf + k, len - (size_t)k, d ? ", %lld" : "%lld", (long long)shape[d]);
    if (k < (int)len) snprintf(buf + k, len - (size_t)k, "]");
    return buf;
}

// Reads tensor `name` of shape (ndim, shape) from st as dtype into ps (=). -1 with err naming the file.
static int load_tensor(SafeTensors *st, const char *name, int ndim, const int64_t *shape, DType dtype, ParamStore *ps,
                       const char *what, char *err, size_t errlen) {
    const StEntry *e = safetensors_find(st, name);
    char a[96], b[96], msg[ST_ERR_LEN];
    if (!e) {
        snprintf(err, errlen, "%s: no tensor %s (is this %s?)", safetensors_path(st), name, what);
        return -1;
    }
    if (!same_shape(e, ndim, shape)) {
        snprintf(err, errlen, "%s: tensor %s is %s, LPIPS (VGG16) needs %s", safetensors_path(st), name,
                 dims(e->ndim, e->shape, a, sizeof a), dims(ndim, shape, b, sizeof b));
        return -1;
    }
    Tensor *t;
    if (safetensors_tensor(st, e, dtype, name, &t, msg) != ST_OK) {
        snprintf(err, errlen, "%s", msg);
        return -1;
    }
    sd_tensor_make_owned(t);   // a zero-copy view into a safetensors file: copied, the file is closed
    params_add(ps, name, t);
    return 0;
}

static void name_conv(char *buf, size_t len, int k, bool bias) {
    snprintf(buf, len, "features.%d.%s", conv_index[k], bias ? "bias" : "weight");
}

static Lpips *finish(ParamStore *ps) {
    Lpips *m = dod_calloc(sizeof(Lpips), "lpips");
    m->ps = ps;
    char name[64];
    for (int k = 0; k < LPIPS_N_CONV; k++) {
        name_conv(name, sizeof name, k, false);
        m->w[k] = params_require(ps, name, "lpips");
        name_conv(name, sizeof name, k, true);
        m->b[k] = params_require(ps, name, "lpips");
    }
    for (int l = 0; l < LPIPS_N_LAYERS; l++) {
        snprintf(name, sizeof name, "lin%d.model.1.weight", l);
        m->lin[l] = params_require(ps, name, "lpips");
    }
    return m;
}

static int load_lins(const char *lin_path, DType dtype, ParamStore *ps, char *err, size_t errlen) {
    SafeTensors *st;
    char msg[ST_ERR_LEN];
    if (tensor_file_open(lin_path, &st, msg) != ST_OK) {
        snprintf(err, errlen, "%s", msg);
        return -1;
    }
    int rc = 0;
    for (int l = 0; l < LPIPS_N_LAYERS && !rc; l++) {
        char name[64];
        snprintf(name, sizeof name, "lin%d.model.1.weight", l);
        rc = load_tensor(st, name, 4, (int64_t[]){1, lin_channels[l], 1, 1}, dtype, ps,
                         "the lpips package's weights/v0.1/vgg.pth", err, errlen);
    }
    safetensors_close(st);
    return rc;
}

Lpips *lpips_load(const char *vgg_path, const char *lin_path, DType dtype, char *err, size_t errlen) {
    SafeTensors *st;
    char msg[ST_ERR_LEN];
    if (tensor_file_open(vgg_path, &st, msg) != ST_OK) {
        snprintf(err, errlen, "%s", msg);
        return NULL;
    }
    ParamStore *ps = params_new();
    int rc = 0;
    for (int k = 0; k < LPIPS_N_CONV && !rc; k++) {
        char name[64];
        const char *what = "torchvision's vgg16-397923af.pth";
        name_conv(name, sizeof name, k, false);
        rc = load_tensor(st, name, 4, (int64_t[]){conv_cout[k], conv_cin(k), 3, 3}, dtype, ps, what, err, errlen);
        name_conv(name, sizeof name, k, true);
        if (!rc) rc = load_tensor(st, name, 1, (int64_t[]){conv_cout[k]}, dtype, ps, what, err, errlen);
    }
    safetensors_close(st);
    if (!rc) rc = load_lins(lin_path, dtype, ps, err, errlen);
    if (rc) {
        params_free(ps);
        return NULL;
    }
    return finish(ps);
}

Lpips *lpips_from_vgg(ParamStore *vgg, const char *lin_path, DType dtype, char *err, size_t errlen) {
    ParamStore *ps = params_new();
    for (int k = 0; k < 2 * LPIPS_N_CONV; k++) {
        char name[64];
        name_conv(name, sizeof name, k / 2, k % 2);
        Tensor *src = params_require(vgg, name, "lpips_from_vgg");
        Tensor *t = tensor_new_persistent(name, src->ndim, src->shape, DT_F32);
        memcpy(t->data, tensor_data_f32(src), sizeof(float) * (size_t)t->numel);
        if (dtype != DT_F32) tensor_convert_dtype(t, dtype);
        params_add(ps, name, t);
    }
    params_free(vgg);
    if (load_lins(lin_path, dtype, ps, err, errlen)) {
        params_free(ps);
        return NULL;
    }
    return finish(ps);
}

void lpips_free(Lpips *m) {
    if (!m) return;
    params_free(m->ps);
    free(m);
}

void lpips_to_device(Lpips *m, Device device) { params_to_device(m->ps, device); }

ParamStore *lpips_random_vgg(uint64_t seed) {
    ParamStore *ps = params_new();
    for (int k = 0; k < LPIPS_N_CONV; k++) {
        double fan_in = 9.0 * conv_cin(k);
        char name[64];
        name_conv(name, sizeof name, k, false);
        Tensor *w = tensor_new_persistent(name, 4, (int64_t[]){conv_cout[k], conv_cin(k), 3, 3}, DT_F32);
        float wb = (float)sqrt(6.0 / fan_in), bb = (float)(1.0 / sqrt(fan_in));
        tensor_rand_uniform(w, seed + 2 * (uint64_t)k, -wb, wb);
        params_add(ps, name, w);
        name_conv(name, sizeof name, k, true);
        Tensor *b = tensor_new_persistent(name, 1, (int64_t[]){conv_cout[k]}, DT_F32);
        tensor_rand_uniform(b, seed + 2 * (uint64_t)k + 1, -bb, bb);
        params_add(ps, name, b);
    }
    return ps;
}

// A [1, 3, 1, 1] constant on dev (an arena tensor: it lives for the step, like the graph using it).
static Tensor *channel_constant(Device dev, const float v[3]) {
    Tensor *t = tensor_new_on(dev, 4, (int64_t[]){1, 3, 1, 1}, DT_F32);
    device_copy(t->data, dev, v, DEV_CPU, sizeof(float) * 3);
    return t;
}

typedef struct {
    Lpips *m;
    int stage;
} StageCtx;

// One VGG stage: the pool before it (stages 2-5), its 3x3 convs with ReLUs; returns the tapped ReLU.
static Tensor *vgg_stage(void *ctx, Tensor *const *in) {
    const StageCtx *c = ctx;
    Tensor *h = c->stage > 0 ? op_max_pool2d(in[0], 2, 2) : in[0];
    for (int k = c->stage ? stage_end[c->stage - 1] + 1 : 0; k <= stage_end[c->stage]; k++)
        h = op_relu(op_conv2d(h, c->m->w[k], c->m->b[k], 1, 1));
    return h;
}

// The five normalised taps of one image batch (=). Without gradients to x, each stage's intermediates
// are given back as soon as its output exists (only the taps stay): the reference image of a loss.
static void vgg_taps(Lpips *m, Tensor *x, Tensor *taps[LPIPS_N_LAYERS]) {
    Device dev = m->w[0]->device;
    float inv_scale[3];
    for (int c = 0; c < 3; c++) inv_scale[c] = (float)(1.0 / scale[c]);
    Tensor *h = op_mul(op_sub(x, channel_constant(dev, shift)), channel_constant(dev, inv_scale));
    bool grad = ag_needs_grad(1, &x);
    for (int l = 0; l < LPIPS_N_LAYERS; l++) {
        StageCtx c = {m, l};
        h = grad ? vgg_stage(&c, &h) : ag_run_keeping_output(vgg_stage, &c, 1, &h);
        taps[l] = op_channel_normalize(h, LPIPS_EPS);
    }
}

Tensor *lpips_distance(Lpips *m, Tensor *x, Tensor *y) {
    const char *who = "lpips_distance";
    DOD_CHECK(x->ndim == 4 && x->shape[1] == 3 && tensor_same_shape(x, y), who,
              "inputs %s and %s must both be [N, 3, H, W]", shape_str(x), shape_str(y));
    DOD_CHECK(x->shape[2] >= 16 && x->shape[3] >= 16, who, "inputs %s are smaller than 16 x 16 (four 2x2 pools)",
              shape_str(x));
    Tensor *tx[LPIPS_N_LAYERS], *ty[LPIPS_N_LAYERS];
    vgg_taps(m, x, tx);
    vgg_taps(m, y, ty);
    Tensor *total = NULL;
    for (int l = 0; l < LPIPS_N_LAYERS; l++) {
        Tensor *d = op_sub(tx[l], ty[l]);
        Tensor *per_pixel = op_conv2d(op_mul(d, d), m->lin[l], NULL, 1, 0);   // [N, 1, h, w]
        Tensor *mean = op_global_avg_pool(per_pixel);                          // [N, 1]
        total = total ? op_add(total, mean) : mean;
    }
    return total;
}
