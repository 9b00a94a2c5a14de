// AdamW, gradient clipping and LR schedules. Parameters are f32 master copies on the CPU or on CUDA
// (each parameter's moments live on its device; the CUDA kernels are autograd/cuda/optim.cu).
#include "autograd/optim.h"

#include "autograd/cuda/cuda_ops.h"
#include "autograd/cuda/cuda_optim.h"
#include "autograd/device_scalars.h"
#include "autograd/ops_cpu_util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

AdamWConfig adamw_defaults(void) { return (AdamWConfig){5e-5f, 0.9f, 0.999f, 1e-8f, 1e-2f}; }

AdamW *adamw_new(Tensor *const *params, int n, AdamWConfig cfg) {
    AdamW *opt = dod_calloc(sizeof *opt, "AdamW");
    opt->cfg = cfg;
    opt->n = n;
    opt->params = dod_malloc(sizeof(Tensor *) * (n ? n : 1), "AdamW parameter list");
    opt->m = dod_malloc(sizeof(float *) * (n ? n : 1), "AdamW moments");
    opt->v = dod_malloc(sizeof(float *) * (n ? n : 1), "AdamW moments");
    for (int i = 0; i < n; i++) {
        Tensor *p = params[i];
        DOD_CHECK(p->dtype == DT_F32 && p->persistent, "adamw_new",
                  "trainable tensor %s must be a persistent f32 master copy (is %s%s)", p->name ? p->name : "?",
                  dtype_name(p->dtype), p->persistent ? "" : ", arena");
        opt->params[i] = p;
        size_t bytes = sizeof(float) * (size_t)p->numel;
        opt->m[i] = device_calloc(p->device, bytes, "AdamW first moment");
        opt->v[i] = device_calloc(p->device, bytes, "AdamW second moment");
    }
    return opt;
}

void adamw_free(AdamW *opt) {
    if (!opt) return;
    for (int i = 0; i < opt->n; i++) {
        device_free(opt->params[i]->device, opt->m[i]);
        device_free(opt->params[i]->device, opt->v[i]);
    }
    free(opt->m);
    free(opt->v);
    free(opt->params);
    free(opt);
}

void adamw_step(AdamW *opt, float lr) {
    opt->step++;
    const AdamWConfig c = opt->cfg;
    // Bias corrections in double, as torch computes them from Python floats.
    double bc1 = 1.0 - pow(c.beta1, (double)opt->step);
    double bc2 = 1.0 - pow(c.beta2, (double)opt->step);
    float step_size = (float)(lr / bc1);
    float bc2_sqrt = (float)sqrt(bc2);
    float decay = 1.0f - lr * c.weight_decay;
    for (int i = 0; i < opt->n; i++) {
        Tensor *p = opt->params[i];
        if (!p->grad) continue;  // no gradient reached it this step: torch skips such parameters too
        float *w = p->data, *g = p->grad, *m = opt->m[i], *v = opt->v[i];
        if (p->device == DEV_CUDA) {  // the same f32 formula (adamw_update_element) on the device
            cuda_adamw_update(w, g, m, v, p->numel, c.beta1, c.beta2, c.eps, decay, step_size, bc2_sqrt);
            continue;
        }
#pragma omp parallel for if (p->numel > OPS_PARALLEL_MIN)
        for (int64_t j = 0; j < p->numel; j++)
            adamw_update_element(&w[j], &m[j], &v[j], g[j], c.beta1, c.beta2, c.eps, decay, step_size, bc2_sqrt);
    }
}

void clip_grad_norm_into(Tensor *const *params, int n, double max_norm, DeviceScalars *s, int slot) {
    Device dev = device_scalars_device(s);
    for (int i = 0; i < n; i++)
        DOD_CHECK(params[i]->device == dev, "clip_grad_norm", "parameter %s is on %s, the norm's slot on %s",
                  params[i]->name ? params[i]->name : "?", params[i]->device == DEV_CUDA ? "cuda" : "cpu",
                  dev == DEV_CUDA ? "cuda" : "cpu");
    double *norm = device_scalars_slot(s, slot);
    if (dev == DEV_CUDA) {  // sum of squares, norm, factor and scaling on the device, queued in order
        double *sq = cuda_arena_calloc(sizeof(double), "gradient norm: sum of squares");
        float *coef = cuda_arena_alloc(sizeof(float), "gradient norm: clip factor");
        for (int i = 0; i < n; i++)
            if (params[i]->grad) cuda_sum_squares_add(params[i]->grad, params[i]->numel, sq);
        cuda_clip_coefficient(sq, max_norm, norm, coef);
        for (int i = 0; i < n; i++)
            if (params[i]->grad) cuda_scale_by_device_scalar(params[i]->grad, coef, params[i]->numel);
        return;
    }
    double sq = 0;
    for (int i = 0; i < n; i++)
        if (params[i]->grad) sq += ops_reduce_cpu(REDUCE_SQUARES, params[i]->grad, NULL, params[i]->numel);
    *norm = sqrt(sq);
    double coef_d = max_norm / (*norm + 1e-6);  // torch: clamp(max_norm / (norm + 1e-6), max=1)
    if (max_norm > 0 && coef_d < 1.0) {
        float coef = (float)coef_d;
        for (int i = 0; i < n; i++) {
            float *g = params[i]->grad;
            if (!g) continue;
            for (int64_t j = 0; j < params[i]->numel; j++) g[j] *= coef;
        }
    }
}

double clip_grad_norm(Tensor *const *params, int n, double max_norm) {
    DeviceScalars *s = device_scalars_new(n > 0 ? params[0]->device : DEV_CPU, 1);
    clip_grad_norm_into(params, n, max_norm, s, 0);
    double norm = device_scalars_read(s)[0];
    device_scalars_free(s);
    return norm;
}

float lr_at(const LrSchedule *s, int64_t step) {
    if (step < s->warmup_steps) return s->base_lr * (float)step / (float)(s->warmup_steps > 1 ? s->warmup_steps : 1);
    if (s->kind == LR_CONSTANT) return s->base_lr;
    int64_t span = s->total_steps - s->warmup_steps;
    double progress = (double)(step - s->warmup_steps) / (double)(span > 1 ? span : 1);
    double f = 0.5 * (1.0 + cos(M_PI * progress));
    return (float)(s->base_lr * (f > 0 ? f : 0));
}
