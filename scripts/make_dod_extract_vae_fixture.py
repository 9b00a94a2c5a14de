#!/usr/bin/env python3
"""PyTorch reference for the `vae` degradation extractor (layers/dod_extract_vae.c).

d = mean over H, W of the input of encoder.conv_out of the frozen diffusers AutoencoderKL (the encoder's
mid-block output after conv_norm_out and SiLU), on the tiny SD 2.x fixture
(tests/fixtures/sd/sd2_tiny/model/vae), in float64 from float32-rounded inputs.

Writes tests/fixtures/dod/extract_vae.safetensors:
  y  [2, 3, 24, 16]  random images in [-1, 1] (not square, to catch H/W mix-ups)
  d  [2, C]          the pooled features (C = the VAE's last block_out_channels)

Needs: torch (1.13 works), diffusers 0.21.4, safetensors.
Run:   ${PYTHON:-python3} scripts/make_dod_extract_vae_fixture.py
"""
import os

import torch
from diffusers import AutoencoderKL
from safetensors.torch import save_file

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
VAE = os.path.join(ROOT, "tests", "fixtures", "sd", "sd2_tiny", "model", "vae")
OUT = os.path.join(ROOT, "tests", "fixtures", "dod", "extract_vae.safetensors")


def main():
    vae = AutoencoderKL.from_pretrained(VAE).double().eval()
    g = torch.Generator().manual_seed(2024)
    y = (torch.rand(2, 3, 24, 16, generator=g) * 2 - 1).float()
    captured = []
    vae.encoder.conv_out.register_forward_pre_hook(lambda mod, args: captured.append(args[0]))
    with torch.no_grad():
        vae.encoder(y.double())
    d = captured[0].mean(dim=(2, 3))
    tensors = {"y": y.contiguous(), "d": d.float().contiguous()}
    save_file(tensors, OUT + ".tmp", metadata={"generator": "scripts/make_dod_extract_vae_fixture.py"})
    os.chmod(OUT + ".tmp", 0o644)
    os.replace(OUT + ".tmp", OUT)
    print(f"wrote {OUT} ({os.path.getsize(OUT)} bytes): d {tuple(d.shape)}, |d| max {d.abs().max().item():.4f}")


if __name__ == "__main__":
    main()
