// Prompt embeddings with a Stable Diffusion directory's text encoder (see sd_prompt.h).
#include "layers/sd_prompt.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "layers/clip_text.h"
#include "layers/clip_tokenizer.h"
#include "layers/safetensors.h"
#include "layers/sd_weights.h"

static bool is_dir(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
}

// Appends (+=) "path size mtime_s.mtime_ns\n" of dir/name (or dir/name.gz), if it exists, to *s.
static void identity_add(char **s, size_t *len, const char *dir, const char *name) {
    char path[1200];
    struct stat sb;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    if (stat(path, &sb) != 0) {
        snprintf(path, sizeof path, "%s/%s.gz", dir, name);
        if (stat(path, &sb) != 0) return;
    }
    char *real = realpath(path, NULL);
    char line[1600];
    int n = snprintf(line, sizeof line, "%s %lld %lld.%09ld\n", real ? real : path, (long long)sb.st_size,
                     (long long)sb.st_mtim.tv_sec, (long)sb.st_mtim.tv_nsec);
    free(real);
    *s = realloc(*s, *len + (size_t)n + 1);
    DOD_CHECK(*s, "sd_prompt", "out of memory for the base identity");
    memcpy(*s + *len, line, (size_t)n + 1);
    *len += (size_t)n;
}

// The identity of the files sd_prompt_encode reads under base_dir (malloc'd, =).
static char *base_identity(const char *base_dir) {
    static const char *const files[][2] = {
        {"tokenizer", "vocab.json"},           {"tokenizer", "merges.txt"},
        {"tokenizer", "special_tokens_map.json"}, {"tokenizer", "tokenizer_config.json"},
        {"text_encoder", "config.json"},      {"text_encoder", "model.safetensors"},
        {"text_encoder", "model.fp16.safetensors"}};
    char *s = dod_calloc(1, "base identity");
    size_t len = 0;
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        char dir[1100];
        snprintf(dir, sizeof dir, "%s/%s", base_dir, files[i][0]);
        identity_add(&s, &len, dir, files[i][1]);
    }
    return s;
}

// One prompt -> persistent f32 [L, D] on the CPU named `name` (=), or NULL with err set.
static Tensor *encode_one(const ClipTokenizer *tok, ClipTextModel *enc, const char *text, const char *name,
                          const char *who, char *err, size_t errlen) {
    int L = clip_tokenizer_max_length(tok), dropped = 0;
    int64_t *ids = dod_malloc(sizeof(int64_t) * (size_t)L, "prompt ids");
    int n = clip_tokenize(tok, text, ids, &dropped, who, err, errlen);
    if (n < 0) {
        free(ids);
        return NULL;
    }
    if (dropped > 0)
        fprintf(stderr, "dod: warning: %s: %d tokens, the text encoder takes %d: the last %d were dropped\n", who, n,
                L - 2, dropped);
    int64_t shape[2] = {L, enc->cfg.hidden_size};
    Tensor *out = tensor_new_persistent(name, 2, shape, DT_F32);
    ScratchScope sc = scratch_begin(enc->device);  // gives the forward's step memory back
    Tensor *y = clip_text_forward(enc, ids, L);
    device_copy(out->data, DEV_CPU, y->data, y->device, sizeof(float) * (size_t)out->numel);
    scratch_end(sc);
    free(ids);
    return out;
}

int sd_prompt_encode(const char *base_dir, const char *prompt, const char *negative, DType weight_dtype,
                     Device device, const char *who, SdPromptEmbeds *out, char **identity, char *err, size_t errlen) {
    memset(out, 0, sizeof *out);
    char tok_dir[1100], enc_dir[1100];
    snprintf(tok_dir, sizeof tok_dir, "%s/tokenizer", base_dir);
    snprintf(enc_dir, sizeof enc_dir, "%s/text_encoder", base_dir);
    for (int i = 0; i < 2; i++) {
        const char *d = i ? enc_dir : tok_dir;
        if (!is_dir(d)) {
            snprintf(err, errlen, "%s: no such folder: the prompt is encoded with the Stable Diffusion directory's "
                     "tokenizer/ and text_encoder/", d);
            return -1;
        }
    }
    ClipTokenizer *tok = clip_tokenizer_load(tok_dir, err, errlen);
    if (!tok) return -1;
    ClipTextModel *enc = clip_text_load(enc_dir, weight_dtype, err, errlen);
    if (!enc) {
        clip_tokenizer_free(tok);
        return -1;
    }
    int rc = -1;
    if (clip_tokenizer_vocab_size(tok) > enc->cfg.vocab_size ||
        clip_tokenizer_max_length(tok) > enc->cfg.max_positions) {
        snprintf(err, errlen, "%s: %d tokens of up to %d positions, but %s/config.json has vocab_size %d and "
                 "max_position_embeddings %d", tok_dir, clip_tokenizer_vocab_size(tok), clip_tokenizer_max_length(tok),
                 enc_dir, enc->cfg.vocab_size, enc->cfg.max_positions);
        goto done;
    }
    if (device != DEV_CPU) clip_text_to_device(enc, device);
    char neg_who[256];
    snprintf(neg_who, sizeof neg_who, "%s (negative)", who);
    out->prompt = encode_one(tok, enc, prompt ? prompt : "", "prompt_embeds", who, err, errlen);
    if (out->prompt && negative)
        out->negative = encode_one(tok, enc, negative, "negative_prompt_embeds", neg_who, err, errlen);
    if (!out->prompt || (negative && !out->negative)) {
        sd_prompt_embeds_free(out);
        goto done;
    }
    if (identity) *identity = base_identity(base_dir);
    rc = 0;
done:
    clip_text_free(enc);
    clip_tokenizer_free(tok);
    return rc;
}

int sd_prompt_save(const char *path, const SdPromptEmbeds *e, DType dtype, const char *prompt, const char *negative,
                   const char *base_dir, const char *identity, char *err, size_t errlen) {
    Tensor *ts[2];
    int n = 0;
    const Tensor *src[2] = {e->prompt, e->negative};
    for (int i = 0; i < 2; i++) {
        if (!src[i]) continue;
        ts[n] = tensor_new_persistent(src[i]->name, src[i]->ndim, src[i]->shape, DT_F32);
        memcpy(ts[n]->data, src[i]->data, sizeof(float) * (size_t)src[i]->numel);
        if (dtype != DT_F32) tensor_convert_dtype(ts[n], dtype);
        n++;
    }
    StMetadata meta[5] = {{"format", SD_PROMPT_FORMAT}, {"prompt", prompt ? prompt : ""},
                          {"base", base_dir}, {"base_identity", identity ? identity : ""},
                          {"negative_prompt", negative ? negative : ""}};
    char st_err[ST_ERR_LEN];
    StStatus s = safetensors_save(path, ts, n, meta, e->negative ? 5 : 4, st_err);
    for (int i = 0; i < n; i++) tensor_free(ts[i]);
    if (s != ST_OK) {
        snprintf(err, errlen, "%s", st_err);
        return -1;
    }
    return 0;
}

static bool same(const char *a, const char *b) { return a && b && !strcmp(a, b); }

// The cache's tensors when its metadata matches (=, true); false when absent, foreign or stale.
static bool cache_load(const char *path, const char *prompt, const char *negative, const char *identity,
                       SdPromptEmbeds *out) {
    SafeTensors *st;
    char st_err[ST_ERR_LEN];
    if (safetensors_open(path, &st, st_err) != ST_OK) return false;
    bool match = same(safetensors_metadata(st, "format"), SD_PROMPT_FORMAT) &&
                 same(safetensors_metadata(st, "prompt"), prompt) &&
                 same(safetensors_metadata(st, "base_identity"), identity) &&
                 (negative ? same(safetensors_metadata(st, "negative_prompt"), negative)
                           : !safetensors_metadata(st, "negative_prompt"));
    const StEntry *p = safetensors_find(st, "prompt_embeds"), *n = safetensors_find(st, "negative_prompt_embeds");
    match = match && p && p->ndim == 2 && (!negative || (n && n->ndim == 2));
    if (match && safetensors_tensor(st, p, DT_F32, "prompt_embeds", &out->prompt, st_err) == ST_OK &&
        (!negative || safetensors_tensor(st, n, DT_F32, "negative_prompt_embeds", &out->negative, st_err) == ST_OK)) {
        sd_tensor_make_owned(out->prompt);  // views of the mapping would die with it
        if (out->negative) sd_tensor_make_owned(out->negative);
    } else {
        match = false;
    }
    safetensors_close(st);
    return match;
}

int sd_prompt_cached(const char *base_dir, const char *prompt, const char *negative, const char *cache_path,
                     const char *who, SdPromptEmbeds *out, bool *reused, char *err, size_t errlen) {
    memset(out, 0, sizeof *out);
    *reused = false;
    char *identity = base_identity(base_dir);
    if (cache_path && cache_load(cache_path, prompt ? prompt : "", negative, identity, out)) {
        *reused = true;
        free(identity);
        return 0;
    }
    sd_prompt_embeds_free(out);
    free(identity);
    identity = NULL;
    if (sd_prompt_encode(base_dir, prompt, negative, DT_F32, DEV_CPU, who, out, &identity, err, errlen)) return -1;
    if (cache_path && sd_prompt_save(cache_path, out, DT_F32, prompt, negative, base_dir, identity, err, errlen))
        fprintf(stderr, "dod: warning: prompt embeddings not cached: %s\n", err);  // the embeddings stand
    free(identity);
    return 0;
}

void sd_prompt_embeds_free(SdPromptEmbeds *e) {
    tensor_free(e->prompt);
    tensor_free(e->negative);
    e->prompt = e->negative = NULL;
}
