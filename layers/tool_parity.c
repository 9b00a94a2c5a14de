// dod-parity: check our UNet and VAE forwards against diffusers outputs stored in a fixture.
//
// Usage: dod-parity FIX [--dtype f32|bf16|f16] [--only unet|vae] [--ckpt FILE] [--io FILE] [--device cpu|cuda]
//   FIX/model/unet/{config.json,diffusion_pytorch_model.safetensors}
//   FIX/model/vae/{config.json,diffusion_pytorch_model.safetensors}
//   FIX/io.safetensors: unet.sample, unet.timestep, unet.encoder_hidden_states, unet.out,
//                       vae.image, vae.mean, vae.logvar, vae.decoded (decoder applied to vae.mean)
// Prints one line per output (max abs error, max relative error = max abs error / max|ref|, the
// tolerance 1e-4 * max(1, max|ref|), OK/FAIL) and exits 0 only when every output is within it.
// With --dtype bf16/f16 the weights are stored in half precision and the errors are information
// only (no pass/fail: the reference is f32). --only runs one model (its outputs alone are judged).
// --ckpt loads both models from an original single-file checkpoint (LDM names) instead, with the
// configs from FIX/model (a checkpoint with f16/bf16 tensors is reported, not judged). --io takes
// the inputs and references from FILE instead of FIX/io.safetensors (other sizes, same model).
// After each model the activation arena's high-water mark so far is printed (the UNet runs first,
// so its line is the UNet's own peak; use --only vae for the VAE's).
// --device cuda: the weights and inputs are moved to the GPU (params_to_device, tensor_move_to), the
// forwards run there in the f32 precision mode (TF32 off) and the outputs come back for the same
// comparison with the same tolerance; the device memory report follows each model. Without a usable
// GPU it exits 1 with "no CUDA device: <reason>" before reading anything.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/base.h"
#include "autograd/cuda/cuda_backend.h"
#include "layers/safetensors.h"
#include "layers/unet.h"
#include "layers/vae.h"

typedef struct {
    SafeTensors *st;
    const char *path;
} IoFile;

// The f32 tensor `name` of the io file (a persistent copy or view); fatal naming file and tensor.
static Tensor *io_tensor(const IoFile *io, const char *name) {
    const StEntry *e = safetensors_find(io->st, name);
    if (!e) dod_fatal("dod-parity", "%s: tensor %s is missing", io->path, name);
    char err[ST_ERR_LEN];
    Tensor *t = NULL;
    if (safetensors_tensor(io->st, e, DT_F32, name, &t, err) != ST_OK) dod_fatal("dod-parity", "%s", err);
    return t;
}

// Compares ours against ref; prints the line; returns true when within tolerance (or info only).
static bool report(const char *what, const Tensor *ours, const Tensor *ref, bool judge) {
    if (!tensor_same_shape(ours, ref)) {
        printf("%-12s shape %s, reference %s  FAIL\n", what, shape_str(ours), shape_str(ref));
        return false;
    }
    const float *a = tensor_f32(ours), *b = tensor_f32(ref);
    double max_abs = 0, ref_max = 0;
    for (int64_t i = 0; i < ref->numel; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (!(d <= max_abs)) max_abs = d;  // NaN sticks
        if (fabs((double)b[i]) > ref_max) ref_max = fabs((double)b[i]);
    }
    double tol = 1e-4 * fmax(1.0, ref_max);
    double max_rel = ref_max > 0 ? max_abs / ref_max : max_abs;
    bool ok = max_abs <= tol;
    printf("%-12s max_abs %.3e  max_rel %.3e  max|ref| %.3e  tol %.3e  %s\n", what, max_abs, max_rel, ref_max, tol,
           judge ? (ok ? "OK" : "FAIL") : "INFO");
    return ok || !judge;
}

// t itself on the host, else an arena copy of it there (outputs computed on CUDA).
static Tensor *to_host(Tensor *t) { return t->device == DEV_CPU ? t : tensor_to_device(t, DEV_CPU); }

static void usage(FILE *f) {
    fprintf(f, "usage: dod-parity FIX [--dtype f32|bf16|f16] [--only unet|vae] [--ckpt FILE] [--io FILE]\n"
               "                  [--device cpu|cuda]\n"
               "  compares the UNet and VAE forwards with diffusers outputs in FIX/io.safetensors\n");
}

int main(int argc, char **argv) {
    if (dod_version_requested(argc, argv, "dod-parity")) return 0;
    const char *fix = NULL, *ckpt = NULL, *io_path = NULL;
    DType dtype = DT_F32;
    bool run_unet = true, run_vae = true, cuda = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--dtype") && i + 1 < argc) {
            const char *d = argv[++i];
            if (!strcmp(d, "f32")) dtype = DT_F32;
            else if (!strcmp(d, "bf16")) dtype = DT_BF16;
            else if (!strcmp(d, "f16")) dtype = DT_F16;
            else dod_fatal("dod-parity", "--dtype %s: expected f32, bf16 or f16", d);
        } else if (!strcmp(argv[i], "--device") && i + 1 < argc) {
            const char *d = argv[++i];
            if (!strcmp(d, "cuda")) cuda = true;
            else if (strcmp(d, "cpu")) dod_fatal("dod-parity", "--device %s: expected cpu or cuda", d);
        } else if (!strcmp(argv[i], "--io") && i + 1 < argc) {
            io_path = argv[++i];
        } else if (!strcmp(argv[i], "--ckpt") && i + 1 < argc) {
            ckpt = argv[++i];
        } else if (!strcmp(argv[i], "--only") && i + 1 < argc) {
            const char *o = argv[++i];
            run_unet = !strcmp(o, "unet");
            run_vae = !strcmp(o, "vae");
            if (!run_unet && !run_vae) dod_fatal("dod-parity", "--only %s: expected unet or vae", o);
        } else if (argv[i][0] == '-' || fix) {
            usage(stderr);
            dod_fatal("dod-parity", "unexpected argument '%s'", argv[i]);
        } else {
            fix = argv[i];
        }
    }
    if (!fix) {
        usage(stderr);
        return 2;
    }
    if (cuda) {
        if (!dod_cuda_available()) dod_fatal("dod-parity", "no CUDA device: %s", dod_cuda_unavailable_reason());
        dod_cuda_set_precision(DOD_PREC_F32);
    }
    Device dev = cuda ? DEV_CUDA : DEV_CPU;
    char path[1024], unet_dir[1024], vae_dir[1024], model_dir[1024];
    if (io_path) snprintf(path, sizeof path, "%s", io_path);
    else snprintf(path, sizeof path, "%s/io.safetensors", fix);
    snprintf(unet_dir, sizeof unet_dir, "%s/model/unet", fix);
    snprintf(vae_dir, sizeof vae_dir, "%s/model/vae", fix);
    snprintf(model_dir, sizeof model_dir, "%s/model", fix);
    IoFile io = {NULL, path};
    char err[ST_ERR_LEN];
    if (safetensors_open(path, &io.st, err) != ST_OK) dod_fatal("dod-parity", "%s", err);

    ag_set_grad_enabled(false);
    bool judge = dtype == DT_F32, ok = true;
    if (ckpt && judge) {  // half-precision weights in the file cannot match an f32 reference to 1e-4
        SafeTensors *c = NULL;
        if (safetensors_open(ckpt, &c, err) != ST_OK) dod_fatal("dod-parity", "%s", err);
        for (int i = 0; i < safetensors_count(c); i++) {
            DType dt = safetensors_entry(c, i)->dtype;
            if (dt == DT_F16 || dt == DT_BF16) judge = false;
        }
        safetensors_close(c);
        if (!judge) printf("%s stores half-precision weights: errors are information only\n", ckpt);
    }
    printf("fixture %s, io %s (weights %s%s%s) on %s\n", fix, path, dtype_name(dtype), ckpt ? " from " : "",
           ckpt ? ckpt : "", cuda ? dod_cuda_device_name() : "cpu");

    if (run_unet) {
        Unet *unet = ckpt ? unet_load(ckpt, dtype, model_dir) : unet_load(unet_dir, dtype, NULL);
        Tensor *sample = io_tensor(&io, "unet.sample");
        Tensor *timestep = io_tensor(&io, "unet.timestep");
        Tensor *context = io_tensor(&io, "unet.encoder_hidden_states");
        Tensor *unet_ref = io_tensor(&io, "unet.out");
        DOD_CHECK(timestep->numel == sample->shape[0], "dod-parity", "%s: unet.timestep has %ld entries, unet.sample %s",
                  path, (long)timestep->numel, shape_str(sample));
        params_to_device(unet->net.ps, dev);
        tensor_move_to(sample, dev);
        tensor_move_to(context, dev);
        Tensor *out = unet_forward(unet, sample, tensor_data_f32(timestep), context, NULL);  // timesteps: host floats
        ok &= report("unet.out", to_host(out), unet_ref, judge);
        printf("arena peak after unet %.1f MiB\n", arena_peak() / 1048576.0);
        if (cuda) dod_cuda_print_mem_report("after unet");
        ag_step_reset();
        unet_free(unet);
    }
    if (run_vae) {
        Vae *vae = ckpt ? vae_load(ckpt, dtype, model_dir) : vae_load(vae_dir, dtype, NULL);
        Tensor *image = io_tensor(&io, "vae.image");
        Tensor *mean_ref = io_tensor(&io, "vae.mean");
        params_to_device(vae->net.ps, dev);
        tensor_move_to(image, dev);
        VaeEncoded enc;
        vae_encode(vae, image, false, NULL, &enc);
        ok &= report("vae.mean", to_host(enc.mean), mean_ref, judge);
        ok &= report("vae.logvar", to_host(enc.logvar), io_tensor(&io, "vae.logvar"), judge);
        // The decoder runs on the reference mean so its error is its own.
        Tensor *mean_in = cuda ? tensor_to_device(mean_ref, DEV_CUDA) : mean_ref;
        Tensor *decoded = vae_decode(vae, mean_in, NULL, NULL, NULL);
        ok &= report("vae.decoded", to_host(decoded), io_tensor(&io, "vae.decoded"), judge);
        if (mean_in != mean_ref) tensor_free(mean_in);
        printf("arena peak after vae %.1f MiB\n", arena_peak() / 1048576.0);
        if (cuda) dod_cuda_print_mem_report("after vae");
        ag_step_reset();
        vae_free(vae);
    }
    safetensors_close(io.st);
    if (!ok) fprintf(stderr, "dod-parity: %s: outputs outside tolerance\n", fix);
    return ok ? 0 : 1;
}
