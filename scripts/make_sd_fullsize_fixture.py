#!/usr/bin/env python3
"""A full-size SD 2.1-base UNet + VAE with RANDOM weights, for memory/speed measurements and a
full-architecture parity check with dod-parity (the weights are random: the numbers say nothing
about image quality, only about the forward pass). Too big to commit (about 1.8 GB in bf16).

Run:   ${PYTHON:-python3} scripts/make_sd_fullsize_fixture.py OUT_DIR [--latent 64] [--dtype bf16|f32]
Needs: torch (CPU), diffusers 0.21.x, safetensors. Takes a few minutes and ~8 GB of RAM on 2 cores.
Writes OUT_DIR/model/{unet,vae}/ (diffusers layout, weights stored as --dtype) and OUT_DIR/io.safetensors
in the dod-parity fixture layout: batch 1, latent --latent x --latent (64 = a 512 x 512 image), a
77 x 1024 context, timestep 999. References are computed in f32 from the weights as stored (so a
bf16 fixture is checked exactly with `dod-parity OUT_DIR --dtype f32`).
"""
import argparse
import os

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from safetensors.torch import save_file

SD21_UNET = dict(
    sample_size=96, in_channels=4, out_channels=4, center_input_sample=False, flip_sin_to_cos=True, freq_shift=0,
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    block_out_channels=(320, 640, 1280, 1280), layers_per_block=2, downsample_padding=1, mid_block_scale_factor=1,
    act_fn="silu", norm_num_groups=32, norm_eps=1e-5, cross_attention_dim=1024, attention_head_dim=(5, 10, 20, 20),
    use_linear_projection=True, upcast_attention=False,
)
SD_VAE = dict(
    in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(128, 256, 512, 512), layers_per_block=2,
    act_fn="silu", latent_channels=4, norm_num_groups=32, sample_size=768, scaling_factor=0.18215,
)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--latent", type=int, default=64)
    ap.add_argument("--dtype", choices=["bf16", "f32"], default="bf16")
    args = ap.parse_args()
    torch.manual_seed(0)
    dt = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    unet = UNet2DConditionModel(**SD21_UNET).eval()
    vae = AutoencoderKL(**SD_VAE).eval()
    for name, m in (("unet", unet), ("vae", vae)):
        with torch.no_grad():  # round to the stored dtype so the f32 references match the file exactly
            for p in m.parameters():
                p.copy_(p.to(dt).float())
        d = os.path.join(args.out, "model", name)
        m.to(dt).save_pretrained(d)
        m.float()
    n, s = 1, args.latent
    g = torch.Generator().manual_seed(1)
    sample = torch.randn(n, 4, s, s, generator=g)
    t = torch.full((n,), 999.0)
    ctx = torch.randn(n, 77, 1024, generator=g)
    image = torch.rand(n, 3, 8 * s, 8 * s, generator=g) * 2 - 1
    with torch.no_grad():
        out = unet(sample, t, ctx).sample
        post = vae.encode(image).latent_dist
        dec = vae.decode(post.mean).sample
    save_file({"unet.sample": sample, "unet.timestep": t, "unet.encoder_hidden_states": ctx,
               "unet.out": out.contiguous(), "vae.image": image, "vae.mean": post.mean.contiguous(),
               "vae.logvar": post.logvar.contiguous(), "vae.decoded": dec.contiguous()},
              os.path.join(args.out, "io.safetensors"))
    print("wrote", args.out)


if __name__ == "__main__":
    main()
