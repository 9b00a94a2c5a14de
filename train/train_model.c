// The model factory: [model] kind -> a TrainModel.
#include "train/train_model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "train/dod_train_model.h"
#include "train/toy_model.h"

TrainModel *train_model_create(const TrainModelOptions *o, char *err, size_t errlen) {
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
