#!/usr/bin/env python3
"""Makes the fixed prompt-embedding file of the DOD model from a text prompt, with the SD text encoder.

Run:   ${PYTHON:-python3} scripts/encode_prompt.py --model SD_DIR --prompt "..." --out prompt.safetensors
       ${PYTHON:-python3} scripts/encode_prompt.py --selftest     (the manual test below)
Needs: torch (1.13 works), transformers (4.33.x works with torch 1.13 and diffusers 0.21.4:
       scripts/fixture-env.sh pins transformers==4.33.3), safetensors.

SD_DIR is a diffusers layout: tokenizer/ (CLIPTokenizer: vocab.json, merges.txt) and text_encoder/
(CLIPTextModel). Writes one f32 tensor "prompt_embeds" [L, D] (L = the tokenizer's model_max_length,
77; D = the text encoder's hidden size, 1024 for SD 2.x), the name and shape layers/dod_model.c reads
([model] prompt_embedding of dod-train). When SD_DIR/unet/config.json exists, D must equal its
cross_attention_dim. The file is written to a temp name and renamed into place.

What is encoded follows OSEDiff's encode_prompt (cswry/OSEDiff osediff.py), on which DOD's public code
builds, and diffusers' StableDiffusionPipeline.encode_prompt with clip_skip=None:
  ids = tokenizer(prompt, padding="max_length", max_length=model_max_length, truncation=True)
  prompt_embeds = text_encoder(ids)[0]      the last hidden state, after the final layer norm;
no attention mask (CLIP's causal mask only), no penultimate layer (SD 2.x's own training used the
penultimate layer of OpenCLIP, but diffusers' SD 2.x text_encoder checkpoint is already cut to 23
layers, so its last hidden state IS that layer: nothing to skip here). A prompt longer than 77 tokens
is truncated with a warning. The public DOD material does not print its prompt; the prompt is the
caller's choice (an empty prompt "" is a valid, common choice for restoration).

Without the `ftfy` package transformers' CLIPTokenizer falls back to a basic text clean-up (it warns);
for ordinary lowercase ASCII prompts the tokens are the same.

Manual test (no test in ctest: it needs Python): `--selftest` builds a tiny random CLIPTextModel
(hidden size 16, 2 layers) and a CLIPTokenizer from a small vocabulary and merges list written to a
temp dir in the diffusers layout, encodes a prompt with this script's code path, and checks the file:
one tensor "prompt_embeds", f32, [77, 16], equal to text_encoder(ids).last_hidden_state recomputed
directly, the token ids start with <|startoftext|> and are padded to 77, and a prompt of 100 words is
truncated. With --out it also keeps the file: its width 16 is the tiny SD fixture's
cross_attention_dim, so
  ${PYTHON:-python3} scripts/encode_prompt.py --selftest --out p.safetensors
  dod-train --config configs/tiny.ini --set model.prompt_embedding=p.safetensors ...
exercises the C loader with it (checked by hand when the script was written).
"""
import argparse
import json
import os
import sys
import tempfile

TENSOR_NAME = "prompt_embeds"


def load(model_dir):
    from transformers import CLIPTextModel, CLIPTokenizer
    for part in ("tokenizer", "text_encoder"):
        if not os.path.isdir(os.path.join(model_dir, part)):
            sys.exit(f"encode_prompt: {model_dir}: no {part}/ directory (expected a diffusers SD layout)")
    tokenizer = CLIPTokenizer.from_pretrained(model_dir, subfolder="tokenizer")
    text_encoder = CLIPTextModel.from_pretrained(model_dir, subfolder="text_encoder").float().eval()
    return tokenizer, text_encoder


def token_ids(tokenizer, prompt):
    """[1, model_max_length] ids, padded and truncated as OSEDiff / diffusers do; warns on truncation."""
    ids = tokenizer(prompt, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                    return_tensors="pt").input_ids
    full = tokenizer(prompt, padding="longest", return_tensors="pt").input_ids
    if full.shape[-1] > ids.shape[-1]:
        print(f"encode_prompt: warning: the prompt has {full.shape[-1]} tokens; CLIP keeps "
              f"{tokenizer.model_max_length} (the rest is dropped)", file=sys.stderr)
    return ids


def encode(tokenizer, text_encoder, prompt):
    """The prompt embedding [L, D] (float32): the text encoder's last hidden state."""
    import torch
    ids = token_ids(tokenizer, prompt)
    with torch.no_grad():
        emb = text_encoder(ids)[0]
    return emb[0].float().contiguous()


def check_unet_width(model_dir, width):
    path = os.path.join(model_dir, "unet", "config.json")
    if not os.path.exists(path):
        return
    with open(path) as f:
        dim = json.load(f).get("cross_attention_dim")
    dims = dim if isinstance(dim, list) else [dim]
    if any(d != width for d in dims):
        sys.exit(f"encode_prompt: {path}: cross_attention_dim {dim}, but the text encoder's width is {width}")


def save(emb, out, meta):
    from safetensors.torch import save_file
    out_dir = os.path.dirname(os.path.abspath(out))
    fd, tmp = tempfile.mkstemp(prefix=".encode_prompt.", suffix=".tmp", dir=out_dir)
    os.close(fd)
    try:
        save_file({TENSOR_NAME: emb}, tmp, metadata=meta)
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def run(model_dir, prompt, out):
    tokenizer, text_encoder = load(model_dir)
    emb = encode(tokenizer, text_encoder, prompt)
    check_unet_width(model_dir, emb.shape[1])
    save(emb, out, {"generator": "scripts/encode_prompt.py", "prompt": prompt,
                    "model": os.path.abspath(model_dir), "layer": "last_hidden_state"})
    print(f"encode_prompt: wrote {out}: {TENSOR_NAME} {list(emb.shape)} f32")
    return emb


# ---- the manual test -----------------------------------------------------------------------------
def build_tiny_model(root):
    """A tiny random CLIP text encoder and tokenizer in root/{text_encoder,tokenizer}."""
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer
    words = ["a", "photo", "of", "clean", "sharp", "image"]
    chars = sorted({c for w in words for c in w})
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in chars:  # every character alone and word-final, then the merged words
        vocab.setdefault(c, len(vocab))
        vocab.setdefault(c + "</w>", len(vocab))
    merges = []
    for w in words:  # left-to-right merges building each word
        parts = list(w[:-1]) + [w[-1] + "</w>"]
        while len(parts) > 1:
            merges.append(f"{parts[0]} {parts[1]}")
            parts = [parts[0] + parts[1]] + parts[2:]
            vocab.setdefault(parts[0], len(vocab))
    tok_dir = os.path.join(root, "tokenizer")
    os.makedirs(tok_dir)
    with open(os.path.join(tok_dir, "vocab.json"), "w") as f:
        json.dump(vocab, f)
    with open(os.path.join(tok_dir, "merges.txt"), "w") as f:
        f.write("#version: 0.2\n" + "\n".join(dict.fromkeys(merges)) + "\n")
    tokenizer = CLIPTokenizer(os.path.join(tok_dir, "vocab.json"), os.path.join(tok_dir, "merges.txt"),
                              model_max_length=77, pad_token="<|endoftext|>")
    tokenizer.save_pretrained(tok_dir)
    torch.manual_seed(0)
    cfg = CLIPTextConfig(vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=77, projection_dim=16,
                         bos_token_id=0, eos_token_id=1, pad_token_id=1)
    CLIPTextModel(cfg).save_pretrained(os.path.join(root, "text_encoder"))
    return vocab


def selftest(keep_out):
    import torch
    from safetensors import safe_open
    failures = []

    def check(ok, what):
        print(f"{'ok  ' if ok else 'FAIL'} {what}")
        if not ok:
            failures.append(what)

    with tempfile.TemporaryDirectory() as root:
        vocab = build_tiny_model(root)
        out = keep_out or os.path.join(root, "prompt.safetensors")
        prompt = "a clean sharp photo"
        emb = run(root, prompt, out)
        with safe_open(out, framework="pt") as f:
            names = list(f.keys())
            got = f.get_tensor(TENSOR_NAME) if names == [TENSOR_NAME] else None
        check(names == [TENSOR_NAME], f"one tensor named {TENSOR_NAME} (got {names})")
        check(got is not None and got.dtype == torch.float32 and list(got.shape) == [77, 16],
              f"f32 [77, 16] (got {None if got is None else (got.dtype, list(got.shape))})")
        tokenizer, text_encoder = load(root)
        ids = token_ids(tokenizer, prompt)
        want = [vocab["<|startoftext|>"], vocab["a</w>"], vocab["clean</w>"], vocab["sharp</w>"], vocab["photo</w>"],
                vocab["<|endoftext|>"]]
        check(ids.shape == (1, 77) and ids[0, :6].tolist() == want and (ids[0, 6:] == vocab["<|endoftext|>"]).all(),
              f"token ids {ids[0, :8].tolist()}... start {want} and pad to 77")
        with torch.no_grad():
            direct = text_encoder(ids).last_hidden_state[0]
        check(got is not None and torch.equal(got, direct) and torch.equal(emb, direct),
              "equals text_encoder(ids).last_hidden_state")
        other = encode(tokenizer, text_encoder, "a sharp image")
        check(not torch.equal(other, direct), "a different prompt gives a different embedding")
        long_ids = token_ids(tokenizer, " ".join(["photo"] * 100))
        check(long_ids.shape == (1, 77) and long_ids[0, -1].item() == vocab["<|endoftext|>"],
              "a 100-word prompt is truncated to 77 tokens ending with <|endoftext|>")
    print(f"{'selftest passed' if not failures else f'selftest FAILED: {len(failures)} checks'}")
    return 1 if failures else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", help="diffusers SD directory with tokenizer/ and text_encoder/")
    ap.add_argument("--prompt", help='the prompt ("" is allowed)')
    ap.add_argument("--out", help="output .safetensors")
    ap.add_argument("--selftest", action="store_true", help="run the manual test on a tiny random CLIP")
    args = ap.parse_args()
    try:
        import safetensors  # noqa: F401
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as e:
        sys.exit(f"encode_prompt: needs {e.name} (see the header of {__file__})")
    if args.selftest:
        return selftest(args.out)
    if not args.model or args.prompt is None or not args.out:
        ap.error("--model, --prompt and --out are required (or --selftest)")
    run(args.model, args.prompt, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
