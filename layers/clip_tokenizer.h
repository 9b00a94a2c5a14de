// The CLIP BPE tokenizer of Stable Diffusion's text encoder, read from a diffusers `tokenizer/` folder,
// giving the input ids transformers 4.33's CLIPTokenizer (the slow tokenizer diffusers' pipelines load)
// gives for tokenizer(text, padding="max_length", max_length=model_max_length, truncation=True) when
// ftfy is not installed. docs/model-loading.md describes each step; in short:
//   1. the text is split at the special tokens' exact text (bos, eos, unk, pad and any
//      additional_special_tokens: "<|startoftext|>", "<|endoftext|>", and SD 2.x's pad "!"), each kept
//      as its own token;
//   2. every other piece is cleaned as transformers' BasicTokenizer(strip_accents=False,
//      do_split_on_punc=False) does: NUL, U+FFFD and control/format/unassigned characters (category C,
//      but tab, CR and LF) dropped, whitespace (category Zs, tab, CR, LF) made a space, spaces put
//      around CJK ideographs, NFC normalisation, split on whitespace, each word lower-cased, words
//      joined by single spaces;
//   3. the CLIP pattern <\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|
//      [^\s\p{L}\p{N}]+ (case-insensitive, Unicode classes: PCRE2 with UTF and UCP) splits it into words;
//   4. each word's UTF-8 bytes map to GPT-2's byte symbols, "</w>" marks the last one, and the merges
//      (merges.txt, first 48894 after the version line, ranked by line) are applied lowest rank first;
//      symbols missing from vocab.json become the unk token;
//   5. [bos] + the first model_max_length - 2 tokens + [eos], padded with the pad token to
//      model_max_length.
// Special tokens come from special_tokens_map.json, which wins over tokenizer_config.json (as in
// transformers' from_pretrained), over CLIPTokenizer's defaults; SD 1.x pads with <|endoftext|>, SD 2.x
// with "!". model_max_length comes from tokenizer_config.json. vocab.json and merges.txt may be
// stored gzip'd (NAME.gz is read when NAME is absent).
#pragma once
#include <stddef.h>
#include <stdint.h>

typedef struct ClipTokenizer ClipTokenizer;

// Loads DIR/{vocab.json,merges.txt,special_tokens_map.json,tokenizer_config.json} (=). NULL with a
// message naming the file and what is wrong (missing file, bad JSON, a special token not in the
// vocabulary, no model_max_length) in err.
ClipTokenizer *clip_tokenizer_load(const char *dir, char *err, size_t errlen);
// The same from four explicit paths (special_tokens_map may be NULL: tokenizer_config alone).
ClipTokenizer *clip_tokenizer_load_files(const char *vocab_json, const char *merges_txt,
                                         const char *special_tokens_map, const char *tokenizer_config, char *err,
                                         size_t errlen);
void clip_tokenizer_free(ClipTokenizer *t);

int clip_tokenizer_max_length(const ClipTokenizer *t);  // model_max_length (77 in SD)
int clip_tokenizer_vocab_size(const ClipTokenizer *t);  // entries of vocab.json
int64_t clip_tokenizer_bos_id(const ClipTokenizer *t);
int64_t clip_tokenizer_eos_id(const ClipTokenizer *t);
int64_t clip_tokenizer_pad_id(const ClipTokenizer *t);

// The token ids of text (UTF-8, NUL-terminated) without bos/eos, untruncated (=, *ids malloc'd, the
// caller frees; *n its length). -1 with "<who>: ..." in err when text is not valid UTF-8.
int clip_tokenize_all(const ClipTokenizer *t, const char *text, int64_t **ids, int *n, const char *who, char *err,
                      size_t errlen);
// The model input: ids[0 .. max_length) (=) = bos, the first max_length - 2 tokens, eos, pads.
// Returns the number of tokens the text has (before truncation; *n_dropped = how many were cut), or
// -1 as clip_tokenize_all.
int clip_tokenize(const ClipTokenizer *t, const char *text, int64_t *ids, int *n_dropped, const char *who, char *err,
                  size_t errlen);
