// The DOD model (layers/dod_model.h) behind the training loop's TrainModel interface.
#pragma once
#include "train/train_model.h"

// Builds a DodModel from the [model]/[lora]/[modulation]/[stage] options (=); [modulation] extractor
// is cnn or vae. NULL with a message for an unknown option value; loader errors are fatal and name the
// file at fault.
TrainModel *dod_train_model_create(const TrainModelOptions *o, char *err, size_t errlen);
