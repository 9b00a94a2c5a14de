#!/usr/bin/env python3
"""Writes tests/fixtures/lpips/ (read by tests/test_lpips.c): LPIPS values and input gradients from the
lpips package (VGG, v0.1, its real linear heads) with random VGG16 weights that the C side rebuilds
bit for bit (layers/lpips.c: lpips_random_vgg), so the 58 MB of VGG weights need not be committed.

  vgg_lin_v0.1.pth       the lpips package's weights/v0.1/vgg.pth, copied as shipped (legacy torch format)
  vgg_lin_v0.1_zip.pth   the same tensors re-saved in the zip format
  lpips_ref.safetensors  per case (a: 2x3x32x32, b: 1x3x37x45): x, y, dist (per image), coef, and
                         grad_x, grad_y of sum_i coef_i * dist_i; computed in float64, stored as f32
  eval/                  PNG pairs (gt, pred) and lpips_ref.txt: their LPIPS as the package scores files

Run: ${PYTHON:-python3} scripts/make_lpips_fixture.py   (needs torch, torchvision, lpips, numpy, safetensors)
"""
import os
import shutil

import numpy as np
import torch
from safetensors.torch import save_file

import lpips

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "lpips")
SEED = 18   # tests/test_lpips.c uses the same
CONV_INDEX = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]
MASK = (1 << 64) - 1


def splitmix64(x):
    """autograd/tensor.c's splitmix64 over a uint64 array (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def rand_uniform(n, seed, lo, hi):
    """autograd/tensor.c's tensor_rand_uniform: (float)(lo + (hi - lo) * u01(splitmix64(key ^ i))), with
    hi - lo in f32 (both operands are floats in C) and the rest in double."""
    key = splitmix64(np.array([(seed ^ 0x5DEECE66D) & MASK], dtype=np.uint64))[0]
    bits = splitmix64(np.arange(n, dtype=np.uint64) ^ key)
    u = ((bits >> np.uint64(11)).astype(np.float64) + 0.5) / 9007199254740992.0
    span = np.float64(np.float32(hi) - np.float32(lo))
    return (np.float64(np.float32(lo)) + span * u).astype(np.float32)


def random_vgg(features):
    """Sets torchvision's vgg16 features to lpips_random_vgg(SEED)'s values."""
    for k, idx in enumerate(CONV_INDEX):
        conv = features[idx]
        fan_in = 9.0 * conv.in_channels
        wb, bb = np.float32(np.sqrt(6.0 / fan_in)), np.float32(1.0 / np.sqrt(fan_in))
        w = rand_uniform(conv.weight.numel(), SEED + 2 * k, -wb, wb).reshape(conv.weight.shape)
        b = rand_uniform(conv.bias.numel(), SEED + 2 * k + 1, -bb, bb)
        with torch.no_grad():
            conv.weight.copy_(torch.from_numpy(w))
            conv.bias.copy_(torch.from_numpy(b))


def eval_pairs(model):
    """eval/{gt,pred}/*.png (crops of the photo fixtures, and degraded copies) and eval/lpips_ref.txt:
    'name lpips' per pair as the lpips package scores image files (lpips.im2tensor of the RGB uint8
    array, x / 127.5 - 1), for `dod-eval metrics --lpips-vgg --lpips-lin` (tests/cli_eval_lpips.sh)."""
    from PIL import Image, ImageFilter
    src = os.path.join(os.path.dirname(OUT), "data")
    for d in ("gt", "pred"):
        os.makedirs(os.path.join(OUT, "eval", d), exist_ok=True)
    rng = np.random.default_rng(SEED)
    lines = []
    for name, box, how in (("astronaut", (20, 10, 68, 50), "noise"), ("chelsea", (40, 20, 88, 60), "blur"),
                           ("coffee", (60, 40, 124, 88), "noise")):
        gt = Image.open(os.path.join(src, name + ".png")).convert("RGB").crop(box)
        if how == "blur":
            pred = gt.filter(ImageFilter.GaussianBlur(1.5))
        else:
            a = np.asarray(gt).astype(np.float64) + rng.normal(0, 20, (gt.size[1], gt.size[0], 3))
            pred = Image.fromarray(np.clip(np.round(a), 0, 255).astype(np.uint8))
        gt.save(os.path.join(OUT, "eval", "gt", name + ".png"))
        pred.save(os.path.join(OUT, "eval", "pred", name + ".png"))
        with torch.no_grad():
            # lpips.load_image reads RGB uint8 through cv2 (not installed here); PIL gives the same array
            load = lambda d: np.asarray(Image.open(os.path.join(OUT, "eval", d, name + ".png")).convert("RGB"))
            p0, p1 = lpips.im2tensor(load("pred")).double(), lpips.im2tensor(load("gt")).double()
            lines.append(f"{name} {model(p0, p1).item():.12g}")
    with open(os.path.join(OUT, "eval", "lpips_ref.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


def main():
    os.makedirs(OUT, exist_ok=True)
    pkg_lin = os.path.join(os.path.dirname(lpips.__file__), "weights", "v0.1", "vgg.pth")
    shutil.copyfile(pkg_lin, os.path.join(OUT, "vgg_lin_v0.1.pth"))
    torch.save(torch.load(pkg_lin, map_location="cpu"), os.path.join(OUT, "vgg_lin_v0.1_zip.pth"))

    model = lpips.LPIPS(net="vgg", pretrained=True, pnet_rand=True, verbose=False)   # real heads, random trunk
    features = torch.nn.Sequential(*[m for s in (model.net.slice1, model.net.slice2, model.net.slice3,
                                                 model.net.slice4, model.net.slice5) for m in s])
    random_vgg(features)
    model = model.double().eval()
    g = torch.Generator().manual_seed(SEED)
    tensors = {}
    for case, shape, coef in (("a", (2, 3, 32, 32), [1.0, 0.5]), ("b", (1, 3, 37, 45), [1.0])):
        x = (torch.rand(shape, generator=g) * 2 - 1).float()
        y = (x + 0.3 * torch.randn(shape, generator=g)).clamp(-1, 1).float()
        xd, yd = x.double().requires_grad_(), y.double().requires_grad_()
        dist = model(xd, yd).reshape(-1)   # normalize=False: inputs in [-1, 1]
        c = torch.tensor(coef, dtype=torch.float64)
        (dist * c).sum().backward()
        tensors.update({f"{case}.x": x, f"{case}.y": y, f"{case}.dist": dist.detach().float(),
                        f"{case}.coef": c.float(), f"{case}.grad_x": xd.grad.float(), f"{case}.grad_y": yd.grad.float()})
        print(case, "dist", dist.tolist())
    save_file({k: v.contiguous() for k, v in tensors.items()}, os.path.join(OUT, "lpips_ref.safetensors"))
    eval_pairs(model)
    for f in sorted(os.listdir(OUT)):
        print(f"{f}: {os.path.getsize(os.path.join(OUT, f))} bytes")


if __name__ == "__main__":
    main()
