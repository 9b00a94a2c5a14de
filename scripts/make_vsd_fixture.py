#!/usr/bin/env python3
"""PyTorch reference for the VSD regulariser of stage 1 (layers/dod_vsd.c; OSEDiff's osediff.py:
distribution_matching_loss, diff_loss, eps_to_mu; its train_osediff.py's two optimisers).

The generator is scripts/make_dod_fixture.py's DodTorch (imported, not copied) on the tiny SD 2.x
fixture, with the stage-1 tensors, inputs (lq, hq) and posterior noise of tests/fixtures/dod/step.safetensors
(s1.param.*, lq, hq, s1.eps), so this fixture holds only what is new. The two other networks are
separate diffusers UNets loaded from the same base (the C side shares one UNet and switches adapters,
so this checks the switching too):
  - the frozen teacher ("unet_fix"): the base UNet as loaded;
  - the regulariser ("unet_update"): the base UNet + a plain PEFT-style LoRA built here by hand,
    h = W0 x + (alpha / r) B A x on OSEDiff's targets (the DOD UNet targets and conv_in), rank RV, alpha AV,
    with non-degenerate random A and B (B != 0, so every gradient is meaningful).
Everything runs in float64 from float32-rounded values (the C test runs f32).

With x the generator's one-step latent (x0, scaled), a = alphas_cumprod (scaled_linear, in float64):
  VSD (fixed noise n and timesteps t given as inputs):
    x_t = sqrt(a) sg(x) + sqrt(1 - a) n; x0_reg = mu(reg(x_t, t, prompt)); p_neg, p_pos = fix([x_t, x_t],
    [t, t], [neg, prompt]) (one batch of 2N); x0_fix = mu(p_neg + 7.5 (p_pos - p_neg));
    w = mean_{c,h,w} |x - x0_fix|; g = (x0_reg - x0_fix) / w; loss = F.mse_loss(x, (x - g).detach())
  diffusion loss of the regulariser (fixed noise and timesteps): x_t from sg(x); target n (epsilon) or
    sqrt(a) n - sqrt(1 - a) sg(x) (v_prediction); loss = F.mse_loss(reg(x_t, t, prompt), target)
  mu(p) = (x_t - sqrt(1 - a) p) / sqrt(a) (epsilon, OSEDiff's eps_to_mu) or sqrt(a) x_t - sqrt(1 - a) p (v).
  One full stage-1 step with all three terms: loss = 2 MSE(out, hq) + 5 mean LPIPS(out, hq) + 1 * VSD
  (the public stage-1 loss; LPIPS: the lpips package's VGG16 v0.1 with its real linear heads and the
  random VGG16 trunk that layers/lpips.c's lpips_random_vgg(18) rebuilds, scripts/make_lpips_fixture.py);
  backward; clip_grad_norm_(1.0); AdamW(lr 5e-5, ...) on the generator; then the diffusion loss on the
  same sg(x), backward, clip_grad_norm_(1.0), AdamW(lr LR_REG) on the regulariser (OSEDiff's order).

Two bases: the fixture's own v-prediction scheduler ("v." tensors, everything above) and the same weights
with prediction_type = epsilon in a temporary copy ("eps." tensors: the VSD loss, its latent and
generator gradients, the diffusion loss and its gradients).

Writes tests/fixtures/dod/vsd.safetensors:
  negative_prompt [77, 16]; vsd.noise, diff.noise [2, 4, 8, 8]; vsd.t, diff.t [2] (float, integral);
  param.vsd_reg.<layer>.lora_{A,B}.weight (the regulariser before the step);
  <b>.latent, <b>.vsd.loss, <b>.vsd.latent_grad (d VSD / d x), <b>.vsd.grad.<name> (every stage-1
  trainable), <b>.diff.loss, <b>.diff.grad.vsd_reg.* for b in v, eps;
  v.step.loss, v.step.mse, v.step.lpips, v.step.grad.<name> (the step's generator gradient before
  clipping), v.step.grad_norm, v.step.after.<name>, v.step.reg_grad_norm, v.step.reg_after.vsd_reg.*
Needs: torch (1.13 works), diffusers 0.21.4, safetensors, lpips, numpy.
Run:   ${PYTHON:-python3} scripts/make_vsd_fixture.py
"""
import json
import os
import sys
import tempfile

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_dod_fixture as dod  # noqa: E402
import make_lpips_fixture  # noqa: E402

DT = dod.DT
FIXTURES = os.path.join(dod.ROOT, "tests", "fixtures", "dod")
# DOD_FIXTURE_F32=1 DOD_FIXTURE_OUT=DIR: the same in float32 into DIR (how far f32 lands from float64).
OUT = os.environ.get("DOD_FIXTURE_OUT", FIXTURES)
RV, AV = 2, 3.0                  # the regulariser's LoRA rank and alpha (distinct from the generator's 4, 6)
CFG = 7.5                        # cfg_vsd
VSD_WEIGHT = 1.0                 # [loss] vsd
MSE_WEIGHT, LPIPS_WEIGHT = 2.0, 5.0   # [loss] mse, lpips of the full step (the public stage-1 weights)
LR, LR_REG = 5e-5, 7e-5          # [optim] lr, [loss] vsd_lr
VSD_T = [27, 953]                # inside [20, 980)
DIFF_T = [611, 300]              # inside [0, 1000)
gen = torch.Generator().manual_seed(4242)


def rn(*shape, std=1.0):
    return (torch.randn(*shape, generator=gen) * std).float().to(DT)


class PlainLora(nn.Module):
    """PEFT's LoRA layer (no dropout): base(x) + (alpha / r) B(A(x)); A a conv with the base's kernel,
    stride and padding for convs, B a 1 x 1 conv."""

    def __init__(self, base):
        super().__init__()
        self.base = base
        self.conv = isinstance(base, nn.Conv2d)
        if self.conv:
            cin, cout, k = base.in_channels, base.out_channels, base.kernel_size[0]
            self.lora_A = nn.Parameter(rn(RV, cin, k, k, std=(cin * k * k) ** -0.5))
            self.lora_B = nn.Parameter(rn(cout, RV, 1, 1, std=0.25 * RV ** -0.5))
        else:
            self.lora_A = nn.Parameter(rn(RV, base.in_features, std=base.in_features ** -0.5))
            self.lora_B = nn.Parameter(rn(base.out_features, RV, std=0.25 * RV ** -0.5))

    def forward(self, x, *args, **kw):
        y = self.base(x, *args, **kw)
        if self.conv:
            d = F.conv2d(F.conv2d(x, self.lora_A, None, self.base.stride, self.base.padding), self.lora_B)
        else:
            d = F.linear(F.linear(x, self.lora_A), self.lora_B)
        return y + (AV / RV) * d


def frozen_unet(base):
    unet = dod.UNet2DConditionModel.from_pretrained(os.path.join(base, "unet")).to(DT)
    unet.requires_grad_(False)
    return unet


def regulariser_unet(base, values=None):
    """The base UNet with PlainLora on the DOD UNet targets and conv_in; returns (unet, {name: param})."""
    unet = frozen_unet(base)
    names = [n for n, m in unet.named_modules()
             if isinstance(m, (nn.Linear, nn.Conv2d)) and (n == "conv_in" or dod.unet_match(n))]
    params = {}
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = unet.get_submodule(parent_name) if parent_name else unet
        wrap = PlainLora(getattr(parent, child))
        setattr(parent, child, wrap)
        params[f"vsd_reg.{name}.lora_A.weight"] = wrap.lora_A
        params[f"vsd_reg.{name}.lora_B.weight"] = wrap.lora_B
    if values is not None:   # the same regulariser on another base
        with torch.no_grad():
            for k, p in params.items():
                p.copy_(values[k])
    return unet, params


class VsdTorch:
    """OSEDiff's regulariser as its osediff.py holds it: the frozen teacher ("unet_fix") and the LoRA
    regulariser ("unet_update") as UNets of their own beside the generator's, on the diffusers model in
    `base`; prompts [N, L, D]; t a list of ints. Also used by scripts/bench_train_torch.py --vsd."""

    def __init__(self, base, reg_values=None):
        self.fix = frozen_unet(base)
        self.reg, self.params = regulariser_unet(base, reg_values)
        with open(os.path.join(base, "scheduler", "scheduler_config.json")) as f:
            s = json.load(f)
        assert s["beta_schedule"] == "scaled_linear"
        betas = torch.linspace(s["beta_start"] ** 0.5, s["beta_end"] ** 0.5, s["num_train_timesteps"],
                               dtype=torch.float64) ** 2
        self.abar = torch.cumprod(1 - betas, 0).to(DT)
        self.pred_type = s["prediction_type"]

    def coef(self, t, like):
        a = self.abar[torch.tensor(t)].reshape(-1, 1, 1, 1).to(like.device, like.dtype)
        return a.sqrt(), (1 - a).sqrt()

    def mu(self, p, x_t, t):   # eps_to_mu, for either prediction type
        sa, sb = self.coef(t, x_t)
        return (x_t - sb * p) / sa if self.pred_type == "epsilon" else sa * x_t - sb * p

    def vsd_loss(self, x, t, n, pos, neg):
        sa, sb = self.coef(t, x)
        x_t = sa * x.detach() + sb * n
        tt = torch.tensor(t, device=x.device)
        with torch.no_grad():
            x0_reg = self.mu(self.reg(x_t, tt, encoder_hidden_states=pos).sample, x_t, t)
            both = self.fix(torch.cat([x_t, x_t]), torch.cat([tt, tt]), encoder_hidden_states=torch.cat([neg, pos])).sample
            p_neg, p_pos = both.chunk(2)
            x0_fix = self.mu(p_neg + CFG * (p_pos - p_neg), x_t, t)
        w = torch.abs(x - x0_fix).mean(dim=[1, 2, 3], keepdim=True)
        g = (x0_reg - x0_fix) / w
        return F.mse_loss(x, (x - g).detach())

    def diff_loss(self, x, t, n, pos):
        sa, sb = self.coef(t, x)
        x = x.detach()
        x_t = sa * x + sb * n
        target = n if self.pred_type == "epsilon" else sa * n - sb * x
        return F.mse_loss(self.reg(x_t, torch.tensor(t, device=x.device), encoder_hidden_states=pos).sample, target)


def run(base, fx, prompt, negative, inputs, dump, prefix, reg_values=None, full_step=False):
    model = dod.DodTorch(base)
    with torch.no_grad():
        for name, p in model.s1.items():
            p.copy_(fx[f"s1.param.{name}"].to(DT))
    vsd = VsdTorch(base, reg_values)
    reg_params = vsd.params
    initial = {k: p.detach().clone() for k, p in reg_params.items()}
    N = fx["lq"].shape[0]
    pos_c, neg_c = prompt.expand(N, -1, -1), negative.expand(N, -1, -1)

    def vsd_loss(x):
        return vsd.vsd_loss(x, inputs["vsd.t"], inputs["vsd.noise"], pos_c, neg_c)

    def diff_loss(x):
        return vsd.diff_loss(x, inputs["diff.t"], inputs["diff.noise"], pos_c)

    lq, hq, e = fx["lq"].to(DT), fx["hq"].to(DT), fx["s1.eps"].to(DT)
    out = model.forward(lq, e, prompt)
    x = model.latent
    x.retain_grad()
    loss = vsd_loss(x)
    loss.backward()
    dump[f"{prefix}.latent"] = x.detach()
    dump[f"{prefix}.vsd.loss"] = loss.detach().reshape(1)
    dump[f"{prefix}.vsd.latent_grad"] = x.grad.detach()
    for name, p in model.s1.items():
        assert p.grad is not None and p.grad.abs().max() > 0, name
        dump[f"{prefix}.vsd.grad.{name}"] = p.grad.detach().clone()
    d = diff_loss(x)
    d.backward()
    dump[f"{prefix}.diff.loss"] = d.detach().reshape(1)
    for name, p in reg_params.items():
        assert p.grad is not None and p.grad.abs().max() > 0, name
        dump[f"{prefix}.diff.grad.{name}"] = p.grad.detach().clone()
    print(f"{prefix}: {vsd.pred_type}, {len(reg_params)} regulariser tensors, VSD {loss.item():.6g}, diffusion "
          f"{d.item():.6g}")
    if not full_step:
        return initial

    # One full stage-1 step from the same values (OSEDiff's train_osediff.py order).
    for p in list(model.s1.values()) + list(reg_params.values()):
        p.grad = None
    lpips_net = make_lpips_fixture.random_trunk_lpips().to(DT).eval()
    lpips_net.requires_grad_(False)
    out = model.forward(lq, e, prompt)
    mse = F.mse_loss(out, hq)
    lp = lpips_net(out, hq).mean()   # normalize=False: images in [-1, 1]
    total = MSE_WEIGHT * mse + LPIPS_WEIGHT * lp + VSD_WEIGHT * vsd_loss(model.latent)
    total.backward()
    gen_params = list(model.s1.values())
    for name, p in model.s1.items():
        dump[f"{prefix}.step.grad.{name}"] = p.grad.detach().clone()
    norm = torch.nn.utils.clip_grad_norm_(gen_params, 1.0)
    torch.optim.AdamW(gen_params, lr=LR, betas=(0.9, 0.999), weight_decay=1e-2, eps=1e-8).step()
    d = diff_loss(model.latent)
    d.backward()
    reg_list = list(reg_params.values())
    reg_norm = torch.nn.utils.clip_grad_norm_(reg_list, 1.0)
    torch.optim.AdamW(reg_list, lr=LR_REG, betas=(0.9, 0.999), weight_decay=1e-2, eps=1e-8).step()
    dump[f"{prefix}.step.loss"] = total.detach().reshape(1)
    dump[f"{prefix}.step.mse"] = mse.detach().reshape(1)
    dump[f"{prefix}.step.lpips"] = lp.detach().reshape(1)
    dump[f"{prefix}.step.grad_norm"] = norm.detach().reshape(1)
    dump[f"{prefix}.step.reg_grad_norm"] = reg_norm.detach().reshape(1)
    for name, p in model.s1.items():
        dump[f"{prefix}.step.after.{name}"] = p.detach().clone()
    for name, p in reg_params.items():
        dump[f"{prefix}.step.reg_after.{name}"] = p.detach().clone()
    print(f"{prefix} step: loss {total.item():.6g} (mse {mse.item():.6g}, lpips {lp.item():.6g}), grad norm "
          f"{norm.item():.4g}, regulariser grad norm "
          f"{reg_norm.item():.4g}")
    return initial


def main():
    fx = load_file(os.path.join(FIXTURES, "step.safetensors"))
    prompt = load_file(os.path.join(FIXTURES, "prompt.safetensors"))["prompt_embeds"].to(DT)
    negative = rn(*prompt.shape)
    lat = tuple(fx["s1.eps"].shape)
    inputs = {"vsd.t": VSD_T, "diff.t": DIFF_T, "vsd.noise": rn(*lat), "diff.noise": rn(*lat)}
    dump = {"negative_prompt": negative, "vsd.noise": inputs["vsd.noise"], "diff.noise": inputs["diff.noise"],
            "vsd.t": torch.tensor(VSD_T, dtype=DT), "diff.t": torch.tensor(DIFF_T, dtype=DT)}
    values = run(dod.BASE, fx, prompt, negative, inputs, dump, "v", full_step=True)   # the regulariser before the step
    for k, v in values.items():
        dump[f"param.{k}"] = v
    with tempfile.TemporaryDirectory() as tmp:   # the same weights with an epsilon-prediction scheduler
        for part in ("unet", "vae", "text_encoder", "tokenizer"):
            os.symlink(os.path.join(dod.BASE, part), os.path.join(tmp, part))
        os.makedirs(os.path.join(tmp, "scheduler"))
        with open(os.path.join(dod.BASE, "scheduler", "scheduler_config.json")) as f:
            sched = json.load(f)
        sched["prediction_type"] = "epsilon"
        with open(os.path.join(tmp, "scheduler", "scheduler_config.json"), "w") as f:
            json.dump(sched, f)
        run(tmp, fx, prompt, negative, inputs, dump, "eps", reg_values=values)
    flat = {k: v.detach().contiguous().float() for k, v in dump.items()}
    path = os.path.join(OUT, "vsd.safetensors")
    save_file(flat, path + ".tmp", metadata={"generator": "scripts/make_vsd_fixture.py", "rank": str(RV),
                                            "alpha": str(AV), "cfg": str(CFG), "lr_reg": str(LR_REG)})
    os.chmod(path + ".tmp", 0o644)
    os.replace(path + ".tmp", path)
    print(f"wrote {path} ({os.path.getsize(path)} bytes, {len(flat)} tensors)")


if __name__ == "__main__":
    main()
