// Estimating a training step's memory before the first step (see train/memory_check.h).
#include "train/memory_check.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "autograd/cuda/cuda_backend.h"
#include "autograd/ops.h"
#include "autograd/tape.h"

#define MIB (1024.0 * 1024.0)

// Bytes of step memory in use at the peak of one forward + loss + backward on a [1, 3, crop, crop]
// batch, measured on the model's device; the parameters' gradients are zeroed after it.
static double probe(Model *m, Tensor *const *trainable, int n_trainable, DodLossWeights w, int crop) {
    ag_step_reset();
    arena_peak_reset();
    Tensor *lq = tensor_zeros(4, (int64_t[]){1, 3, crop, crop}), *hq = tensor_zeros(4, (int64_t[]){1, 3, crop, crop});
    if (m->device != DEV_CPU) lq = tensor_to_device(lq, m->device), hq = tensor_to_device(hq, m->device);
    Tensor *out = m->forward(m->self, lq, 1, true);
    Tensor *loss = dod_loss_terms(out, hq, w).total;
    ag_backward(loss);
    ag_step_reset();
    for (int i = 0; i < n_trainable; i++) tensor_zero_grad(trainable[i]);
    if (m->device == DEV_CPU) return (double)arena_peak_reset();
    // CUDA: the peaks only grow, and each probe is larger than the one before, so they are its own
    DodCudaMemStats s = dod_cuda_mem_stats();
    arena_peak_reset();
    return (double)s.arena_peak_bytes + (double)s.cached_peak_bytes - (double)s.cached_in_use_bytes;
}

// A "key: value kB" line of a /proc or /sys file, or a bare number (cgroup files); -1 when absent.
static double read_number(const char *path, const char *key) {
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    char line[256];
    double v = -1;
    while (fgets(line, sizeof line, f)) {
        if (key && strncmp(line, key, strlen(key))) continue;
        char *p = key ? line + strlen(key) : line;
        char *end;
        double x = strtod(p, &end);
        if (end != p) v = key ? x * 1024.0 : x;   // /proc/meminfo counts kB
        break;
    }
    fclose(f);
    return v;
}

// Bytes the process can still allocate on the host: the least of MemAvailable, the cgroup's
// memory.max - memory.current and the address-space limit - the address space in use; which one
// into `which`. -1 when none is known.
static double host_available(const char **which) {
    double best = -1, v;
    *which = "";
    if ((v = read_number("/proc/meminfo", "MemAvailable:")) >= 0) best = v, *which = "MemAvailable";
    double max = read_number("/sys/fs/cgroup/memory.max", NULL), cur = read_number("/sys/fs/cgroup/memory.current", NULL);
    if (max > 0 && cur >= 0 && (best < 0 || max - cur < best)) best = max - cur, *which = "the cgroup's memory.max";
    struct rlimit rl;
    double vm_pages = read_number("/proc/self/statm", NULL);
    if (getrlimit(RLIMIT_AS, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY && vm_pages >= 0) {
        v = (double)rl.rlim_cur - vm_pages * (double)sysconf(_SC_PAGESIZE);
        if (best < 0 || v < best) best = v, *which = "the address-space limit (ulimit -v)";
    }
    return best;
}

int train_memory_check(Model *m, Tensor *const *trainable, int n_trainable, const TrainConfig *c, DodLossWeights w,
                       int batch_n, bool quiet, char *err, size_t errlen) {
    if (c->max_memory < 0) return 0;
    int crop = (int)c->crop, p1 = crop <= 64 ? crop : 64, p2 = crop <= 64 ? crop : 128;
    double m1 = probe(m, trainable, n_trainable, w, p1), m2 = p2 == p1 ? m1 : probe(m, trainable, n_trainable, w, p2);
    double px = (double)crop * crop, a = 0, b;
    if (p2 == p1) {
        b = m1 / px;   // one sample measured at the configured crop: scale by the batch
    } else {
        b = (m2 - m1) / ((double)p2 * p2 - (double)p1 * p1);
        a = m1 - b * (double)p1 * p1;
        if (b <= 0 || a < 0) a = 0, b = m2 / ((double)p2 * p2);   // noise at tiny sizes: proportional
    }
    double step = a + b * px * batch_n;
    double loader = px * batch_n * 30.0 * 3;   // lq, hq f32 + bytes, per sample pixel; 2 prefetched + 1 held
    double rss = dod_peak_rss_mib() * MIB;     // what is allocated already (weights, optimizer state)
    bool on_cuda = m->device != DEV_CPU;
    const char *which = "";
    double avail = on_cuda ? -1 : host_available(&which), need = step + (on_cuda ? 0 : loader);
    double limit = avail;   // < 0: nothing known to compare with
    const char *limit_name = which;
    if (c->max_memory > 0) {   // the whole process on the CPU, the step's device memory on CUDA
        double cap = c->max_memory * MIB - (on_cuda ? 0 : rss);
        if (avail < 0 || cap < avail) limit = cap > 0 ? cap : 0, limit_name = "[train] max_memory";
    }
    char measured[96];
    if (p2 == p1) snprintf(measured, sizeof measured, "measured on one %dx%d crop", p1, p1);
    else snprintf(measured, sizeof measured, "measured at crops %d and %d, extrapolated", p1, p2);
    if (limit >= 0 && need > limit) {
        snprintf(err, errlen,
                 "a training step needs about %.0f MiB (%s activations %.0f MiB for a batch of %d crops of %dx%d, %s; "
                 "loader buffers %.0f MiB) but %.0f MiB are available (%s; the process already holds %.0f MiB). "
                 "Lower [data] crop or the per-step counts of [data] tasks (use [optim] grad_accum for the same "
                 "batch), or set [train] recompute = true or [model] activations = bf16%s",
                 need / MIB, on_cuda ? "device" : "host", step / MIB, batch_n, crop, crop, measured,
                 on_cuda ? 0.0 : loader / MIB, limit / MIB, limit_name, rss / MIB,
                 c->max_memory > 0 ? ", or raise [train] max_memory" : "; [train] max_memory = -1 skips this check");
        return -1;
    }
    if (!quiet)
        fprintf(stderr, "dod-train: memory: a step needs about %.1f MiB (%s activations %.1f MiB, %s; loader %.1f MiB)%s",
                need / MIB, on_cuda ? "device" : "host", step / MIB, measured, on_cuda ? 0.0 : loader / MIB,
                limit >= 0 ? "" : "\n");
    if (!quiet && limit >= 0) fprintf(stderr, "; %.0f MiB available (%s)\n", limit / MIB, limit_name);
    return 0;
}
