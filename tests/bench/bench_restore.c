// dod-bench restore: seconds per image of the restoration path (eval/restore.h, what dod-restore runs)
// at --size x --size, against PyTorch restoring the same image with the same adapter in the same
// invocation (scripts/bench_restore_torch.py: diffusers + PEFT through scripts/load_adapter.py), with
// peak memory on both sides.
//
// The model: the spec-sized DOD (dod_model_default_config: rank 8, cnn extractor) on the tiny SD
// fixture (tests/fixtures/sd/sd2_tiny/model) or on --base DIR, --random-weights building the frozen
// UNet/VAE from DIR's configs (layers/sd_random.h; e.g. the SD 2.1-base shapes of scripts/gpu-check.sh).
// Its trained tensors are perturbed from their initial values (LoRA B != 0, a modulation that matters)
// and exported (layers/adapter.h) to a temporary adapter for the PyTorch side. Restoration runs with
// --max-memory 0 by default (the extractor and VAE on the whole image on both sides: the same work;
// load_adapter.py has no VAE tiles) and the public UNet latent tiles (96 / 32), which both sides run;
// with --max-memory G ours may tile the VAE, and the PyTorch side then uses diffusers' own tiled VAE in
// tiles of the same size (each tile its own GroupNorm statistics: similar, not the same, work).
//
// --merge-study also times, on one UNet tile, the UNet with its adapters against the UNet with them
// off (what a per-image merged UNet costs: W0 + s B diag(1 + gamma) A has the base layer's cost) and the
// merge itself (lora_merge of every UNet adapter, once per image): merging pays off for an image whose
// tile count exceeds merge time / (adapters - off).
//
// Options: --size S (512), --iters N (3), --device cpu|cuda (cpu; cuda: bf16 weights, mixed precision,
// bf16 activations, as dod-restore), --base DIR [--random-weights], --tile N --overlap N (96, 32),
// --max-memory G (0), --no-torch, --merge-study.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "autograd/cuda/cuda_backend.h"
#include "eval/restore.h"
#include "layers/adapter.h"
#include "tests/bench/bench.h"

static int usage(const char *arg) {
    printf("usage: dod-bench restore [--size S] [--iters N] [--device cpu|cuda] [--base DIR [--random-weights]]\n"
           "                         [--tile N --overlap N] [--max-memory G] [--no-torch] [--merge-study]\n");
    return strcmp(arg, "--help") ? 2 : 0;
}

// Seconds of the UNet on one latent tile (median of n, after a warm-up).
static double time_unet(DodModel *m, Tensor *z, int n) {
    double t[16];
    for (int i = -1; i < n; i++) {
        double t0 = dod_now_seconds();
        size_t mk = arena_mark();
        dod_model_predict(m, z);
        if (m->device == DEV_CUDA) dod_cuda_synchronize("dod-bench restore");
        arena_release(mk);
        if (i >= 0) t[i] = dod_now_seconds() - t0;
    }
    return bench_median(t, n);
}

static void merge_study(DodModel *m, int tile) {
    bool prev = ag_set_grad_enabled(false);
    int f = 1 << (m->vae->cfg.n_levels - 1);
    Tensor *img = tensor_new4(1, 3, (int64_t)tile * f, (int64_t)tile * f);
    tensor_rand_uniform(img, 5, -1.0f, 1.0f);
    Tensor *gamma[LORA_N_BLOCKS], *beta[LORA_N_BLOCKS];
    dod_model_modulation(m, img, gamma, beta);
    dod_model_set_modulation(m, gamma, beta);
    Tensor *z = tensor_new4(1, m->unet->cfg.in_channels, tile, tile);
    tensor_rand_uniform(z, 6, -1.0f, 1.0f);
    double with = time_unet(m, z, 3);
    lora_set_enabled(m->unet_lora, false);
    double off = time_unet(m, z, 3);
    lora_set_enabled(m->unet_lora, true);
    // the merge of every UNet adapter for this image's modulation (host weights: the CPU path)
    double t0 = dod_now_seconds(), bytes = 0;
    float g[64] = {0}, b[64] = {0};
    for (int i = 0; i < lora_set_count(m->unet_lora); i++) {
        LoraAdapter *ad = lora_set_at(m->unet_lora, i);
        char name[512];
        snprintf(name, sizeof name, "%s.weight", ad->layer);
        Tensor *w0 = params_require(m->unet->net.ps, name, "merge study");
        snprintf(name, sizeof name, "%s.bias", ad->layer);
        Tensor *b0 = params_get(m->unet->net.ps, name);
        Tensor *w = tensor_new_persistent("merged", w0->ndim, w0->shape, DT_F32);
        int64_t bs[1] = {ad->out};
        Tensor *bias = tensor_new_persistent("merged bias", 1, bs, DT_F32);
        lora_merge(ad, w0, b0, g, b, w, bias);
        bytes += (double)w->numel * 4;
        tensor_free(w);
        tensor_free(bias);
    }
    double merge = dod_now_seconds() - t0;
    printf("merge study (UNet on one %dx%d latent tile): adapters %.3f s, adapters off (= a merged UNet) %.3f s, "
           "merging %d adapters %.3f s (%.2f GiB of merged f32 weights); merging pays off from %.1f tiles per image\n",
           tile, tile, with, off, lora_set_count(m->unet_lora), merge, bytes / 1073741824.0,
           with > off ? merge / (with - off) : INFINITY);
    dod_model_set_modulation(m, NULL, NULL);
    ag_step_reset();
    ag_set_grad_enabled(prev);
}

static int bench_restore_main(int argc, char **argv) {
    int size = 512, iters = 3;
    bool random_weights = false, no_torch = false, study = false;
    const char *base = NULL, *device_name = "cpu";
    RestoreOptions ro = restore_options_default();
    ro.max_memory_gib = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--size") && i + 1 < argc) size = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--iters") && i + 1 < argc) iters = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--device") && i + 1 < argc) device_name = argv[++i];
        else if (!strcmp(argv[i], "--base") && i + 1 < argc) base = argv[++i];
        else if (!strcmp(argv[i], "--tile") && i + 1 < argc) ro.tile = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--overlap") && i + 1 < argc) ro.overlap = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--max-memory") && i + 1 < argc) ro.max_memory_gib = atof(argv[++i]);
        else if (!strcmp(argv[i], "--random-weights")) random_weights = true;
        else if (!strcmp(argv[i], "--no-torch")) no_torch = true;
        else if (!strcmp(argv[i], "--merge-study")) study = true;
        else return usage(argv[i]);
    }
    const char *who = "dod-bench restore";
    char err[ADAPTER_ERR_LEN];
    DOD_CHECK(size >= 8 && iters >= 1 && iters <= 16, who, "--size %d must be >= 8, --iters %d in 1..16", size, iters);
    DOD_CHECK(!strcmp(device_name, "cpu") || !strcmp(device_name, "cuda"), who, "--device %s: cpu or cuda", device_name);
    DOD_CHECK(!random_weights || base, who, "--random-weights needs --base DIR (the configs to build from)");
    DOD_CHECK(restore_check_options(&ro, err, sizeof err) == 0, who, "%s", err);
    const bool cuda = !strcmp(device_name, "cuda");
    if (cuda) {
        if (!dod_cuda_available()) dod_fatal(who, "no CUDA device: %s", dod_cuda_unavailable_reason());
        dod_cuda_set_precision(DOD_PREC_MIXED);
    }
    ag_set_activation_dtype(cuda ? DT_BF16 : DT_F32);
    int threads = 1;
#ifdef _OPENMP
    threads = omp_get_max_threads();
#endif
    const char *dir = base ? base : DOD_SOURCE_DIR "/tests/fixtures/sd/sd2_tiny/model";
    DodModelConfig cfg = dod_model_default_config(1);
    cfg.base_model_dir = dir;
    cfg.random_base_weights = random_weights;
    cfg.zero_prompt = true;   // a random base has no text encoder, and the time does not depend on the prompt
    if (cuda) cfg.frozen_dtype = DT_BF16;   // as dod-restore keeps them on a GPU
    double t_load = dod_now_seconds();
    DodModel *m = dod_model_create(&cfg);
    ParamStore *ps = dod_model_params(m);
    for (int i = 0; i < params_count(ps); i++) {   // away from the initial values: every adapter matters
        Tensor *t = params_at(ps, i);
        float *x = tensor_data_f32(t);
        for (int64_t k = 0; k < t->numel; k++) x[k] += 0.01f * (float)((k * 2654435761u + (uint64_t)i) % 1000) / 1000.0f;
    }
    char adapter[256];
    snprintf(adapter, sizeof adapter, "/tmp/dod-bench-restore-%d.safetensors", (int)getpid());
    AdapterExportOptions eo = {.base_dir = dir, .checkpoint = "dod-bench restore", .dtype = DT_F32};
    DOD_CHECK(adapter_export(m, adapter, &eo, err, sizeof err) == 0, who, "%s", err);
    if (cuda) dod_model_to_device(m, DEV_CUDA);
    t_load = dod_now_seconds() - t_load;
    Model *model = model_dod_wrap(m);
    if (study) merge_study(m, ro.tile > 0 ? ro.tile : 64);

    const size_t n = (size_t)3 * size * size;
    float *x = dod_malloc(sizeof(float) * n, "bench image"), *y = dod_malloc(sizeof(float) * n, "bench output");
    for (size_t i = 0; i < n; i++) x[i] = (float)((i * 2654435761u) % 2001) / 1000.0f - 1.0f;
    double t[16];
    RestoreStats st;
    for (int i = -1; i < iters; i++) {
        double t0 = dod_now_seconds();
        DOD_CHECK(restore_chw(model, x, size, size, &ro, y, &st, err, sizeof err) == 0, who, "%s", err);
        if (i >= 0) t[i] = dod_now_seconds() - t0;
    }
    double ours = bench_median(t, iters);
    printf("dod restore of a %dx%d image on %s (%s), base %s%s, %d threads, median of %d (model set up in %.1f s): "
           "%d UNet tile%s, VAE %s\n",
           size, size, cuda ? dod_cuda_device_name() : "cpu", cuda ? "bf16 weights, mixed precision" : "f32", dir,
           random_weights ? " (random weights)" : "", threads, iters, t_load, st.unet_tiles, st.unet_tiles == 1 ? "" : "s",
           st.vae_tiles > 1 ? "tiled" : "whole");
    printf("ours:    %.3f s per image (%.3f s per megapixel)\n", ours, ours / ((double)size * size / 1e6));
    if (cuda) {
        DodCudaMemStats ms = dod_cuda_mem_stats();
        printf("ours peak memory: %.3f GiB reserved on the device (arena peak %.3f GiB)\n",
               ms.peak_reserved_bytes / 1073741824.0, ms.arena_peak_bytes / 1073741824.0);
    } else {
        printf("ours peak memory: arena peak %.1f MiB, process peak RSS %.1f MiB\n", arena_peak() / 1048576.0,
               dod_peak_rss_mib());
    }
    if (!no_torch) {
        char args[1200];
        snprintf(args, sizeof args, "--base '%s' --adapter '%s' --size %d --iters %d --threads %d --device %s --tile %d "
                 "--overlap %d --vae-tile %d%s", dir, adapter, size, iters, threads, device_name, ro.tile, ro.overlap,
                 st.vae_tiles > 1 ? st.vae_tile : 0, random_weights ? " --random-weights" : "");
        double peak = -1, ref = bench_torch_ms("bench_restore_torch.py", args, &peak);
        if (st.vae_tiles > 1)
            printf("(ours: %d VAE tiles of %d px with whole-image GroupNorm statistics; PyTorch: diffusers' tiled VAE in "
                   "%d px tiles)\n", st.vae_tiles, st.vae_tile, st.vae_tile);
        if (ref > 0) {
            printf("torch:   %.3f s per image\n", ref / 1e3);
            if (peak > 0) printf("torch peak memory: %.3f GiB (%s)\n", peak, cuda ? "max allocated" : "process peak RSS");
            printf("ratio ours/torch: %.2f\n", ours / (ref / 1e3));
        }
    }
    unlink(adapter);
    free(x);
    free(y);
    model_free(model);
    return 0;
}

BENCH_REGISTER(restore, "restoration of one image (dod-restore's path) vs PyTorch + diffusers + PEFT", bench_restore_main)
