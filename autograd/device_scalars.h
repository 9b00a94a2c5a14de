// A few double accumulators that live on a device, for the scalar results of a training step (loss
// terms, the gradient norm): each is added where it is computed (a kernel on CUDA), and the host reads
// them all with one copy when it needs them -- train/loop.c once per optimizer step, after the
// optimizer's kernels are queued, so nothing inside the step waits for the device.
// On the CPU the slots are plain host doubles and the same additions happen in the same order, so the
// values are those of accumulating on the host (bit for bit).
#pragma once
#include "autograd/tensor.h"

typedef struct DeviceScalars DeviceScalars;

// n slots (>= 1) on dev, zeroed.
DeviceScalars *device_scalars_new(Device dev, int n);
void device_scalars_free(DeviceScalars *s);  // NULL ok
Device device_scalars_device(const DeviceScalars *s);
// Every slot = 0 (on CUDA an asynchronous memset).
void device_scalars_zero(DeviceScalars *s);
// Slot i += (double) the value of t, a one-element f32 tensor on s's device (no host sync).
void device_scalars_add(DeviceScalars *s, int i, const Tensor *t);
// Slot i's storage on s's device (a device pointer on CUDA), for code that writes it directly
// (clip_grad_norm_into).
double *device_scalars_slot(DeviceScalars *s, int i);
// The slots' values on the host (n doubles, valid until the next read or free): one copy from the
// device, which waits for the work queued before it.
const double *device_scalars_read(DeviceScalars *s);
