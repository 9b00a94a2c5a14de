// dod-encode-prompt: a prompt embedding file from a Stable Diffusion directory's tokenizer/ and
// text_encoder/ (layers/sd_prompt.h), for [model] prompt_embedding and scripts.
//
//   dod-encode-prompt --base SD_DIR --prompt TEXT --out FILE [--negative-prompt TEXT] [--dtype f32|f16|bf16]
//                     [--device cpu|cuda]
// Writes FILE (atomically): "prompt_embeds" [77, D] and, with --negative-prompt, "negative_prompt_embeds",
// stored as --dtype (default f32), with the prompts and the base's identity as metadata.
// Exit status: 0 done, 1 the work failed (message names the folder or file), 2 bad usage.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/cuda/cuda_backend.h"
#include "layers/sd_prompt.h"

static void usage(FILE *out, int status) {
    fprintf(out, "usage: dod-encode-prompt --base SD_DIR --prompt TEXT --out FILE [--negative-prompt TEXT]\n"
                 "                         [--dtype f32|f16|bf16] [--device cpu|cuda]\n");
    exit(status);
}

int main(int argc, char **argv) {
    if (dod_version_requested(argc, argv, "dod-encode-prompt")) return 0;
    const char *base = NULL, *prompt = NULL, *negative = NULL, *out = NULL, *dtype_s = "f32", *device_s = "cpu";
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) usage(stdout, 0);
        const char **slot = !strcmp(argv[i], "--base")              ? &base
                            : !strcmp(argv[i], "--prompt")          ? &prompt
                            : !strcmp(argv[i], "--negative-prompt") ? &negative
                            : !strcmp(argv[i], "--out")             ? &out
                            : !strcmp(argv[i], "--dtype")           ? &dtype_s
                            : !strcmp(argv[i], "--device")          ? &device_s
                                                                    : NULL;
        if (!slot || i + 1 >= argc) {
            fprintf(stderr, "dod-encode-prompt: %s: %s\n", argv[i], slot ? "needs a value" : "unknown option");
            usage(stderr, 2);
        }
        *slot = argv[++i];
    }
    if (!base || !prompt || !out) {
        fprintf(stderr, "dod-encode-prompt: --base, --prompt and --out are required (--prompt \"\" is allowed)\n");
        usage(stderr, 2);
    }
    DType dtype = !strcmp(dtype_s, "f32") ? DT_F32 : !strcmp(dtype_s, "f16") ? DT_F16 : !strcmp(dtype_s, "bf16") ? DT_BF16
                                                                                                                 : (DType)-1;
    if ((int)dtype < 0 || (strcmp(device_s, "cpu") && strcmp(device_s, "cuda"))) {
        fprintf(stderr, "dod-encode-prompt: --dtype %s / --device %s: expected f32|f16|bf16 and cpu|cuda\n", dtype_s,
                device_s);
        usage(stderr, 2);
    }
    Device device = strcmp(device_s, "cuda") ? DEV_CPU : DEV_CUDA;
    if (device == DEV_CUDA && !dod_cuda_available())
        dod_fatal("dod-encode-prompt", "--device cuda: %s", dod_cuda_unavailable_reason());
    SdPromptEmbeds e;
    char *identity = NULL, err[2048];
    if (sd_prompt_encode(base, prompt, negative, DT_F32, device, "--prompt", &e, &identity, err, sizeof err) ||
        sd_prompt_save(out, &e, dtype, prompt, negative, base, identity, err, sizeof err))
        dod_fatal("dod-encode-prompt", "%s", err);
    printf("dod-encode-prompt: wrote %s: prompt_embeds [%ld, %ld]%s %s\n", out, (long)e.prompt->shape[0],
           (long)e.prompt->shape[1], e.negative ? " and negative_prompt_embeds" : "", dtype_s);
    sd_prompt_embeds_free(&e);
    free(identity);
    return 0;
}
