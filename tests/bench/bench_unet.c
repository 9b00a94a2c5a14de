// dod-bench unet: our UNet forward (no grad, f32 CPU) against diffusers' on the same machine, in
// the same invocation, as a ratio.
//
// Options: --fixture DIR (default tests/fixtures/sd/sd2_tiny; any dir with model/unet and
// io.safetensors), --iters N (5), --size S (latent S x S instead of the fixture's), --batch B,
// --dtype f32|bf16 (our weights' storage), --backward (ours only: forward + backward to the input
// sample, the frozen-UNet part of LoRA training), --recompute (with --backward: recompute_blocks). The PyTorch side runs scripts/bench_unet_torch.py with
// bench_python() ($PYTHON, else python3) and the same thread count;
// when Python, torch or diffusers is missing it says so and only our time is printed.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "layers/safetensors.h"
#include "layers/unet.h"
#include "layers/vae.h"
#include "tests/bench/bench.h"

static Tensor *io_tensor(SafeTensors *st, const char *path, const char *name) {
    const StEntry *e = safetensors_find(st, name);
    if (!e) dod_fatal("dod-bench unet", "%s: tensor %s is missing", path, name);
    char err[ST_ERR_LEN];
    Tensor *t = NULL;
    if (safetensors_tensor(st, e, DT_F32, name, &t, err) != ST_OK) dod_fatal("dod-bench unet", "%s", err);
    return t;
}

// The PyTorch reference's median ms (scripts/bench_unet_torch.py), negative when unavailable.
static double torch_ms(const char *fix, int iters, int size, int batch, int threads) {
    char args[1400];
    snprintf(args, sizeof args, "'%s' --iters %d --size %d --batch %d --threads %d", fix, iters, size, batch, threads);
    return bench_torch_ms("bench_unet_torch.py", args, NULL);
}

// --vae-memory: VAE encode + decode of one random size x size image with grad off; prints the arena
// peak of the two passes (weights are heap memory and not counted).
static int vae_memory(const char *fix, int size) {
    char path[1200];
    snprintf(path, sizeof path, "%s/model/vae", fix);
    Vae *vae = vae_load(path, DT_F32, NULL);
    int64_t shape[4] = {1, vae->cfg.in_channels, size, size};
    Tensor *image = tensor_new_persistent("image", 4, shape, DT_F32);
    tensor_randn(image, 0, 0.5f);
    ag_set_grad_enabled(false);
    size_t peak_before = arena_peak();
    double t0 = dod_now_seconds();
    VaeEncoded enc;
    vae_encode(vae, image, false, NULL, &enc);
    Tensor *decoded = vae_decode(vae, enc.mean, NULL, NULL, NULL);
    double ms = (dod_now_seconds() - t0) * 1e3;
    printf("vae encode + decode: image %s -> latent %s -> %s, f32, grad off\n", shape_str(image),
           shape_str(enc.mean), shape_str(decoded));
    printf("arena peak %.1f MiB (before: %.1f MiB), %.0f ms\n", arena_peak() / 1048576.0, peak_before / 1048576.0, ms);
    ag_step_reset();
    tensor_free(image);
    vae_free(vae);
    return 0;
}

static int bench_unet_main(int argc, char **argv) {
    const char *fix = DOD_SOURCE_DIR "/tests/fixtures/sd/sd2_tiny";
    int iters = 5, size = 0, batch = 0;
    DType dtype = DT_F32;
    bool backward = false, recompute = false, vae_mem = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--fixture") && i + 1 < argc) fix = argv[++i];
        else if (!strcmp(argv[i], "--iters") && i + 1 < argc) iters = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--size") && i + 1 < argc) size = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--batch") && i + 1 < argc) batch = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--backward")) backward = true;
        else if (!strcmp(argv[i], "--recompute")) recompute = true;
        else if (!strcmp(argv[i], "--vae-memory")) vae_mem = true;
        else if (!strcmp(argv[i], "--dtype") && i + 1 < argc) {
            const char *d = argv[++i];
            if (!strcmp(d, "bf16")) dtype = DT_BF16;
            else if (strcmp(d, "f32")) dod_fatal("dod-bench unet", "--dtype %s: expected f32 or bf16", d);
        } else {
            printf("usage: dod-bench unet [--fixture DIR] [--iters N] [--size S] [--batch B] [--dtype f32|bf16]\n"
                   "                      [--backward [--recompute]] [--vae-memory [--size S]]\n");
            return strcmp(argv[i], "--help") ? 2 : 0;
        }
    }
    if (iters < 1) dod_fatal("dod-bench unet", "--iters %d: must be at least 1", iters);
    if (vae_mem) return vae_memory(fix, size > 0 ? size : 512);
    char path[1200], err[ST_ERR_LEN];
    snprintf(path, sizeof path, "%s/model/unet", fix);
    Unet *unet = unet_load(path, dtype, NULL);
    snprintf(path, sizeof path, "%s/io.safetensors", fix);
    SafeTensors *st = NULL;
    if (safetensors_open(path, &st, err) != ST_OK) dod_fatal("dod-bench unet", "%s", err);
    Tensor *sample = io_tensor(st, path, "unet.sample");
    Tensor *context = io_tensor(st, path, "unet.encoder_hidden_states");
    Tensor *timestep = io_tensor(st, path, "unet.timestep");
    int n = batch > 0 ? batch : (int)sample->shape[0];
    if (size > 0 || batch > 0) {  // same shapes as the Python side builds (values do not matter for timing)
        int64_t s = size > 0 ? size : sample->shape[2];
        int64_t shape[4] = {n, sample->shape[1], s, s};
        sample = tensor_new_persistent("sample", 4, shape, DT_F32);
        tensor_randn(sample, 0, 1.0f);
        int64_t cshape[3] = {n, context->shape[1], context->shape[2]};
        Tensor *c = tensor_new_persistent("context", 3, cshape, DT_F32);
        size_t row = (size_t)(context->shape[1] * context->shape[2]);
        for (int i = 0; i < n; i++) memcpy((float *)c->data + i * row, tensor_f32(context), row * sizeof(float));
        context = c;
    }
    float *ts = dod_malloc(sizeof(float) * (size_t)n, "timesteps");
    for (int i = 0; i < n; i++) ts[i] = tensor_data_f32(timestep)[0];
    int threads = 1;
#ifdef _OPENMP
    threads = omp_get_max_threads();
#endif

    if (backward) {
        sample->requires_grad = true;
    } else {
        ag_set_grad_enabled(false);
    }
    UnetOptions opt = {.recompute_blocks = recompute};
    double *t = dod_malloc(sizeof(double) * (size_t)iters, "times");
    for (int i = -1; i < iters; i++) {  // i == -1: warm-up
        double t0 = dod_now_seconds();
        Tensor *out = unet_forward(unet, sample, ts, context, &opt);
        if (backward) ag_backward_from(out, NULL);
        if (i >= 0) t[i] = (dod_now_seconds() - t0) * 1e3;
        ag_step_reset();
    }
    double ours = bench_median(t, iters);
    printf("unet forward%s: sample %s, context %s, weights %s, %d threads, median of %d\n",
           backward ? (recompute ? " + backward (recompute_blocks)" : " + backward") : "", shape_str(sample),
           shape_str(context), dtype_name(dtype), threads, iters);
    printf("ours:    %.3f ms   (arena peak %.1f MiB)\n", ours, arena_peak() / 1048576.0);
    double ref = backward ? -1 : torch_ms(fix, iters, size, batch, threads);
    if (ref > 0) {
        printf("torch:   %.3f ms\n", ref);
        printf("ratio ours/torch: %.2f\n", ours / ref);
    }
    free(t);
    free(ts);
    safetensors_close(st);
    unet_free(unet);
    return 0;
}

BENCH_REGISTER(unet, "UNet forward vs PyTorch", bench_unet_main)
