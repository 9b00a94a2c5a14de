#!/usr/bin/env python3
"""Inputs and diffusers references at sizes that do not divide evenly, for the committed sd1_tiny model.

Run:   ${PYTHON:-python3} scripts/make_sd_oddsize_io.py
Needs: torch (CPU), diffusers 0.21.x, safetensors; reads tests/fixtures/sd/sd1_tiny/model (written by
scripts/make_sd_fixture.py) and writes tests/fixtures/sd_forward/sd1_tiny_oddsize.io.safetensors, the
dod-parity io layout (checked by tests/cli_parity.sh with `dod-parity .../sd1_tiny --io FILE`):
  unet.sample 2 x 4 x 9 x 7: the down conv gives 5 x 4, so the up sampler must resize 5 x 4 -> 9 x 7
  (diffusers' forward_upsample_size path, nearest with torch's index rule), non-square;
  vae.image 1 x 3 x 20 x 28: the VAE's (0,1,0,1)-padded stride-2 convs floor 20 x 28 -> 10 x 14 -> 5 x 7.
"""
import os

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from safetensors.torch import save_file

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def main():
    model = os.path.join(ROOT, "tests/fixtures/sd/sd1_tiny/model")
    unet = UNet2DConditionModel.from_pretrained(os.path.join(model, "unet")).float().eval()
    vae = AutoencoderKL.from_pretrained(os.path.join(model, "vae")).float().eval()
    g = torch.Generator().manual_seed(3)
    sample = torch.randn(2, unet.config.in_channels, 9, 7, generator=g)
    t = torch.tensor([999.0, 37.0])
    ctx = torch.randn(2, 3, unet.config.cross_attention_dim, generator=g)
    image = torch.rand(1, 3, 20, 28, generator=g) * 2 - 1
    with torch.no_grad():
        out = unet(sample, t, ctx).sample
        post = vae.encode(image).latent_dist
        dec = vae.decode(post.mean).sample
    os.makedirs(os.path.join(ROOT, "tests/fixtures/sd_forward"), exist_ok=True)
    path = os.path.join(ROOT, "tests/fixtures/sd_forward/sd1_tiny_oddsize.io.safetensors")
    save_file({"unet.sample": sample, "unet.timestep": t, "unet.encoder_hidden_states": ctx,
               "unet.out": out.contiguous(), "vae.image": image, "vae.mean": post.mean.contiguous(),
               "vae.logvar": post.logvar.contiguous(), "vae.decoded": dec.contiguous()}, path + ".tmp")
    os.replace(path + ".tmp", path)
    print("wrote", path, tuple(out.shape), tuple(dec.shape))


if __name__ == "__main__":
    main()
