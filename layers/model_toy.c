// The toy restoration model: a small residual conv net built from engine ops, with the same
// two-stage structure as DOD so the training driver (stages, frozen dtype, checkpoints, resume)
// is exercised end to end without Stable Diffusion weights.
//
//   stage 1:  h = lq + (training ? 0.01 * N(0, 1) keyed by noise_seed : 0)      (the "sampled" input)
//             out1 = lq + conv_out(relu(conv_in(h)))                  conv_in 3->W, conv_out W->3, 3x3
//   stage 2:  out = out1 + detail.conv2(relu(detail.conv1(out1)))    detail.conv1 3->W, conv2 W->3
// Stage 1 trains conv_in.* and conv_out.*; stage 2 freezes them (stored as frozen_dtype) and trains
// detail.* (detail.conv2 starts at zero, so stage 2 starts from the stage-1 output, as DOD's detail
// module starts near identity).
#include "layers/model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/ops.h"

typedef struct {
    ParamStore *ps;
    int stage;
    Tensor *conv_in_w, *conv_in_b, *conv_out_w, *conv_out_b;
    Tensor *det1_w, *det1_b, *det2_w, *det2_b;   // stage 2 only
} ToyModel;

// A persistent f32 tensor registered in ps, filled with N(0, std^2) from seed (std 0: zeros).
static Tensor *toy_param(ParamStore *ps, const char *name, int ndim, const int64_t *shape, uint64_t seed, float std) {
    Tensor *t = tensor_new_persistent(name, ndim, shape, DT_F32);
    if (std > 0) tensor_randn(t, seed, std);
    return params_add(ps, name, t);
}

static ParamStore *toy_params(void *self) { return ((ToyModel *)self)->ps; }

static Tensor *toy_forward(void *self, Tensor *lq, uint64_t noise_seed, bool training) {
    ToyModel *m = self;
    DOD_CHECK(lq->ndim == 4 && lq->shape[1] == 3, "toy_model", "input must be [N, 3, H, W], got %s", shape_str(lq));
    Tensor *h = lq;
    if (training) {   // a sampled input, so the resume test covers the training-noise stream
        Tensor *noise = tensor_like(lq);   // drawn on the host (the same numbers on every device)
        tensor_randn(noise, noise_seed, 0.01f);
        if (lq->device != DEV_CPU) noise = tensor_to_device(noise, lq->device);
        h = op_add(lq, noise);
    }
    Tensor *feat = op_relu(op_conv2d(h, m->conv_in_w, m->conv_in_b, 1, 1));
    Tensor *out = op_add(lq, op_conv2d(feat, m->conv_out_w, m->conv_out_b, 1, 1));
    if (m->stage == 2) {
        Tensor *d = op_relu(op_conv2d(out, m->det1_w, m->det1_b, 1, 1));
        out = op_add(out, op_conv2d(d, m->det2_w, m->det2_b, 1, 1));
    }
    return out;
}

static void toy_destroy(void *self) {
    ToyModel *m = self;
    params_free(m->ps);
    free(m);
}

Model *model_toy_create(const ModelOptions *o, char *err, size_t errlen) {
    if (o->toy_width < 1 || o->toy_width > 256) {
        snprintf(err, errlen, "toy model: width %lld is outside [1, 256]", o->toy_width);
        return NULL;
    }
    if (o->stage != 1 && o->stage != 2) {
        snprintf(err, errlen, "toy model: stage %lld is not 1 or 2", o->stage);
        return NULL;
    }
    ToyModel *m = dod_calloc(sizeof *m, "toy model");
    m->ps = params_new();
    m->stage = (int)o->stage;
    int64_t w = o->toy_width;
    // He-style init for the first conv, a small last conv so the model starts near identity.
    float std_in = sqrtf(2.0f / 27.0f), std_mid = sqrtf(2.0f / (float)(9 * w));
    m->conv_in_w = toy_param(m->ps, "conv_in.weight", 4, (int64_t[]){w, 3, 3, 3}, (uint64_t)o->seed + 1, std_in);
    m->conv_in_b = toy_param(m->ps, "conv_in.bias", 1, (int64_t[]){w}, 0, 0);
    m->conv_out_w = toy_param(m->ps, "conv_out.weight", 4, (int64_t[]){3, w, 3, 3}, (uint64_t)o->seed + 2, 0.01f * std_mid);
    m->conv_out_b = toy_param(m->ps, "conv_out.bias", 1, (int64_t[]){3}, 0, 0);
    if (o->stage == 1) {
        params_set_trainable(m->ps, "*", true);
    } else {
        m->det1_w = toy_param(m->ps, "detail.conv1.weight", 4, (int64_t[]){w, 3, 3, 3}, (uint64_t)o->seed + 3, std_in);
        m->det1_b = toy_param(m->ps, "detail.conv1.bias", 1, (int64_t[]){w}, 0, 0);
        m->det2_w = toy_param(m->ps, "detail.conv2.weight", 4, (int64_t[]){3, w, 3, 3}, 0, 0);
        m->det2_b = toy_param(m->ps, "detail.conv2.bias", 1, (int64_t[]){3}, 0, 0);
        params_set_trainable(m->ps, "detail.*", true);
        // Frozen stage-1 tensors are stored as frozen_dtype; the stage-1 checkpoint is loaded into
        // them afterwards (checkpoint_load_weights converts).
        for (int i = 0; i < params_count(m->ps); i++) {
            Tensor *t = params_at(m->ps, i);
            if (!t->requires_grad && o->frozen_dtype == MODEL_FROZEN_BF16) tensor_convert_dtype(t, DT_BF16);
        }
    }
    // Created and initialised on the CPU, then every tensor moved in place.
    if (o->device != DEV_CPU) params_to_device(m->ps, o->device);
    Model *tm = dod_calloc(sizeof *tm, "toy model");
    *tm = (Model){.self = m, .kind = model_kind_name(MODEL_TOY), .device = o->device, .params = toy_params,
                  .forward = toy_forward, .destroy = toy_destroy};
    return tm;
}
