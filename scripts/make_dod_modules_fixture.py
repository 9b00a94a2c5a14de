#!/usr/bin/env python3
"""PyTorch references for the DOD trainable modules (layers/lora.c, dod_modulation.c, dod_detail.c).

Builds each module with small sizes and random, non-degenerate weights (normal, NOT the tiny 1e-5
init, so every gradient is meaningful), runs forward and backward of L = sum(out * wts) with fixed
random weights wts, and dumps inputs, parameters, outputs, wts and every gradient ("grad.<name>"):

  tests/fixtures/dod_modules/lora.safetensors        conditional LoRA on a linear 12->10 over tokens
      [2, 3, 12] ("lin"), a 3x3 conv 6->5 stride 1 ("conv"), a 3x3 conv stride 2 padding 1 (UNet
      downsampler, "down"), and plain LoRA on a VAE-style downsampler (pad (0,1,0,1), stride 2,
      padding 0; "vaedown"). r = 4, alpha = 6 (s = 1.5).
  tests/fixtures/dod_modules/modulation.safetensors  the S3Diff-style modulation with the built-in cnn
      extractor: y [2, 3, 16, 16], cnn widths 4-6-8-8, de 12, block 6, r = 4 -> gamma, beta [10, 2, 4].
  tests/fixtures/dod_modules/detail.safetensors      the detail module for a tiny VAE config
      (block_out_channels (4, 6), 2 groups, RRDB growth 4): up blocks 0 and 1 with their skips.

With --targets (needs diffusers 0.21, builds the full-size SD 2.1 UNet and VAE on the CPU, ~4 GB RAM):
  tests/fixtures/dod_modules/sd21_unet_config.json, sd21_vae_config.json   SD 2.1's configs
  tests/fixtures/dod_modules/sd21_lora_targets.txt   every LoRA target PEFT would pick with OSEDiff's
      target_modules (UNet list; VAE-encoder regex), one "<layer> <block> <linear|conv> <in> <out> <k>"
      a line; tests/test_lora.c checks layers/lora.c's selection against it.

The formulas are written here from docs/dod-modules.md / the DOD spec, independently of the C code.
tests/test_dod_modules.c matches outputs and gradients within 1e-5 * max(1, max|ref|).

Needs: torch (Debian python3-torch 1.13 works) and safetensors. No diffusers.
Run:   ${PYTHON:-python3} scripts/make_dod_modules_fixture.py [--targets]
"""
import json
import os
import re
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "dod_modules")
R, ALPHA = 4, 6.0
S = ALPHA / R


def leaf(t):
    return t.detach().clone().requires_grad_(True)


def dump(path, tensors, outputs):
    """tensors: leaves (dumped with their grads); outputs: name -> (value, wts) pairs."""
    loss = 0
    flat = {}
    for name, (value, wts) in outputs.items():
        loss = loss + (value * wts).sum()
        flat[name] = value.detach()
        flat[name + ".wts"] = wts
    loss.backward()
    for name, t in tensors.items():
        flat[name] = t.detach()
        assert t.grad is not None, name
        flat["grad." + name] = t.grad.detach()
    flat = {k: v.contiguous().float() for k, v in flat.items()}
    tmp = path + ".tmp"
    save_file(flat, tmp, metadata={"generator": "scripts/make_dod_modules_fixture.py"})
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    print(f"wrote {path} ({os.path.getsize(path)} bytes, {len(flat)} tensors)")


# ---- conditional LoRA ------------------------------------------------------------------------------
def lora_linear(x, w0, b0, a, b, gamma, beta):
    ax = F.linear(x, a)                                   # [N, L, r]
    if gamma is not None:
        ax = (1 + gamma[:, None, :]) * ax + beta[:, None, :]
    return F.linear(x, w0, b0) + S * F.linear(ax, b)


def lora_conv(x, w0, b0, a, b, gamma, beta, stride, padding):
    ax = F.conv2d(x, a, None, stride, padding)            # [N, r, H', W']
    if gamma is not None:
        ax = (1 + gamma[:, :, None, None]) * ax + beta[:, :, None, None]
    return F.conv2d(x, w0, b0, stride, padding) + S * F.conv2d(ax, b)


def make_lora():
    g = torch.Generator().manual_seed(2024)
    rn = lambda *s, std=1.0: torch.randn(*s, generator=g) * std
    t, outs = {}, {}
    N = 2
    # linear 12 -> 10 over tokens
    for k, v in {"lin.x": rn(N, 3, 12), "lin.W0": rn(10, 12, std=0.3), "lin.b0": rn(10, std=0.1),
                 "lin.A": rn(R, 12, std=0.3), "lin.B": rn(10, R, std=0.3),
                 "lin.gamma": rn(N, R, std=0.5), "lin.beta": rn(N, R, std=0.5)}.items():
        t[k] = leaf(v)
    y = lora_linear(t["lin.x"], t["lin.W0"], t["lin.b0"], t["lin.A"], t["lin.B"], t["lin.gamma"], t["lin.beta"])
    outs["lin.y"] = (y, rn(*y.shape))
    # convs 6 -> 5, 3x3: stride 1 pad 1, stride 2 pad 1 (conditional); VAE downsampler (plain)
    for name, hw in (("conv", 5), ("down", 6), ("vaedown", 6)):
        for k, v in {"x": rn(N, 6, hw, hw), "W0": rn(5, 6, 3, 3, std=0.2), "b0": rn(5, std=0.1),
                     "A": rn(R, 6, 3, 3, std=0.2), "B": rn(5, R, 1, 1, std=0.3)}.items():
            t[f"{name}.{k}"] = leaf(v)
        if name != "vaedown":
            t[f"{name}.gamma"] = leaf(rn(N, R, std=0.5))
            t[f"{name}.beta"] = leaf(rn(N, R, std=0.5))
        p = lambda k: t[f"{name}.{k}"]
        if name == "conv":
            y = lora_conv(p("x"), p("W0"), p("b0"), p("A"), p("B"), p("gamma"), p("beta"), 1, 1)
        elif name == "down":
            y = lora_conv(p("x"), p("W0"), p("b0"), p("A"), p("B"), p("gamma"), p("beta"), 2, 1)
        else:
            y = lora_conv(F.pad(p("x"), (0, 1, 0, 1)), p("W0"), p("b0"), p("A"), p("B"), None, None, 2, 0)
        outs[f"{name}.y"] = (y, rn(*y.shape))
    dump(os.path.join(OUT, "lora.safetensors"), t, outs)


# ---- modulation ------------------------------------------------------------------------------------
CNN, DE, BLK, NBLK = (4, 6, 8, 8), 12, 6, 10


def make_modulation():
    g = torch.Generator().manual_seed(77)
    rn = lambda *s, std=1.0: torch.randn(*s, generator=g) * std
    t = {"mod.y": leaf(rn(2, 3, 16, 16))}
    cin = 3
    for i, c in enumerate(CNN):
        t[f"mod.cnn.{i}.weight"] = leaf(rn(c, cin, 3, 3, std=(cin * 9) ** -0.5))
        t[f"mod.cnn.{i}.bias"] = leaf(rn(c, std=0.1))
        cin = c
    t["mod.de_mlp.weight"] = leaf(rn(DE, CNN[-1], std=0.5))
    t["mod.de_mlp.bias"] = leaf(rn(DE, std=0.1))
    t["mod.block_embeddings.weight"] = leaf(rn(NBLK, BLK))
    t["mod.block_mlp.weight"] = leaf(rn(BLK, BLK, std=0.4))
    t["mod.block_mlp.bias"] = leaf(rn(BLK, std=0.1))
    t["mod.fuse_mlp.weight"] = leaf(rn(2 * R, DE + BLK, std=0.3))
    t["mod.fuse_mlp.bias"] = leaf(rn(2 * R, std=0.1))

    h = t["mod.y"]
    for i in range(len(CNN)):
        h = F.silu(F.conv2d(h, t[f"mod.cnn.{i}.weight"], t[f"mod.cnn.{i}.bias"], stride=2, padding=1))
    d = h.mean(dim=(2, 3))                                                   # [N, D]
    e = F.relu(F.linear(d, t["mod.de_mlp.weight"], t["mod.de_mlp.bias"]))    # [N, DE]
    bk = F.relu(F.linear(t["mod.block_embeddings.weight"], t["mod.block_mlp.weight"], t["mod.block_mlp.bias"]))
    gam, bet = [], []
    for k in range(NBLK):
        cat = torch.cat([e, bk[k].expand(e.shape[0], BLK)], dim=1)         # [e ; b_k]
        gb = F.linear(cat, t["mod.fuse_mlp.weight"], t["mod.fuse_mlp.bias"])
        gam.append(gb[:, :R])
        bet.append(gb[:, R:])
    gamma, beta = torch.stack(gam), torch.stack(bet)                         # [10, N, r]
    outs = {"mod.d": (d, rn(*d.shape)), "mod.gamma": (gamma, rn(*gamma.shape)), "mod.beta": (beta, rn(*beta.shape))}
    dump(os.path.join(OUT, "modulation.safetensors"), t, outs)


# ---- detail module ---------------------------------------------------------------------------------
BOC, GROUPS, GROWTH, EPS = (4, 6), 2, 4, 1e-6


def dec_channels(i):
    L = len(BOC)
    return BOC[L - 1] if i == 0 else BOC[L - i]


def skip_channels(j):
    return BOC[0] if j == 0 else BOC[j - 1]


def make_detail():
    g = torch.Generator().manual_seed(5)
    rn = lambda *s, std=1.0: torch.randn(*s, generator=g) * std
    t = {}

    def conv_p(name, cout, cin, k):
        t[f"det.{name}.weight"] = leaf(rn(cout, cin, k, k, std=(cin * k * k) ** -0.5))
        t[f"det.{name}.bias"] = leaf(rn(cout, std=0.1))

    def norm_p(name, c):
        t[f"det.{name}.weight"] = leaf(1 + rn(c, std=0.2))
        t[f"det.{name}.bias"] = leaf(rn(c, std=0.2))

    def res_p(pre, cin, cout):
        norm_p(f"{pre}.norm1", cin)
        conv_p(f"{pre}.conv1", cout, cin, 3)
        norm_p(f"{pre}.norm2", cout)
        conv_p(f"{pre}.conv2", cout, cout, 3)
        if cin != cout:
            conv_p(f"{pre}.conv_shortcut", cout, cin, 1)

    P = lambda name: t[f"det.{name}"]

    def conv(name, x, pad):
        return F.conv2d(x, P(name + ".weight"), P(name + ".bias"), padding=pad)

    def norm_silu(name, x):
        return F.silu(F.group_norm(x, GROUPS, P(name + ".weight"), P(name + ".bias"), EPS))

    def resblock(pre, x):
        h = conv(f"{pre}.conv1", norm_silu(f"{pre}.norm1", x), 1)
        h = conv(f"{pre}.conv2", norm_silu(f"{pre}.norm2", h), 1)
        sc = conv(f"{pre}.conv_shortcut", x, 0) if f"det.{pre}.conv_shortcut.weight" in t else x
        return h + sc

    def rdb(pre, x):
        feats = [x]
        for j in range(1, 5):
            feats.append(F.leaky_relu(conv(f"{pre}.conv{j}", torch.cat(feats, 1), 1), 0.2))
        return conv(f"{pre}.conv5", torch.cat(feats, 1), 1) * 0.2 + x

    def rrdb(pre, x):
        h = x
        for r in range(1, 4):
            h = rdb(f"{pre}.rdb{r}", h)
        return h * 0.2 + x

    L = len(BOC)
    N, H = 2, 8
    outs = {}
    for i in range(L):
        C, enc = dec_channels(i), skip_channels(L - 1 - i)
        hw = H // 2 ** (L - 1 - i)
        t[f"det.skip_convs.{i}.weight"] = leaf(rn(C, enc, 1, 1, std=enc ** -0.5))
        res_p(f"fuse.{i}.res_in", 2 * C, C)
        for r in range(1, 4):
            for j in range(1, 6):
                conv_p(f"fuse.{i}.rrdb.rdb{r}.conv{j}", GROWTH if j < 5 else C, C + (j - 1) * GROWTH, 3)
        res_p(f"fuse.{i}.res_out", C, C)
        t[f"det.fuse_weights.{i}"] = leaf(1 + rn(1, std=0.3))
        t[f"det.skip.{i}"] = leaf(rn(N, enc, hw, hw))
        t[f"det.dec.{i}"] = leaf(rn(N, C, hw, hw))
        f = F.conv2d(P(f"skip.{i}"), P(f"skip_convs.{i}.weight"))
        h = resblock(f"fuse.{i}.res_in", torch.cat([f, P(f"dec.{i}")], 1))
        h = resblock(f"fuse.{i}.res_out", rrdb(f"fuse.{i}.rrdb", h))
        out = P(f"dec.{i}") + P(f"fuse_weights.{i}") * h
        outs[f"det.out.{i}"] = (out, rn(*out.shape))
    dump(os.path.join(OUT, "detail.safetensors"), t, outs)


# ---- LoRA targets of SD 2.1 (PEFT matching, OSEDiff's target lists) -----------------------------------
SD21_UNET = {
    "_class_name": "UNet2DConditionModel", "act_fn": "silu", "attention_head_dim": [5, 10, 20, 20],
    "block_out_channels": [320, 640, 1280, 1280], "center_input_sample": False, "cross_attention_dim": 1024,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "downsample_padding": 1, "dual_cross_attention": False, "flip_sin_to_cos": True, "freq_shift": 0,
    "in_channels": 4, "layers_per_block": 2, "mid_block_scale_factor": 1, "norm_eps": 1e-05, "norm_num_groups": 32,
    "num_class_embeds": None, "only_cross_attention": False, "out_channels": 4, "sample_size": 96,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "use_linear_projection": True, "upcast_attention": True,
}
SD21_VAE = {
    "_class_name": "AutoencoderKL", "act_fn": "silu", "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4, "in_channels": 3, "latent_channels": 4, "layers_per_block": 2,
    "norm_num_groups": 32, "out_channels": 3, "sample_size": 768, "up_block_types": ["UpDecoderBlock2D"] * 4,
}
UNET_TARGETS = ["to_k", "to_q", "to_v", "to_out.0", "conv", "conv1", "conv2", "conv_shortcut", "conv_out",
                "proj_in", "proj_out", "ff.net.2", "ff.net.0.proj"]
VAE_TARGETS = r"^encoder\..*(conv1|conv2|conv_in|conv_shortcut|conv|conv_out|to_k|to_q|to_v|to_out\.0)$"


def block_of(name):
    m = re.match(r"(down|up)_blocks\.(\d+)\.", name)
    if m:
        return int(m.group(2)) + (0 if m.group(1) == "down" else 5)
    return 4 if name.startswith("mid_block.") else 9


def make_targets():
    from diffusers import AutoencoderKL, UNet2DConditionModel

    lines = []

    def emit(name, mod, block):
        if isinstance(mod, torch.nn.Linear):
            lines.append(f"{name} {block} linear {mod.in_features} {mod.out_features} 1")
        elif isinstance(mod, torch.nn.Conv2d):
            lines.append(f"{name} {block} conv {mod.in_channels} {mod.out_channels} {mod.kernel_size[0]}")

    with torch.no_grad():
        unet = UNet2DConditionModel(**{k: v for k, v in SD21_UNET.items() if not k.startswith("_")})
        for name, mod in unet.named_modules():  # PEFT: key == target or key ends with "." + target
            if any(name == t or name.endswith("." + t) for t in UNET_TARGETS):
                emit(name, mod, block_of(name))
        del unet
        vae = AutoencoderKL(**{k: v for k, v in SD21_VAE.items() if not k.startswith("_")})
        for name, mod in vae.named_modules():   # PEFT: a string target is re.fullmatch'ed
            if re.fullmatch(VAE_TARGETS, name):
                emit(name, mod, -1)
    for fname, cfg in (("sd21_unet_config.json", SD21_UNET), ("sd21_vae_config.json", SD21_VAE)):
        with open(os.path.join(OUT, fname), "w") as f:
            json.dump(cfg, f, indent=1)
            f.write("\n")
    path = os.path.join(OUT, "sd21_lora_targets.txt")
    with open(path + ".tmp", "w") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(path + ".tmp", path)
    print(f"wrote {path} ({len(lines)} targets)")


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    torch.set_default_dtype(torch.float32)
    make_lora()
    make_modulation()
    make_detail()
    if "--targets" in sys.argv[1:]:
        make_targets()
