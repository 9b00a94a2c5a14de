#!/usr/bin/env python3
"""Reference values for the pointwise/shape/loss op tests (tests/test_op_shape.c, test_op_loss.c).

Run:   ${PYTHON:-python3} scripts/make_opspoint_fixtures.py
Needs: torch, diffusers 0.21.x (get_timestep_embedding), scikit-image 0.19 (structural_similarity,
       data.astronaut), numpy. Writes tests/fixtures/opspoint/{timestep_embedding,ssim}.txt.

Format (plain text, read by tests/op_test_util.h): blocks of
    <name> <count>
    <count whitespace-separated numbers>
"""
import os
import tempfile

import numpy as np
import torch
from diffusers.models.embeddings import get_timestep_embedding
from skimage import data
from skimage.metrics import structural_similarity

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "opspoint")


def write(path, blocks):
    """blocks: list of (name, 1-d array). Written to a temp file renamed into place."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        for name, arr in blocks:
            arr = np.asarray(arr, dtype=np.float64).ravel()
            f.write(f"{name} {arr.size}\n")
            for i in range(0, arr.size, 8):
                f.write(" ".join(f"{v:.9g}" for v in arr[i:i + 8]) + "\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def timestep_fixture():
    t = torch.tensor([0.0, 1.0, 999.0, 500.5, 37.25], dtype=torch.float32)
    blocks = [("timesteps", t.numpy())]
    # (dim, flip_sin_to_cos, downscale_freq_shift): SD UNet (320, True, 0), DDPM default (7, False, 1)
    for dim, flip, shift in [(320, True, 0.0), (7, False, 1.0), (16, False, 0.0)]:
        emb = get_timestep_embedding(t, dim, flip_sin_to_cos=flip, downscale_freq_shift=shift)
        blocks.append((f"emb_{dim}_{int(flip)}_{int(shift)}", emb.numpy()))
    write(os.path.join(OUT, "timestep_embedding.txt"), blocks)


def ssim_fixture():
    rng = np.random.default_rng(7)
    img = data.astronaut()[100:116, 180:198, :].astype(np.float64) / 255.0  # 16 x 18 x 3
    x = np.transpose(img, (2, 0, 1)).astype(np.float32)                     # [3, 16, 18]
    y = np.clip(x + rng.normal(0, 0.08, x.shape), 0, 1).astype(np.float32)
    s = structural_similarity(x.astype(np.float64), y.astype(np.float64), channel_axis=0, data_range=1.0,
                              gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
    write(os.path.join(OUT, "ssim.txt"), [("shape", [1, 3, 16, 18]), ("x", x), ("y", y), ("ssim", [s])])


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    timestep_fixture()
    ssim_fixture()
    print("wrote", OUT)
