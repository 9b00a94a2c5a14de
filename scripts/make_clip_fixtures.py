#!/usr/bin/env python3
"""Fixtures of the C CLIP tokenizer and text encoder (layers/clip_tokenizer.h, layers/clip_text.h):
the real CLIP BPE vocabulary with the token ids transformers' CLIPTokenizer gives for a list of test
strings, and tiny random-weight CLIPTextModels (one per SD convention) beside the tiny SD fixtures,
with the hidden states transformers computes for a few prompts.

Run:   ${PYTHON:-python3} scripts/make_clip_fixtures.py --bpe BPE_GZ [--out tests/fixtures]
Needs: torch, transformers 4.33 (the reference; WITHOUT ftfy installed: CLIPTokenizer then cleans text
       with its BasicTokenizer, which is what the C tokenizer implements), safetensors, numpy.
BPE_GZ is bpe_simple_vocab_16e6.txt.gz, the CLIP BPE merge list OpenAI published with CLIP, as the
open_clip_torch wheel ships it (pip download --no-deps open-clip-torch; unzip
open_clip/bpe_simple_vocab_16e6.txt.gz). The transformers files derive from it as transformers'
conversion does: merges = lines 1 .. 48894, vocab = the 256 byte symbols, the same with "</w>", one
entry per merge, then <|startoftext|> and <|endoftext|> (49408 entries, the files of every SD 1.x/2.x
tokenizer/ folder).

Writes (OUT = --out):
  OUT/clip/tokenizer/{vocab.json.gz,merges.txt.gz}        the real vocabulary, gzip'd (the C reader reads
                                                          NAME or NAME.gz)
  OUT/clip/tokenizer/{special_tokens_map.json,tokenizer_config.json}   SD 1.x's (pad = <|endoftext|>)
  OUT/clip/tokenizer_sd2/{special_tokens_map.json,tokenizer_config.json} SD 2.x's (special_tokens_map
                                                          says pad "!", tokenizer_config <|endoftext|>:
                                                          transformers lets the map win)
  OUT/clip/tokens.json        [{"text", "sd1", "n_sd1", "sd2", "n_sd2": n_* = tokens before truncation;
                              (the 77 input_ids of tokenizer(text, padding="max_length", truncation=True)
                              less the trailing pad ids: the rest of the 77 is that tokenizer's pad id,
                              49407 for sd1, 0 for sd2)}]
  OUT/sd/sdK_tiny/model/tokenizer/    a CLIP tokenizer with the first MERGES merges only (small vocab)
  OUT/sd/sdK_tiny/model/text_encoder/{config.json,model.safetensors}  random CLIPTextModel, width =
                              that UNet's cross_attention_dim. sd1: quick_gelu, f32, pad = eos, plus the
                              I64 position_ids buffer older checkpoints carry; sd2: gelu, bf16 storage,
                              pad "!".
  OUT/clip/encode_sdK.safetensors   per prompt k: ids.k (I64 [77]) and hidden.k (F32 [77, D]) =
                              text_encoder(ids)[0] (last_hidden_state, what diffusers' pipeline uses),
                              computed in float64 from the stored weights; metadata prompt.k, count.
"""
import argparse
import gzip
import io
import json
import os
import random
import shutil
import sys

import numpy as np
import torch
from safetensors.torch import save_file


def gz_write(path, text):
    """Deterministic gzip (no name, mtime 0), so rerunning the script gives identical bytes."""
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, compresslevel=9, mtime=0) as f:
        f.write(text.encode("utf-8"))
    with open(path, "wb") as f:
        f.write(buf.getvalue())


def derive_vocab(bpe_gz, n_merges=None):
    from transformers.models.clip.tokenization_clip import bytes_to_unicode
    lines = gzip.open(bpe_gz).read().decode("utf-8").split("\n")
    merges = lines[1:49152 - 256 - 2 + 1]
    if n_merges is not None:
        merges = merges[:n_merges]
    symbols = list(bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    return {tok: i for i, tok in enumerate(vocab)}, merges


def special_tokens(pad):
    def added(content):
        return {"content": content, "lstrip": False, "normalized": True, "rstrip": False, "single_word": False}
    stm = {"bos_token": added("<|startoftext|>"), "eos_token": added("<|endoftext|>"), "pad_token": pad,
           "unk_token": added("<|endoftext|>")}
    cfg = {"add_prefix_space": False, "do_lower_case": True, "errors": "replace", "model_max_length": 77,
           "pad_token": "<|endoftext|>", "special_tokens_map_file": "./special_tokens_map.json",
           "tokenizer_class": "CLIPTokenizer"}
    for k in ("bos_token", "eos_token", "unk_token"):
        cfg[k] = dict(__type="AddedToken", **stm[k])
    return stm, cfg


def write_tokenizer(d, vocab, merges, pad, gz):
    os.makedirs(d, exist_ok=True)
    vocab_text = json.dumps(vocab, ensure_ascii=False)
    merges_text = "#version: 0.2\n" + "\n".join(merges) + "\n"
    if gz:
        gz_write(os.path.join(d, "vocab.json.gz"), vocab_text)
        gz_write(os.path.join(d, "merges.txt.gz"), merges_text)
    else:
        open(os.path.join(d, "vocab.json"), "w", encoding="utf-8").write(vocab_text)
        open(os.path.join(d, "merges.txt"), "w", encoding="utf-8").write(merges_text)
    write_special(d, pad)


def write_special(d, pad):
    os.makedirs(d, exist_ok=True)
    stm, cfg = special_tokens(pad)
    json.dump(stm, open(os.path.join(d, "special_tokens_map.json"), "w"), indent=2)
    json.dump(cfg, open(os.path.join(d, "tokenizer_config.json"), "w"), indent=2)


def load_reference(d, tmp):
    """transformers' slow CLIPTokenizer (what diffusers' pipelines load) from a folder; .gz files are
    unpacked into tmp first (transformers reads plain files only)."""
    from transformers import CLIPTokenizer
    os.makedirs(tmp, exist_ok=True)
    for name in os.listdir(d):
        src = os.path.join(d, name)
        if name.endswith(".gz"):
            open(os.path.join(tmp, name[:-3]), "wb").write(gzip.open(src).read())
        else:
            shutil.copy(src, tmp)
    tok = CLIPTokenizer.from_pretrained(tmp)
    if getattr(tok, "fix_text", None) is not None:
        sys.exit("ftfy is installed: CLIPTokenizer would clean text with ftfy, not the BasicTokenizer the C "
                 "tokenizer implements; run with a Python that lacks ftfy")
    return tok


def test_strings():
    """At least 200 strings: prompts, punctuation, numbers, accents (composed and decomposed), emoji,
    CJK, other scripts, HTML entities, apostrophes, whitespace and control characters, special-token
    text, and long inputs (truncated at 77)."""
    s = [
        "", " ", "   ", "\t\n", "a", "A", "a photo", "A photo of a cat", "a clean, sharp, high-resolution photo",
        "restored image, high quality, 4k", "photo of a dog; sitting on grass.", "Hello, World!", "hello!world",
        "x!!y", "!", "!!!", "?!", "...", "a... b", "--", "a - b", "a_b_c", "snake_case_name", "CamelCaseWord",
        "UPPERCASE WORDS", "MiXeD cAsE", "don't", "DON'T", "I'm", "you're", "we've", "she'll", "he'd", "it's",
        "'s", "'t", "O'Neil's", "rock 'n' roll", "can't won't shouldn't", "l'été", "it’s (curly)",
        "‘single’ “double”", "\"quoted\"", "'single quoted'", "(parens) [brackets] {braces}", "<angle>",
        "a/b\\c|d", "email@example.com", "https://example.com/path?q=1&r=2#frag", "#hashtag @mention",
        "$100 €50 £20 ¥1000", "50%", "3.14159", "1,000,000", "2024-01-31", "12:30pm", "1st 2nd 3rd 4th",
        "0", "007", "1234567890", "x2", "4k 8k 16k", "v1.5 v2.1", "H2O", "CO2 levels", "½ ¾ ⅓", "² ³ ⁴",
        "١٢٣ (Arabic-Indic digits)", "Ⅻ roman", "①②③", "𝟙𝟚𝟛 math digits",
        "café", "cafe\u0301", "naïve résumé", "Crème brûlée", "Ångström", "Straße", "ÆØÅ æøå", "Ærøskøbing",
        "İstanbul", "ΟΔΟΣ", "Σίσυφος", "Привет, мир", "ПРИВЕТ", "Ελληνικά", "שלום", "مرحبا بالعالم",
        "नमस्ते", "สวัสดี", "안녕하세요", "こんにちは", "カタカナ", "ｶﾀｶﾅ halfwidth", "東京タワー", "中文测试",
        "日本語のテキスト", "漢字かな混じり文", "한국어와 English", "mixed中文English", "Ａ full-width ＡＢＣ",
        "ﬁ ligature", "ǅ titlecase", "ß ẞ", "Ωmega", "µ micro", "Ⓐ circled",
        "😀", "😀😀😀", "a 😀 b", "👍🏽", "👨‍👩‍👧", "🇫🇷 flag", "❤️", "☃ snowman", "★☆", "→ ← ↑ ↓", "∑ ∫ √ ∞",
        "✓ ✗", "♪♫", "©®™", "§¶†‡", "•·", "—–-", "…", "«guillemets»", "¿Qué? ¡Sí!",
        "&amp;", "&lt;b&gt;bold&lt;/b&gt;", "&quot;hi&quot;", "&#39;", "&nbsp;", "<b>html</b>", "a&b", "tom & jerry",
        "a  b", "a   b    c", " leading", "trailing ", "\ttab\tseparated\t", "line\nbreak", "cr\r\nlf",
        "nbsp\u00a0space", "thin\u2009space", "ideographic\u3000space", "zero\u200bwidth", "soft\u00adhyphen",
        "line\u2028separator", "para\u2029separator", "nel\u0085char", "bell\u0007char", "esc\u001bchar",
        "\u001cfile\u001fsep", "bom\ufeffmark", "replacement\ufffdchar", "private\ue000use",
        "<|startoftext|>", "<|endoftext|>", "a <|endoftext|> b", "A <|ENDOFTEXT|>B", "<|startoftext|>x<|endoftext|>",
        "<|endoftext|><|endoftext|>", "<|notatoken|>", "<|", "|>", "<|endoftext", "endoftext|>",
        "</w>", "a</w>b", "word</w>",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ",
        "supercalifragilisticexpialidocious", "pneumonoultramicroscopicsilicovolcanoconiosis",
        "antidisestablishmentarianism", "qwrtypsdfghjklzxcvbnm", "xyzzy plugh", "zzzzzz",
        "ultra-detailed 8k uhd dslr, soft lighting, high quality, film grain, Fujifilm XT3",
        "masterpiece, best quality, (detailed:1.2), [background]", "a photo of an astronaut riding a horse on mars",
        "denoise, derain, dehaze, deblur, low-light enhancement",
        "clean image without noise, rain, haze or blur", "high-quality, sharp, detailed, realistic",
    ]
    words = ["photo", "of", "a", "cat", "sitting", "on", "the", "mat", "with", "soft", "light", "and", "rain",
             "haze", "noise", "blur", "sharp", "detail", "city", "night", "sky", "river", "mountain", "portrait"]
    rng = random.Random(20)
    for n in (20, 40, 74, 75, 76, 77, 78, 100, 200):
        s.append(" ".join(rng.choice(words) for _ in range(n)))
    s.append("a, " * 60)
    s.append("😀" * 50)
    s.append("中" * 90)
    s.append("1" * 120)
    s.append("word " * 80 + "END")
    pieces = ["a", "B", "é", "ß", "1", "23", "!", "?", ".", ",", "'s", "'", "-", " ", "  ", "中", "😀", "ж", "&",
              "\t", "<|endoftext|>", "x", "Σ", "ǅ", "e\u0301", "🇯🇵", "٣"]
    while len(s) < 260:
        s.append("".join(rng.choice(pieces) for _ in range(rng.randint(1, 12))))
    return s


def tokenize_all(tok, strings):
    out = []
    for text in strings:
        ids = tok(text, padding="max_length", max_length=tok.model_max_length, truncation=True).input_ids
        n = len(tok(text).input_ids) - 2  # untruncated: bos + tokens + eos
        out.append((ids, n))
    return out


# ---- tiny text encoders ----------------------------------------------------------------------------
def cross_dim(model_dir):
    return json.load(open(os.path.join(model_dir, "unet", "config.json")))["cross_attention_dim"]


def make_text_encoder(model_dir, vocab, merges, preset, seed):
    from transformers import CLIPTextConfig, CLIPTextModel
    D = cross_dim(model_dir)
    pad = "<|endoftext|>" if preset == "sd1" else "!"
    write_tokenizer(os.path.join(model_dir, "tokenizer"), vocab, merges, pad, gz=False)
    cfg = CLIPTextConfig(vocab_size=len(vocab), hidden_size=D, intermediate_size=2 * D, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=77, layer_norm_eps=1e-5,
                         hidden_act="quick_gelu" if preset == "sd1" else "gelu", projection_dim=D,
                         bos_token_id=vocab["<|startoftext|>"], eos_token_id=vocab["<|endoftext|>"],
                         pad_token_id=vocab["<|endoftext|>"] if preset == "sd1" else vocab["!"])
    torch.manual_seed(seed)
    model = CLIPTextModel(cfg).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # every parameter drawn afresh so each one matters (norms near 1, biases small)
        for name, t in model.named_parameters():
            if t.ndim == 1 and "norm" in name and name.endswith("weight"):
                t.copy_(1 + 0.1 * torch.randn(t.shape, generator=g))
            elif t.ndim == 1:
                t.copy_(0.05 * torch.randn(t.shape, generator=g))
            elif "embedding" in name:
                t.copy_(torch.randn(t.shape, generator=g))
            else:
                t.copy_(torch.randn(t.shape, generator=g) / t.shape[1] ** 0.5)
        if preset == "sd2":  # bf16 storage: the float64 reference uses the bf16-rounded values
            for t in model.parameters():
                t.copy_(t.to(torch.bfloat16).to(torch.float32))
    d = os.path.join(model_dir, "text_encoder")
    os.makedirs(d, exist_ok=True)
    cfg_dict = cfg.to_dict()
    cfg_dict["architectures"] = ["CLIPTextModel"]
    cfg_dict["torch_dtype"] = "float32" if preset == "sd1" else "bfloat16"
    json.dump(cfg_dict, open(os.path.join(d, "config.json"), "w"), indent=2, sort_keys=True)
    sd = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    if preset == "sd1":  # the buffer SD 1.x's released text_encoder files carry (I64); the loader skips it
        sd["text_model.embeddings.position_ids"] = torch.arange(77, dtype=torch.int64).unsqueeze(0)
    else:
        sd = {k: v.to(torch.bfloat16) for k, v in sd.items()}
    save_file(sd, os.path.join(d, "model.safetensors"), metadata={"format": "pt"})
    return model


def float64_causal_mask(input_ids_shape, dtype, device, past_key_values_length=0):
    """transformers 4.33's _make_causal_mask fills with finfo(dtype).min through a float32 tensor, which
    overflows for float64 under torch 1.13; the same mask (min above the diagonal, 0 elsewhere) built
    in the requested dtype."""
    bsz, tgt_len = input_ids_shape
    mask = torch.triu(torch.full((tgt_len, tgt_len), torch.finfo(dtype).min, dtype=dtype, device=device), 1)
    return mask[None, None, :, :].expand(bsz, 1, tgt_len, tgt_len + past_key_values_length)


def encode_references(model, tok, prompts, path):
    import transformers.models.clip.modeling_clip as modeling_clip
    modeling_clip._make_causal_mask = float64_causal_mask
    model = model.double()
    tensors, meta = {}, {"count": str(len(prompts))}
    with torch.no_grad():
        for k, p in enumerate(prompts):
            ids = tok(p, padding="max_length", max_length=tok.model_max_length, truncation=True,
                      return_tensors="pt").input_ids
            hidden = model(ids)[0][0]
            tensors[f"ids.{k}"] = ids[0].to(torch.int64).contiguous()
            tensors[f"hidden.{k}"] = hidden.float().contiguous()
            meta[f"prompt.{k}"] = p
    save_file(tensors, path, metadata=meta)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bpe", required=True, help="bpe_simple_vocab_16e6.txt.gz")
    ap.add_argument("--out", default="tests/fixtures")
    ap.add_argument("--tiny-merges", type=int, default=1500, help="merges kept by the tiny SD tokenizers")
    args = ap.parse_args()
    clip_dir = os.path.join(args.out, "clip")
    tmp = os.path.join(clip_dir, ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)

    vocab, merges = derive_vocab(args.bpe)
    assert len(vocab) == 49408 and len(merges) == 48894, (len(vocab), len(merges))
    write_tokenizer(os.path.join(clip_dir, "tokenizer"), vocab, merges, "<|endoftext|>", gz=True)
    write_special(os.path.join(clip_dir, "tokenizer_sd2"), "!")
    tok1 = load_reference(os.path.join(clip_dir, "tokenizer"), os.path.join(tmp, "sd1"))
    os.makedirs(os.path.join(tmp, "sd2"), exist_ok=True)
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(os.path.join(tmp, "sd1", name), os.path.join(tmp, "sd2", name))
    tok2 = load_reference(os.path.join(clip_dir, "tokenizer_sd2"), os.path.join(tmp, "sd2"))
    assert tok1.pad_token_id == 49407 and tok2.pad_token_id == 0, (tok1.pad_token_id, tok2.pad_token_id)

    strings = test_strings()
    r1, r2 = tokenize_all(tok1, strings), tokenize_all(tok2, strings)
    def unpadded(ids, pad):
        while ids and ids[-1] == pad:
            ids = ids[:-1]
        return ids
    rows = [{"text": t, "sd1": unpadded(a[0], tok1.pad_token_id), "n_sd1": a[1],
             "sd2": unpadded(b[0], tok2.pad_token_id), "n_sd2": b[1]} for t, a, b in zip(strings, r1, r2)]
    with open(os.path.join(clip_dir, "tokens.json"), "w", encoding="utf-8") as f:
        f.write("[\n" + ",\n".join(json.dumps(r, ensure_ascii=False, separators=(",", ":")) for r in rows) + "\n]\n")
    print(f"tokens.json: {len(rows)} strings, {sum(r['sd1'] != r['sd2'] for r in rows)} differ between pads")

    small_vocab, small_merges = derive_vocab(args.bpe, args.tiny_merges)
    prompts = ["", "a photo", "A clean, sharp photo of a cat; 4k!", "café naïve 東京 😀 don't",
               "a photo of " + "a very long prompt " * 20]
    for k, preset in enumerate(("sd1", "sd2")):
        model_dir = os.path.join(args.out, "sd", f"{preset}_tiny", "model")
        model = make_text_encoder(model_dir, small_vocab, small_merges, preset, seed=100 + k)
        tok = load_reference(os.path.join(model_dir, "tokenizer"), os.path.join(tmp, f"tiny_{preset}"))
        encode_references(model, tok, prompts, os.path.join(clip_dir, f"encode_{preset}.safetensors"))
    shutil.rmtree(tmp)
    print("done")


if __name__ == "__main__":
    main()
