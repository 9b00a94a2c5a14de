// Step scalars on a device (see autograd/device_scalars.h).
#include "autograd/device_scalars.h"

#include <stdlib.h>
#include <string.h>

#include "autograd/cuda/cuda_backend.h"

struct DeviceScalars {
    Device dev;
    int n;
    double *slots;  // on dev
    double *host;   // the last read (on the CPU: slots itself)
};

DeviceScalars *device_scalars_new(Device dev, int n) {
    DOD_CHECK(n >= 1, "device_scalars_new", "%d slots: need at least 1", n);
    DeviceScalars *s = dod_calloc(sizeof *s, "device scalars");
    s->dev = dev;
    s->n = n;
    s->slots = device_calloc(dev, sizeof(double) * (size_t)n, "device scalars");
    s->host = dev == DEV_CPU ? s->slots : dod_calloc(sizeof(double) * (size_t)n, "device scalars (host copy)");
    return s;
}

void device_scalars_free(DeviceScalars *s) {
    if (!s) return;
    if (s->host != s->slots) free(s->host);
    device_free(s->dev, s->slots);
    free(s);
}

Device device_scalars_device(const DeviceScalars *s) { return s->dev; }

void device_scalars_zero(DeviceScalars *s) {
    if (s->dev == DEV_CUDA) cuda_memset_zero(s->slots, sizeof(double) * (size_t)s->n);
    else memset(s->slots, 0, sizeof(double) * (size_t)s->n);
}

static void check_slot(const DeviceScalars *s, int i, const char *who) {
    DOD_CHECK(i >= 0 && i < s->n, who, "slot %d of %d", i, s->n);
}

void device_scalars_add(DeviceScalars *s, int i, const Tensor *t) {
    check_slot(s, i, "device_scalars_add");
    DOD_CHECK(t->numel == 1 && t->dtype == DT_F32 && t->device == s->dev, "device_scalars_add",
              "tensor %s (%s, %s) is not a one-element f32 tensor on the slots' device (%s)", shape_str(t),
              dtype_name(t->dtype), t->device == DEV_CUDA ? "cuda" : "cpu", s->dev == DEV_CUDA ? "cuda" : "cpu");
    if (s->dev == DEV_CUDA) cuda_scalar_add_f64(s->slots + i, (const float *)t->data);
    else s->slots[i] += (double)((const float *)t->data)[0];
}

double *device_scalars_slot(DeviceScalars *s, int i) {
    check_slot(s, i, "device_scalars_slot");
    return s->slots + i;
}

const double *device_scalars_read(DeviceScalars *s) {
    if (s->dev == DEV_CUDA) device_copy(s->host, DEV_CPU, s->slots, DEV_CUDA, sizeof(double) * (size_t)s->n);
    return s->host;
}
