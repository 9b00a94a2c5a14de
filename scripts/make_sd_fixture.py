#!/usr/bin/env python3
"""Build a tiny random-weight Stable Diffusion model (UNet + VAE + scheduler) with diffusers and the
reference outputs the C loader / forward pass are tested against.

Run:   ${PYTHON:-python3} scripts/make_sd_fixture.py --preset sd2 --out tests/fixtures/sd/sd2_tiny
       ${PYTHON:-python3} scripts/make_sd_fixture.py --preset sd1 --out tests/fixtures/sd/sd1_tiny
Needs: torch (1.13 CPU is enough), diffusers 0.21.4, safetensors, numpy. No network.

Presets (override any field with the options below):
  sd2  like SD 2.x: linear proj_in/proj_out, per-level attention_head_dim list, v-prediction schedule
  sd1  like SD 1.x: 1x1-conv proj_in/proj_out, one int attention_head_dim, epsilon schedule

Writes (FIX = --out):
  FIX/model/unet/{config.json,diffusion_pytorch_model.safetensors}
  FIX/model/vae/{config.json,diffusion_pytorch_model.safetensors}
  FIX/model/scheduler/scheduler_config.json
  FIX/io.safetensors       float32: unet.sample (N,4,h,w), unet.timestep (N), unet.encoder_hidden_states
                           (N,L,D), unet.out, vae.image (N,3,H,W in [-1,1]), vae.mean, vae.logvar,
                           vae.decoded (the decoder applied to vae.mean). References are computed in
                           float64 from the stored float32 weights.
  FIX/ldm.safetensors      (--single-file) the same weights under the original LDM / CompVis names
                           (model.diffusion_model.*, first_stage_model.*), in float16 as most released
                           single-file checkpoints are, plus the extras such files carry (a text-encoder
                           tensor, schedule buffers, an I64 EMA counter). The mapping is checked by
                           converting the file back with diffusers' own convert_from_ckpt functions.
"""
import argparse
import json
import os
import sys

import numpy as np
import torch
from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
from safetensors.torch import save_file


def import_ckpt_converters():
    """diffusers' convert_from_ckpt module imports transformers (for its text-encoder converters, which
    we do not need) at module level. Take just the state-dict renaming functions from its source, so
    the check runs without transformers installed."""
    import ast
    import logging
    import diffusers
    path = os.path.join(os.path.dirname(diffusers.__file__), "pipelines", "stable_diffusion", "convert_from_ckpt.py")
    tree = ast.parse(open(path).read())
    wanted = {"shave_segments", "renew_resnet_paths", "renew_vae_resnet_paths", "renew_attention_paths",
              "renew_vae_attention_paths", "assign_to_checkpoint", "conv_attn_to_linear",
              "convert_ldm_unet_checkpoint", "convert_ldm_vae_checkpoint"}
    funcs = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in wanted]
    if len(funcs) != len(wanted):
        sys.exit(f"{path}: expected functions {sorted(wanted)}")
    ns = {"logger": logging.getLogger("convert_from_ckpt"), "torch": torch}
    exec(compile(ast.Module(body=funcs, type_ignores=[]), path, "exec"), ns)
    return ns["convert_ldm_unet_checkpoint"], ns["convert_ldm_vae_checkpoint"]


PRESETS = {
    "sd2": dict(unet_channels=[8, 16], layers=1, heads=[1, 2], cross_dim=16, linear_proj=True,
                upcast_attention=True, prediction="v_prediction",
                vae_channels=[8, 8, 16], vae_layers=1, groups=4),
    "sd1": dict(unet_channels=[8, 16], layers=2, heads=2, cross_dim=12, linear_proj=False,
                upcast_attention=False, prediction="epsilon",
                vae_channels=[8, 8, 16], vae_layers=1, groups=4),
}


def int_list(s):
    v = [int(x) for x in s.split(",")]
    return v if len(v) > 1 else v[0]


def build_models(p):
    n = len(p["unet_channels"])
    # SD layout: cross-attention on every level but the deepest.
    down = ["CrossAttnDownBlock2D"] * (n - 1) + ["DownBlock2D"]
    up = ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * (n - 1)
    unet = UNet2DConditionModel(
        sample_size=p["latent"], in_channels=4, out_channels=4, block_out_channels=tuple(p["unet_channels"]),
        down_block_types=tuple(down), up_block_types=tuple(up), layers_per_block=p["layers"],
        attention_head_dim=p["heads"], cross_attention_dim=p["cross_dim"], norm_num_groups=p["groups"],
        use_linear_projection=p["linear_proj"], upcast_attention=p["upcast_attention"])
    m = len(p["vae_channels"])
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=tuple(p["vae_channels"]),
        down_block_types=("DownEncoderBlock2D",) * m, up_block_types=("UpDecoderBlock2D",) * m,
        layers_per_block=p["vae_layers"], norm_num_groups=p["groups"], sample_size=p["image"])
    return unet, vae


def randomise(model, gen):
    """diffusers zero-initialises some layers (and norms start at 1/0); redraw every parameter so each
    one influences the output: weights ~ N(0, 1/fan_in), norm scales ~ 1 + N(0, 0.1^2), biases small."""
    with torch.no_grad():
        for name, t in model.named_parameters():
            if t.ndim == 1 and "norm" in name and name.endswith("weight"):
                t.copy_(1 + 0.1 * torch.randn(t.shape, generator=gen))
            elif t.ndim == 1:
                t.copy_(0.05 * torch.randn(t.shape, generator=gen))
            else:
                fan_in = t[0].numel()
                t.copy_(torch.randn(t.shape, generator=gen) / fan_in ** 0.5)


# ---- diffusers -> original LDM names --------------------------------------------------------------
def unet_to_ldm(name, p):
    """Original (openaimodel.py) name of a diffusers UNet2DConditionModel parameter."""
    parts = name.split(".")
    L, n = p["layers"], len(p["unet_channels"])
    resnet_map = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
                  "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}

    def resnet(rest):
        return ".".join([resnet_map[rest[0]]] + rest[1:])

    top = {"conv_in": "input_blocks.0.0", "time_embedding.linear_1": "time_embed.0",
           "time_embedding.linear_2": "time_embed.2", "conv_norm_out": "out.0", "conv_out": "out.2"}
    stem = ".".join(parts[:-1])
    if stem in top:
        return f"{top[stem]}.{parts[-1]}"
    if parts[0] == "down_blocks":
        i, kind = int(parts[1]), parts[2]
        if kind == "downsamplers":
            return f"input_blocks.{1 + i * (L + 1) + L}.0.op.{parts[-1]}"
        j = int(parts[3])
        blk = 1 + i * (L + 1) + j
        if kind == "resnets":
            return f"input_blocks.{blk}.0.{resnet(parts[4:])}"
        return f"input_blocks.{blk}.1." + ".".join(parts[4:])
    if parts[0] == "mid_block":
        kind, j = parts[1], int(parts[2])
        if kind == "resnets":
            return f"middle_block.{2 * j}.{resnet(parts[3:])}"
        return "middle_block.1." + ".".join(parts[3:])
    if parts[0] == "up_blocks":
        i, kind = int(parts[1]), parts[2]
        has_attn = i > 0  # see build_models
        if kind == "upsamplers":
            return f"output_blocks.{i * (L + 1) + L}.{2 if has_attn else 1}.conv.{parts[-1]}"
        j = int(parts[3])
        blk = i * (L + 1) + j
        if kind == "resnets":
            return f"output_blocks.{blk}.0.{resnet(parts[4:])}"
        return f"output_blocks.{blk}.1." + ".".join(parts[4:])
    raise KeyError(name)


def vae_to_ldm(name, p):
    """Original (ldm/modules/diffusionmodules/model.py) name of a diffusers AutoencoderKL parameter."""
    parts = name.split(".")
    m = len(p["vae_channels"])
    if parts[0] in ("quant_conv", "post_quant_conv"):
        return name
    side, rest = parts[0], parts[1:]
    if rest[0] == "conv_norm_out":
        return f"{side}.norm_out.{rest[-1]}"
    if rest[0] in ("conv_in", "conv_out"):
        return name

    def resnet(r):
        return ".".join(["nin_shortcut" if r[0] == "conv_shortcut" else r[0]] + r[1:])

    if rest[0] in ("down_blocks", "up_blocks"):
        i = int(rest[1])
        lvl = i if side == "encoder" else m - 1 - i   # the decoder's up list is stored deepest-first
        word = "down" if side == "encoder" else "up"
        if rest[2] in ("downsamplers", "upsamplers"):
            return f"{side}.{word}.{lvl}.{'downsample' if word == 'down' else 'upsample'}.conv.{rest[-1]}"
        return f"{side}.{word}.{lvl}.block.{rest[3]}.{resnet(rest[4:])}"
    if rest[0] == "mid_block":
        if rest[1] == "resnets":
            return f"{side}.mid.block_{int(rest[2]) + 1}.{resnet(rest[3:])}"
        attn = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out": "proj_out"}[rest[3]]
        return f"{side}.mid.attn_1.{attn}.{rest[-1]}"
    raise KeyError(name)


def to_ldm(unet_sd, vae_sd, p):
    out = {}
    for k, v in unet_sd.items():
        out["model.diffusion_model." + unet_to_ldm(k, p)] = v
    for k, v in vae_sd.items():
        ldm = vae_to_ldm(k, p)
        if ".mid.attn_1." in ldm and ldm.endswith("weight") and v.ndim == 2:
            v = v[:, :, None, None]   # LDM's VAE attention uses 1x1 convs
        out["first_stage_model." + ldm] = v
    return out


def check_ldm_round_trip(ldm, unet_sd, vae_sd, unet, p):
    """diffusers' own converter must map the LDM names back to exactly the diffusers state dicts."""
    cfg = dict(unet.config)
    cfg["layers_per_block"] = p["layers"]
    convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint = import_ckpt_converters()
    back = convert_ldm_unet_checkpoint(dict(ldm), cfg)
    vae_back = convert_ldm_vae_checkpoint(dict(ldm), {})
    for ours, theirs, what in ((unet_sd, back, "unet"), (vae_sd, vae_back, "vae")):
        if set(ours) != set(theirs):
            sys.exit(f"LDM round trip ({what}): names differ: {sorted(set(ours) ^ set(theirs))[:8]}")
        for k in ours:
            if ours[k].shape != theirs[k].shape or not torch.equal(ours[k], theirs[k].to(ours[k].dtype)):
                sys.exit(f"LDM round trip ({what}): {k} differs")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=sorted(PRESETS), required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--unet-channels", type=int_list)
    ap.add_argument("--layers", type=int)
    ap.add_argument("--heads", type=int_list, help="attention_head_dim: int or comma list (heads per level)")
    ap.add_argument("--cross-dim", type=int)
    ap.add_argument("--vae-channels", type=int_list)
    ap.add_argument("--groups", type=int)
    ap.add_argument("--latent", type=int, default=8, help="latent size h = w of unet.sample")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=5, help="L of encoder_hidden_states")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--single-file", action="store_true", help="also write FIX/ldm.safetensors")
    a = ap.parse_args()

    p = dict(PRESETS[a.preset])
    for key in ("unet_channels", "layers", "heads", "cross_dim", "vae_channels", "groups"):
        if getattr(a, key) is not None:
            p[key] = getattr(a, key)
    for key in ("unet_channels", "vae_channels"):
        p[key] = p[key] if isinstance(p[key], list) else [p[key]]
    p["latent"] = a.latent
    p["image"] = a.latent * 2 ** (len(p["vae_channels"]) - 1)

    gen = torch.Generator().manual_seed(a.seed)
    unet, vae = build_models(p)
    randomise(unet, gen)
    randomise(vae, gen)
    unet.eval()
    vae.eval()
    sched = PNDMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                          beta_schedule="scaled_linear", prediction_type=p["prediction"], skip_prk_steps=True,
                          set_alpha_to_one=False, steps_offset=1)

    model_dir = os.path.join(a.out, "model")
    unet.save_pretrained(os.path.join(model_dir, "unet"), safe_serialization=True)
    vae.save_pretrained(os.path.join(model_dir, "vae"), safe_serialization=True)
    sched.save_pretrained(os.path.join(model_dir, "scheduler"))

    # Reference outputs in float64 from the float32 weights that were saved.
    N, h = a.batch, a.latent
    sample = torch.randn(N, 4, h, h, generator=gen)
    timestep = torch.tensor([999.0, 321.0][:N] + [500.0] * max(0, N - 2))
    context = torch.randn(N, a.tokens, p["cross_dim"], generator=gen)
    image = torch.rand(N, 3, p["image"], p["image"], generator=gen) * 2 - 1
    with torch.no_grad():
        unet64, vae64 = unet.double(), vae.double()
        out = unet64(sample.double(), timestep.double(), context.double()).sample
        post = vae64.encode(image.double()).latent_dist
        decoded = vae64.decode(post.mean).sample
    io = {"unet.sample": sample, "unet.timestep": timestep, "unet.encoder_hidden_states": context,
          "unet.out": out, "vae.image": image, "vae.mean": post.mean, "vae.logvar": post.logvar,
          "vae.decoded": decoded}
    io = {k: v.float().contiguous() for k, v in io.items()}
    for k, v in io.items():
        if not torch.isfinite(v).all() or v.abs().max() == 0:
            sys.exit(f"degenerate reference {k}")
    save_file(io, os.path.join(a.out, "io.safetensors"), metadata={"preset": a.preset, "seed": str(a.seed)})

    if a.single_file:
        unet_sd = {k: v.float() for k, v in unet.state_dict().items()}
        vae_sd = {k: v.float() for k, v in vae.state_dict().items()}
        ldm = to_ldm(unet_sd, vae_sd, p)
        check_ldm_round_trip(ldm, unet_sd, vae_sd, unet, p)
        ldm = {k: v.half().contiguous() for k, v in ldm.items()}
        # What released checkpoints also carry: text encoder weights, schedule buffers, EMA counters.
        ldm["cond_stage_model.model.token_embedding.weight"] = torch.randn(7, 4, generator=gen).half()
        ldm["alphas_cumprod"] = torch.linspace(0.99, 0.01, 16)
        ldm["model_ema.num_updates"] = torch.tensor(1234, dtype=torch.int64)
        save_file(ldm, os.path.join(a.out, "ldm.safetensors"), metadata={"format": "pt"})

    total = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(a.out) for f in fs)
    print(f"wrote {a.out}: {total / 1024:.0f} KiB; unet {sum(t.numel() for t in unet.parameters())} params, "
          f"vae {sum(t.numel() for t in vae.parameters())} params")


if __name__ == "__main__":
    main()
