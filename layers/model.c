// The model factory and the host-I/O view (see layers/model.h).
#include "layers/model.h"

#include <stdio.h>
#include <stdlib.h>

#include "autograd/cuda/cuda_backend.h"

const char *model_kind_name(ModelKind kind) {
    switch (kind) {
    case MODEL_TOY: return "toy";
    case MODEL_DOD: return "dod";
    }
    return "?";
}

DType model_activation_dtype(const ModelOptions *o) {
    bool bf16 = o->activations == MODEL_ACTIVATIONS_BF16 ||
                (o->activations == MODEL_ACTIVATIONS_AUTO && o->precision == MODEL_PRECISION_MIXED);
    return bf16 ? DT_BF16 : DT_F32;
}

Model *model_create(const ModelOptions *o, char *err, size_t errlen) {
    if (o->device == DEV_CUDA && !dod_cuda_available()) {   // before building anything
        snprintf(err, errlen, "no CUDA device: %s", dod_cuda_unavailable_reason());
        return NULL;
    }
    if (o->precision == MODEL_PRECISION_MIXED && o->device != DEV_CUDA) {
        snprintf(err, errlen, "mixed precision is a CUDA mode (the model's device is the CPU)");
        return NULL;
    }
    if (o->device == DEV_CUDA)
        dod_cuda_set_precision(o->precision == MODEL_PRECISION_MIXED ? DOD_PREC_MIXED : DOD_PREC_F32);
    ag_set_activation_dtype(model_activation_dtype(o));
    switch (o->kind) {
    case MODEL_TOY: return model_toy_create(o, err, errlen);
    case MODEL_DOD: return model_dod_create(o, err, errlen);
    }
    snprintf(err, errlen, "unknown model kind %d (toy, dod)", (int)o->kind);
    return NULL;
}

void model_free(Model *m) {
    if (!m) return;
    m->destroy(m->self);
    free(m);
}

static ParamStore *host_io_params(void *self) {
    Model *m = self;
    return m->params(m->self);
}

static Tensor *host_io_forward(void *self, Tensor *lq, uint64_t noise_seed, bool training) {
    Model *m = self;
    DOD_CHECK(lq->device == DEV_CPU, "model_host_io", "input %s is not on the CPU", shape_str(lq));
    Tensor *out = m->forward(m->self, tensor_to_device(lq, m->device), noise_seed, training);
    return out->device == DEV_CPU ? out : tensor_to_device(out, DEV_CPU);
}

static void host_io_destroy(void *self) { (void)self; }   // the view borrows m

Model model_host_io(Model *m) {
    if (m->device == DEV_CPU) return *m;
    return (Model){.self = m, .kind = m->kind, .device = DEV_CPU, .params = host_io_params,
                   .forward = host_io_forward, .destroy = host_io_destroy};
}
