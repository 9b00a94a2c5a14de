#!/usr/bin/env python3
"""Reference for the engine: a small composite graph run by PyTorch autograd.

    conv2d(3->8, k3, p1) -> GroupNorm(4, 8) -> SiLU -> tokens [N, HW, C] ->
    multi-head self-attention (2 heads; q/k/v/out linears) -> linear(8->5) -> MSE vs target

Dumps inputs, parameters, the output, the loss, every gradient, and the parameters after two AdamW
steps (lr 1e-2, betas (0.9, 0.999), eps 1e-8, weight decay 1e-2) with gradient clipping at norm 0.25 (the first step clips, the second does not),
into tests/fixtures/autograd/composite.safetensors. tests/test_torch_reference.c matches it.

Needs: torch (Debian python3-torch 1.13 works), safetensors.
Run:   ${PYTHON:-python3} scripts/make_autograd_fixture.py   (or any python with both)
"""
import math
import os
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

torch.manual_seed(1234)
N, C_IN, H, W, C, HEADS, C_OUT = 2, 3, 6, 5, 8, 2, 5

params = {
    "conv.weight": torch.randn(C, C_IN, 3, 3) * 0.3,
    "conv.bias": torch.randn(C) * 0.1,
    "norm.weight": 1 + torch.randn(C) * 0.1,
    "norm.bias": torch.randn(C) * 0.1,
    "attn.to_q.weight": torch.randn(C, C) * 0.3,
    "attn.to_k.weight": torch.randn(C, C) * 0.3,
    "attn.to_v.weight": torch.randn(C, C) * 0.3,
    "attn.to_out.weight": torch.randn(C, C) * 0.3,
    "attn.to_out.bias": torch.randn(C) * 0.1,
    "head.weight": torch.randn(C_OUT, C) * 0.3,
    "head.bias": torch.randn(C_OUT) * 0.1,
}
for p in params.values():
    p.requires_grad_(True)
x = torch.randn(N, C_IN, H, W, requires_grad=True)
target = torch.randn(N, H * W, C_OUT)


def forward(p, x):
    h = F.conv2d(x, p["conv.weight"], p["conv.bias"], stride=1, padding=1)
    h = F.group_norm(h, 4, p["norm.weight"], p["norm.bias"], eps=1e-5)
    h = F.silu(h)
    t = h.permute(0, 2, 3, 1).reshape(N, H * W, C)
    q, k, v = (F.linear(t, p[f"attn.to_{n}.weight"]) for n in "qkv")
    d = C // HEADS

    def split(z):
        return z.reshape(N, -1, HEADS, d).permute(0, 2, 1, 3)

    s = split(q) @ split(k).transpose(-1, -2) / math.sqrt(d)
    a = (s.softmax(-1) @ split(v)).permute(0, 2, 1, 3).reshape(N, -1, C)
    a = F.linear(a, p["attn.to_out.weight"], p["attn.to_out.bias"])
    return F.linear(a, p["head.weight"], p["head.bias"])


out = forward(params, x)
loss = F.mse_loss(out, target)
loss.backward()

dump = {"input.x": x.detach(), "input.target": target, "out": out.detach(), "loss": loss.detach().reshape(1)}
for n, p in params.items():
    dump["param." + n] = p.detach().clone()
    dump["grad." + n] = p.grad.detach().clone()
dump["grad.input.x"] = x.grad.detach().clone()

# Two optimiser steps (the second on a fresh forward), with clipping, as the trainer does.
opt = torch.optim.AdamW(list(params.values()), lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2)
norms = []
for step in range(2):
    if step > 0:
        opt.zero_grad()
        F.mse_loss(forward(params, x), target).backward()
    norms.append(float(torch.nn.utils.clip_grad_norm_(list(params.values()), 0.25)))
    opt.step()
for n, p in params.items():
    dump["after2." + n] = p.detach().clone()
dump["grad_norms"] = torch.tensor(norms, dtype=torch.float32)

root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "autograd")
os.makedirs(root, exist_ok=True)
path = os.path.join(root, "composite.safetensors")
save_file({k: v.contiguous().float() for k, v in dump.items()}, path + ".tmp")
os.replace(path + ".tmp", path)
print(f"wrote {path}: loss {loss.item():.6f}, grad norms {norms}", file=sys.stderr)
