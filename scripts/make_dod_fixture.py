#!/usr/bin/env python3
"""PyTorch reference for one training step of the assembled DOD model (layers/dod_model.c).

Builds the DOD model on the tiny SD 2.x fixture (tests/fixtures/sd/sd2_tiny/model: diffusers
UNet2DConditionModel + AutoencoderKL, v-prediction scheduler) with hand-written adapters that follow
the spec and our C choices (docs/dod-modules.md, docs/dod-model.md):
  - conditional LoRA on every UNet target (PEFT matching of OSEDiff's list), plain LoRA on the VAE
    encoder targets, h = W0 x + s B((1 + gamma_k) A x + beta_k), s = alpha / r;
  - conv_in of the UNet trained in full;
  - the modulation with the built-in cnn extractor (small widths);
  - the detail module (stage 2) before each VAE decoder up block.
Every trainable tensor gets NON-degenerate random values (B != 0, MLPs not 1e-5-small, w_i random),
so every gradient is meaningful. The whole computation runs in float64 from float32-rounded values
(the C test runs f32; the reference carries no f32 error of its own).

One step of each stage on a batch of 2 images (32 x 32, a crop of skimage's astronaut, lq = hq +
noise): forward with the posterior noise eps given explicitly, loss, backward,
clip_grad_norm_(1.0), AdamW(lr 5e-5, betas (0.9, 0.999), weight_decay 1e-2, eps 1e-8).
  stage 1: loss = 2 * MSE(out, hq)
  stage 2: stage-1 tensors frozen at their values after the stage-1 step; loss =
           MSE + 0.1 * (1 - SSIM(out, hq)), SSIM as pytorch_msssim (11-tap Gaussian sigma 1.5,
           valid, data range 2)
Train-mode output is clamped to [-1, 1] like eval (ours, as OSEDiff's training forward does).
The model itself is the class DodTorch, which scripts/bench_train_torch.py (dod-bench train) imports.

Writes tests/fixtures/dod/:
  prompt.safetensors   "prompt_embeds" [77, 16] (the fixed prompt embedding)
  step.safetensors     lq, hq [2, 3, 32, 32]; s1.eps, s2.eps [2, 4, 8, 8];
                       s<k>.loss, s<k>.mse, s<k>.ssim (stage 2), s<k>.grad_norm, s<k>.out;
                       s1.param.<name> (every stage-1 trainable before the step), s2.param.<name>
                       (the detail module before its step), s<k>.grad.<name> (raw gradient, before
                       clipping), s<k>.after.<name> (after the AdamW step);
                       bf16.s1.{loss,mse,grad_norm}: stage 1 with the frozen weights rounded to bf16
  meta.json            the sizes the C test must configure (rank, alpha, cnn widths, growth, ...)

Needs: torch (1.13 works), diffusers 0.21.4, safetensors, scikit-image (for the photo crop).
Run:   ${PYTHON:-python3} scripts/make_dod_fixture.py
"""
import json
import math
import os
import re
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers import AutoencoderKL, UNet2DConditionModel
from safetensors.torch import save_file

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
BASE = os.path.join(ROOT, "tests", "fixtures", "sd", "sd2_tiny", "model")
OUT = os.path.join(ROOT, "tests", "fixtures", "dod")
# Variants (tolerance studies, and the bf16 reference below), written to DOD_FIXTURE_OUT=DIR:
#   DOD_FIXTURE_F32=1   run in float32 (how far a correct f32 implementation lands from float64);
#   DOD_FIXTURE_BF16=1  round the frozen UNet/VAE weights to bfloat16 first.
OUT = os.environ.get("DOD_FIXTURE_OUT", OUT)
VARIANT = bool(os.environ.get("DOD_FIXTURE_F32") or os.environ.get("DOD_FIXTURE_BF16"))
assert not VARIANT or "DOD_FIXTURE_OUT" in os.environ, "a variant needs DOD_FIXTURE_OUT"

R, ALPHA = 4, 6.0            # LoRA rank and alpha (s = 1.5)
CNN, DE, BLK = (4, 6, 8, 8), 12, 6
GROWTH = 2
N, H, W = 2, 32, 32
T = 999
DT = torch.float32 if os.environ.get("DOD_FIXTURE_F32") else torch.float64

UNET_TARGETS = ["to_k", "to_q", "to_v", "to_out.0", "conv", "conv1", "conv2", "conv_shortcut", "conv_out",
                "proj_in", "proj_out", "ff.net.2", "ff.net.0.proj"]
VAE_TARGETS = r"^encoder\..*(conv1|conv2|conv_in|conv_shortcut|conv|conv_out|to_k|to_q|to_v|to_out\.0)$"

gen = torch.Generator().manual_seed(31337)


def rn(*shape, std=1.0):
    """float32-rounded normal values, returned as float64 (what the C side reads back exactly)."""
    return (torch.randn(*shape, generator=gen) * std).float().to(DT)


def block_of(name):
    m = re.match(r"(down|up)_blocks\.(\d+)\.", name)
    if m:
        return int(m.group(2)) + (0 if m.group(1) == "down" else 5)
    return 4 if name.startswith("mid_block.") else 9


class Modulation:
    gamma = None   # list of 10 [N, r]
    beta = None


class LoraWrap(nn.Module):
    """Base layer + s * B((1 + gamma) A x + beta); gamma/beta from Modulation when conditional."""

    def __init__(self, base, block, conditional):
        super().__init__()
        self.base, self.block, self.conditional = base, block, conditional
        self.conv = isinstance(base, nn.Conv2d)
        if self.conv:
            cin, cout, k = base.in_channels, base.out_channels, base.kernel_size[0]
            a = rn(R, cin, k, k, std=(cin * k * k) ** -0.5)
            b = rn(cout, R, 1, 1, std=0.5 * R ** -0.5)
        else:
            a = rn(R, base.in_features, std=base.in_features ** -0.5)
            b = rn(base.out_features, R, std=0.5 * R ** -0.5)
        self.lora_A = nn.Parameter(a)
        self.lora_B = nn.Parameter(b)

    def forward(self, x, *args, **kw):
        y = self.base(x, *args, **kw)
        if self.conv:
            ax = F.conv2d(x, self.lora_A, None, self.base.stride, self.base.padding)
        else:
            ax = F.linear(x, self.lora_A)
        if self.conditional:
            g, b = Modulation.gamma[self.block], Modulation.beta[self.block]
            shape = [g.shape[0]] + [1] * (ax.ndim - 1)
            shape[1 if self.conv else -1] = R
            ax = (1 + g.reshape(shape)) * ax + b.reshape(shape)
        d = F.conv2d(ax, self.lora_B) if self.conv else F.linear(ax, self.lora_B)
        return y + (ALPHA / R) * d


def inject(model, match, conditional, prefix, params):
    names = [n for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d)) and match(n)]
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        wrap = LoraWrap(getattr(parent, child), block_of(name), conditional)
        setattr(parent, child, wrap)
        params[f"{prefix}{name}.lora_A.weight"] = wrap.lora_A
        params[f"{prefix}{name}.lora_B.weight"] = wrap.lora_B
    return len(names)


def unet_match(name):
    return any(name == t or name.endswith("." + t) for t in UNET_TARGETS)


# ---- modulation ------------------------------------------------------------------------------------
def make_modulation(params):
    cin = 3
    for i, c in enumerate(CNN):
        params[f"mod.cnn.{i}.weight"] = nn.Parameter(rn(c, cin, 3, 3, std=(cin * 9) ** -0.5))
        params[f"mod.cnn.{i}.bias"] = nn.Parameter(rn(c, std=0.1))
        cin = c
    params["mod.de_mlp.weight"] = nn.Parameter(rn(DE, CNN[-1], std=0.8))
    params["mod.de_mlp.bias"] = nn.Parameter(rn(DE, std=0.1))
    params["mod.block_embeddings.weight"] = nn.Parameter(rn(10, BLK))
    params["mod.block_mlp.weight"] = nn.Parameter(rn(BLK, BLK, std=0.4))
    params["mod.block_mlp.bias"] = nn.Parameter(rn(BLK, std=0.1))
    params["mod.fuse_mlp.weight"] = nn.Parameter(rn(2 * R, DE + BLK, std=0.25))
    params["mod.fuse_mlp.bias"] = nn.Parameter(rn(2 * R, std=0.1))


def modulation_forward(P, y):
    h = y
    for i in range(len(CNN)):
        h = F.silu(F.conv2d(h, P[f"mod.cnn.{i}.weight"], P[f"mod.cnn.{i}.bias"], stride=2, padding=1))
    d = h.mean(dim=(2, 3))
    e = F.relu(F.linear(d, P["mod.de_mlp.weight"], P["mod.de_mlp.bias"]))
    bk = F.relu(F.linear(P["mod.block_embeddings.weight"], P["mod.block_mlp.weight"], P["mod.block_mlp.bias"]))
    gam, bet = [], []
    for k in range(10):
        gb = F.linear(torch.cat([e, bk[k].expand(e.shape[0], BLK)], 1), P["mod.fuse_mlp.weight"],
                      P["mod.fuse_mlp.bias"])
        gam.append(gb[:, :R])
        bet.append(gb[:, R:])
    return gam, bet


# ---- detail module -----------------------------------------------------------------------------------
def make_detail(params, boc, groups):
    L = len(boc)
    dec = lambda i: boc[L - 1] if i == 0 else boc[L - i]
    skip = lambda j: boc[0] if j == 0 else boc[j - 1]

    def conv_p(name, cout, cin, k):
        params[f"detail.{name}.weight"] = nn.Parameter(rn(cout, cin, k, k, std=(cin * k * k) ** -0.5))
        params[f"detail.{name}.bias"] = nn.Parameter(rn(cout, std=0.1))

    def norm_p(name, c):
        params[f"detail.{name}.weight"] = nn.Parameter(1 + rn(c, std=0.2))
        params[f"detail.{name}.bias"] = nn.Parameter(rn(c, std=0.2))

    def res_p(pre, cin, cout):
        norm_p(f"{pre}.norm1", cin)
        conv_p(f"{pre}.conv1", cout, cin, 3)
        norm_p(f"{pre}.norm2", cout)
        conv_p(f"{pre}.conv2", cout, cout, 3)
        if cin != cout:
            conv_p(f"{pre}.conv_shortcut", cout, cin, 1)

    for i in range(L):
        C, enc = dec(i), skip(L - 1 - i)
        params[f"detail.skip_convs.{i}.weight"] = nn.Parameter(rn(C, enc, 1, 1, std=enc ** -0.5))
        res_p(f"fuse.{i}.res_in", 2 * C, C)
        for r in range(1, 4):
            for j in range(1, 6):
                conv_p(f"fuse.{i}.rrdb.rdb{r}.conv{j}", GROWTH if j < 5 else C, C + (j - 1) * GROWTH, 3)
        res_p(f"fuse.{i}.res_out", C, C)
        params[f"detail.fuse_weights.{i}"] = nn.Parameter(1 + rn(1, std=0.3))


def detail_apply(P, groups, i, s, dec):
    p = lambda n: P[f"detail.{n}"]
    conv = lambda n, x, pad: F.conv2d(x, p(n + ".weight"), p(n + ".bias"), padding=pad)
    norm_silu = lambda n, x: F.silu(F.group_norm(x, groups, p(n + ".weight"), p(n + ".bias"), 1e-6))

    def resblock(pre, x):
        h = conv(f"{pre}.conv1", norm_silu(f"{pre}.norm1", x), 1)
        h = conv(f"{pre}.conv2", norm_silu(f"{pre}.norm2", h), 1)
        return h + (conv(f"{pre}.conv_shortcut", x, 0) if f"detail.{pre}.conv_shortcut.weight" in P else x)

    def rdb(pre, x):
        feats = [x]
        for j in range(1, 5):
            feats.append(F.leaky_relu(conv(f"{pre}.conv{j}", torch.cat(feats, 1), 1), 0.2))
        return conv(f"{pre}.conv5", torch.cat(feats, 1), 1) * 0.2 + x

    f = F.conv2d(s, p(f"skip_convs.{i}.weight"))
    h = resblock(f"fuse.{i}.res_in", torch.cat([f, dec], 1))
    x = h
    for r in range(1, 4):
        h = rdb(f"fuse.{i}.rrdb.rdb{r}", h)
    h = resblock(f"fuse.{i}.res_out", h * 0.2 + x)
    return dec + p(f"fuse_weights.{i}") * h


# ---- the model ---------------------------------------------------------------------------------------
def ssim(x, y, data_range):
    """pytorch_msssim.ssim (size_average): separable 11-tap Gaussian, sigma 1.5, 'valid'."""
    k = torch.arange(11, dtype=DT) - 5
    g = torch.exp(-(k ** 2) / (2 * 1.5 ** 2))
    g = g / g.sum()
    C = x.shape[1]
    wh = g.reshape(1, 1, 1, 11).repeat(C, 1, 1, 1)
    wv = g.reshape(1, 1, 11, 1).repeat(C, 1, 1, 1)
    blur = lambda t: F.conv2d(F.conv2d(t, wh, groups=C), wv, groups=C)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu1, mu2 = blur(x), blur(y)
    s11 = blur(x * x) - mu1 ** 2
    s22 = blur(y * y) - mu2 ** 2
    s12 = blur(x * y) - mu1 * mu2
    cs = (2 * s12 + c2) / (s11 + s22 + c2)
    smap = ((2 * mu1 * mu2 + c1) / (mu1 ** 2 + mu2 ** 2 + c1)) * cs
    return smap.mean()


def alpha_bar(sched, t):
    betas = torch.linspace(sched["beta_start"] ** 0.5, sched["beta_end"] ** 0.5, sched["num_train_timesteps"],
                           dtype=torch.float64) ** 2
    assert sched["beta_schedule"] == "scaled_linear"
    return float(torch.cumprod(1 - betas, 0)[t])


class DodTorch:
    """The DOD model of layers/dod_model.c in PyTorch on the diffusers model in `base` (frozen, in DT),
    with the adapters above: s1 holds the stage-1 trainables (conv_in, UNet and VAE-encoder LoRA, the
    modulation), s2 the detail module's. forward() runs the stage set in .stage (1: no detail module).
    Also used by scripts/bench_train_torch.py (dod-bench train), so the bench times this very model."""

    def __init__(self, base=BASE):
        with open(os.path.join(base, "scheduler", "scheduler_config.json")) as f:
            sched = json.load(f)
        self.abar = abar = alpha_bar(sched, T)
        self.prediction_type = sched["prediction_type"]
        if sched["prediction_type"] == "v_prediction":
            self.cz, self.ce = math.sqrt(abar), math.sqrt(1 - abar)   # x0 = sqrt(a) z - sqrt(1 - a) v
        else:
            assert sched["prediction_type"] == "epsilon"
            self.cz, self.ce = 1 / math.sqrt(abar), math.sqrt(1 - abar) / math.sqrt(abar)

        self.unet = unet = UNet2DConditionModel.from_pretrained(os.path.join(base, "unet")).to(DT)
        self.vae = vae = AutoencoderKL.from_pretrained(os.path.join(base, "vae")).to(DT)
        for p in list(unet.parameters()) + list(vae.parameters()):
            p.requires_grad_(False)
            # bf16 variant: frozen weights rounded; conv_in is trained as an f32 copy (set from the fixture)
            if os.environ.get("DOD_FIXTURE_BF16") and p is not unet.conv_in.weight and p is not unet.conv_in.bias:
                p.copy_(p.to(torch.bfloat16).to(DT))
        self.sf = vae.config.scaling_factor
        self.boc, self.groups = boc, groups = list(vae.config.block_out_channels), vae.config.norm_num_groups

        self.s1 = s1 = {}  # stage-1 trainables, in the C model's registration order where it matters
        s1["unet.conv_in.weight"] = unet.conv_in.weight
        s1["unet.conv_in.bias"] = unet.conv_in.bias
        for p in (unet.conv_in.weight, unet.conv_in.bias):
            p.requires_grad_(True)
        self.n_unet = inject(unet, unet_match, True, "unet.", s1)
        self.n_vae = inject(vae, lambda n: re.fullmatch(VAE_TARGETS, n) is not None, False, "vae.", s1)
        make_modulation(s1)
        self.s2 = {}
        make_detail(self.s2, boc, groups)
        self.stage = 1

        self.skips = []
        for blk in vae.encoder.down_blocks:
            blk.register_forward_pre_hook(lambda mod, args: self.skips.append(args[0]))

        def before_up(i):
            def hook(mod, args):
                if self.stage != 2:
                    return None
                L = len(boc)
                return (detail_apply(self.s2, groups, i, self.skips[L - 1 - i], args[0]),) + tuple(args[1:])
            return hook
        for i, blk in enumerate(vae.decoder.up_blocks):
            blk.register_forward_pre_hook(before_up(i))

    def latent_shape(self, n, h, w):
        f = 2 ** (len(self.boc) - 1)
        return (n, self.vae.config.latent_channels, h // f, w // f)

    def forward(self, lq, e, prompt):
        """Train-mode forward: lq [N, 3, H, W], posterior noise e, prompt [L, D] -> clamped output."""
        self.skips.clear()
        Modulation.gamma, Modulation.beta = modulation_forward(self.s1, lq)
        moments = self.vae.quant_conv(self.vae.encoder(lq))
        mean, logvar = torch.chunk(moments, 2, dim=1)
        logvar = logvar.clamp(-30.0, 20.0)
        z = (mean + torch.exp(0.5 * logvar) * e) * self.sf
        t = torch.full((lq.shape[0],), T, dtype=torch.long)
        pred = self.unet(z, t, encoder_hidden_states=prompt.expand(lq.shape[0], -1, -1)).sample
        x0 = self.cz * z - self.ce * pred
        self.latent = x0   # the one-step latent (scaled), what scripts/make_vsd_fixture.py regularises
        return self.vae.decode(x0 / self.sf).sample.clamp(-1, 1)


def main():
    os.makedirs(OUT, exist_ok=True)
    model = DodTorch()
    s1, s2 = model.s1, model.s2
    print(f"{model.n_unet} UNet adapters, {model.n_vae} VAE-encoder adapters, {len(s1)} stage-1 and {len(s2)} "
          "stage-2 tensors")

    # inputs: a photo crop (hq) and a noisy version (lq), both in [-1, 1]
    from skimage import data
    img = data.astronaut()[60:60 + 2 * H:2, 170:170 + 2 * W:2, :].astype(np.float64) / 127.5 - 1
    img2 = data.astronaut()[300:300 + H, 250:250 + W, :].astype(np.float64) / 127.5 - 1
    hq = torch.from_numpy(np.stack([img, img2]).transpose(0, 3, 1, 2).copy()).float().to(DT)
    lq = (hq + rn(N, 3, H, W, std=0.15)).clamp(-1, 1).float().to(DT)
    prompt = rn(77, model.unet.config.cross_attention_dim)
    lat = model.latent_shape(N, H, W)
    eps = {1: rn(*lat), 2: rn(*lat)}

    def forward(e):
        return model.forward(lq, e, prompt)

    dump = {"lq": lq, "hq": hq, "s1.eps": eps[1], "s2.eps": eps[2]}

    def step(k, params, loss_fn):
        for name, p in params.items():
            dump[f"s{k}.param.{name}"] = p.detach().clone()
        out = forward(eps[k])
        inside = ((out > -1) & (out < 1)).double().mean().item()
        loss, terms = loss_fn(out)
        loss.backward()
        for name, p in params.items():
            assert p.grad is not None and p.grad.abs().max() > 0, name
            dump[f"s{k}.grad.{name}"] = p.grad.detach().clone()
        norm = torch.nn.utils.clip_grad_norm_(list(params.values()), 1.0)
        opt = torch.optim.AdamW(list(params.values()), lr=5e-5, betas=(0.9, 0.999), weight_decay=1e-2, eps=1e-8)
        opt.step()
        for name, p in params.items():
            dump[f"s{k}.after.{name}"] = p.detach().clone()
        dump[f"s{k}.out"] = out.detach()
        dump[f"s{k}.loss"] = loss.detach().reshape(1)
        dump[f"s{k}.grad_norm"] = norm.detach().reshape(1)
        for t, v in terms.items():
            dump[f"s{k}.{t}"] = v.detach().reshape(1)
        print(f"stage {k}: loss {loss.item():.6f} grad norm {norm.item():.4f}, output inside (-1, 1): {inside:.3f}")

    def loss1(out):
        mse = F.mse_loss(out, hq)
        return 2 * mse, {"mse": mse}

    def loss2(out):
        mse = F.mse_loss(out, hq)
        s = ssim(out, hq, 2.0)
        return mse + 0.1 * (1 - s), {"mse": mse, "ssim": s}

    step(1, s1, loss1)
    for p in s1.values():
        p.requires_grad_(False)
        p.grad = None
    model.stage = 2
    step(2, s2, loss2)

    flat = {k: v.detach().contiguous().float() for k, v in dump.items()}
    if not VARIANT:  # stage 1 again with bf16-rounded frozen weights: its loss and gradient norm
        import subprocess
        import tempfile
        with tempfile.TemporaryDirectory() as tmp:
            env = dict(os.environ, DOD_FIXTURE_BF16="1", DOD_FIXTURE_OUT=tmp)
            subprocess.run([sys.executable, os.path.abspath(__file__)], env=env, check=True, stdout=subprocess.DEVNULL)
            from safetensors.torch import load_file
            other = load_file(os.path.join(tmp, "step.safetensors"))
            for k in ("s1.loss", "s1.grad_norm", "s1.mse"):
                flat["bf16." + k] = other[k]
    for name, tensors in (("step.safetensors", flat), ("prompt.safetensors", {"prompt_embeds": prompt.float()})):
        path = os.path.join(OUT, name)
        save_file(tensors, path + ".tmp", metadata={"generator": "scripts/make_dod_fixture.py"})
        os.chmod(path + ".tmp", 0o644)
        os.replace(path + ".tmp", path)
        print(f"wrote {path} ({os.path.getsize(path)} bytes, {len(tensors)} tensors)")
    meta = {"rank": R, "alpha": ALPHA, "cnn_channels": list(CNN), "feature_dim": CNN[-1], "de_dim": DE,
            "block_dim": BLK, "growth": GROWTH, "batch": N, "height": H, "width": W,
            "n_stage1": len(s1), "n_stage2": len(s2), "prediction_type": model.prediction_type,
            "alpha_bar_999": model.abar}
    with open(os.path.join(OUT, "meta.json.tmp"), "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")
    os.replace(os.path.join(OUT, "meta.json.tmp"), os.path.join(OUT, "meta.json"))


if __name__ == "__main__":
    main()
