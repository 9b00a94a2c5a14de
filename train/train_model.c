// The model factory: [model] kind -> a TrainModel.
#include "train/train_model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "train/dod_train_model.h"
#include "train/toy_model.h"

#include "autograd/cuda/cuda_backend.h"

TrainModel *train_model_create(const TrainModelOptions *o, char *err, size_t errlen) {
    if (o->device == DEV_CUDA && !dod_cuda_available()) {   // before building anything
        snprintf(err, errlen, "no CUDA device: %s", dod_cuda_unavailable_reason());
        return NULL;
    }
    if (o->mixed_precision && o->device != DEV_CUDA) {
        snprintf(err, errlen, "mixed precision is a CUDA mode (the model's device is the CPU)");
        return NULL;
    }
    if (o->device == DEV_CUDA) dod_cuda_set_precision(o->mixed_precision ? DOD_PREC_MIXED : DOD_PREC_F32);
    ag_set_activation_dtype(o->activation_dtype);
    if (!strcmp(o->kind, "toy")) return toy_model_create(o, err, errlen);
    if (!strcmp(o->kind, "dod")) return dod_train_model_create(o, err, errlen);
    snprintf(err, errlen, "unknown model kind '%s' (toy, dod)", o->kind);
    return NULL;
}

void train_model_free(TrainModel *m) {
    if (!m) return;
    m->destroy(m->self);
    free(m);
}

static ParamStore *host_io_params(void *self) {
    TrainModel *m = self;
    return m->params(m->self);
}

static Tensor *host_io_forward(void *self, Tensor *lq, uint64_t noise_seed, bool training) {
    TrainModel *m = self;
    DOD_CHECK(lq->device == DEV_CPU, "train_model_host_io", "input %s is not on the CPU", shape_str(lq));
    Tensor *out = m->forward(m->self, tensor_to_device(lq, m->device), noise_seed, training);
    return out->device == DEV_CPU ? out : tensor_to_device(out, DEV_CPU);
}

static void host_io_destroy(void *self) { (void)self; }   // the view borrows m

TrainModel train_model_host_io(TrainModel *m) {
    if (m->device == DEV_CPU) return *m;
    return (TrainModel){.self = m, .kind = m->kind, .device = DEV_CPU, .params = host_io_params,
                        .forward = host_io_forward, .destroy = host_io_destroy};
}
