// The model factory: [model] kind -> a TrainModel.
#include "train/train_model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "train/toy_model.h"

// The DOD model (layers/dod_model.h) is wired in through an adapter, train/dod_train_model.h,
// declaring `TrainModel *dod_train_model_create(const TrainModelOptions *, char *, size_t)`.
#if defined(__has_include)
#if __has_include("layers/dod_model.h") && __has_include("train/dod_train_model.h")
#include "train/dod_train_model.h"
#define TRAIN_HAVE_DOD 1
#endif
#endif

TrainModel *train_model_create(const TrainModelOptions *o, char *err, size_t errlen) {
    if (!strcmp(o->kind, "toy")) return toy_model_create(o, err, errlen);
    if (!strcmp(o->kind, "dod")) {
#ifdef TRAIN_HAVE_DOD
        return dod_train_model_create(o, err, errlen);
#else
        snprintf(err, errlen, "model kind dod is not wired yet (this build has no layers/dod_model.h + "
                              "train/dod_train_model.h adapter); use kind = toy to exercise the driver");
        return NULL;
#endif
    }
    snprintf(err, errlen, "unknown model kind '%s' (toy, dod)", o->kind);
    return NULL;
}

void train_model_free(TrainModel *m) {
    if (!m) return;
    m->destroy(m->self);
    free(m);
}
