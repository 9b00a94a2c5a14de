// Prompt embeddings from a Stable Diffusion directory's own tokenizer/ and text_encoder/, as
// diffusers' StableDiffusionPipeline._encode_prompt (0.21) makes them: ids = tokenizer(prompt,
// padding="max_length", truncation=True) (layers/clip_tokenizer.h), embeds = text_encoder(ids)[0]
// (layers/clip_text.h), one [model_max_length, hidden_size] f32 tensor per prompt. A prompt longer than
// model_max_length - 2 tokens is truncated with a warning on stderr saying how many tokens were dropped.
//
// Files (safetensors, written atomically): tensor "prompt_embeds" [L, D] and, when there is one,
// "negative_prompt_embeds" [L, D]; metadata format = "dod-prompt-embeds", prompt, negative_prompt (when
// encoded), base (the directory) and base_identity (path, size and modification time of every tokenizer
// and text-encoder file read), so a cache is reused only for the same prompts and the same files.
#pragma once
#include <stdbool.h>
#include <stddef.h>

#include "autograd/tensor.h"

#define SD_PROMPT_FORMAT "dod-prompt-embeds"

typedef struct {
    Tensor *prompt;     // "prompt_embeds" [L, D], persistent f32 (CPU)
    Tensor *negative;   // "negative_prompt_embeds" [L, D], or NULL when no negative prompt was asked for
} SdPromptEmbeds;

// Encodes prompt and, unless negative is NULL, negative with base_dir/tokenizer and base_dir/text_encoder
// on `device` (weights stored as weight_dtype) into *out (=, CPU tensors). who names the prompts'
// source in warnings and errors (e.g. "[model] prompt"). 0, or -1 with a message naming the missing
// folder or the file at fault in err; *identity (when not NULL) receives the base identity (malloc'd).
int sd_prompt_encode(const char *base_dir, const char *prompt, const char *negative, DType weight_dtype,
                     Device device, const char *who, SdPromptEmbeds *out, char **identity, char *err, size_t errlen);

// sd_prompt_encode through a cache file: when cache_path holds embeddings of the same prompt, the same
// negative prompt and the same base identity they are loaded (and *reused set true), else they are
// encoded on the CPU and written there (a failed write is a warning). 0 or -1 with a message in err.
int sd_prompt_cached(const char *base_dir, const char *prompt, const char *negative, const char *cache_path,
                     const char *who, SdPromptEmbeds *out, bool *reused, char *err, size_t errlen);

// Writes e to path (prompt_embeds and negative_prompt_embeds when e->negative, stored as dtype) with the
// metadata above. 0 or -1 with a message in err.
int sd_prompt_save(const char *path, const SdPromptEmbeds *e, DType dtype, const char *prompt, const char *negative,
                   const char *base_dir, const char *identity, char *err, size_t errlen);

void sd_prompt_embeds_free(SdPromptEmbeds *e);
