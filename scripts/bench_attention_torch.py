#!/usr/bin/env python3
"""PyTorch reference for `dod-bench cuda_attention` (tests/bench/bench_cuda_attention.c): one step of
multi-head attention, F.scaled_dot_product_attention (the kernel diffusers' default attention
processor calls) on [B, L, H*D] tensors split into heads, an MSE loss against a fixed target and the
backward into q, k and v. f32, TF32 off, as on the C side.

Run:   python3 scripts/bench_attention_torch.py --batch 7 --lq 1024 --lk 1024 --heads 5 --dim 64 [--iters 5]
Needs: torch with CUDA (a GPU).
Prints "torch_ms <median ms per step>" and "torch_peak_gib <peak allocated GiB>".
"""
import argparse
import statistics
import sys
import time


def main():
    ap = argparse.ArgumentParser()
    for name, default in (("batch", 7), ("lq", 1024), ("lk", 1024), ("heads", 5), ("dim", 64), ("iters", 5)):
        ap.add_argument("--" + name, type=int, default=default)
    a = ap.parse_args()
    try:
        import torch
        import torch.nn.functional as F
    except ImportError as e:
        print(f"missing {e.name}", file=sys.stderr)
        return 3
    if not torch.cuda.is_available():
        print("torch sees no CUDA device", file=sys.stderr)
        return 3
    torch.backends.cuda.matmul.allow_tf32 = False
    dev = "cuda"
    g = torch.Generator(device=dev).manual_seed(0)
    c = a.heads * a.dim
    q = torch.randn(a.batch, a.lq, c, device=dev, generator=g).requires_grad_()
    k = torch.randn(a.batch, a.lk, c, device=dev, generator=g).requires_grad_()
    v = torch.randn(a.batch, a.lk, c, device=dev, generator=g).requires_grad_()
    target = torch.randn(a.batch, a.lq, c, device=dev, generator=g)
    split = lambda t: t.view(a.batch, t.shape[1], a.heads, a.dim).transpose(1, 2)
    # torch < 2.0 has no SDPA: its math, as those versions' diffusers spelled it out
    sdpa = getattr(F, "scaled_dot_product_attention", None) or (
        lambda q_, k_, v_: torch.softmax(q_ @ k_.transpose(-1, -2) / a.dim ** 0.5, dim=-1) @ v_)
    times = []
    torch.cuda.reset_peak_memory_stats()
    for it in range(a.iters + 1):  # iteration 0 warms up
        t0 = time.perf_counter()
        o = sdpa(split(q), split(k), split(v)).transpose(1, 2).reshape(a.batch, a.lq, c)
        F.mse_loss(o, target).backward()
        torch.cuda.synchronize()
        if it > 0:
            times.append((time.perf_counter() - t0) * 1e3)
        q.grad = k.grad = v.grad = None
    print(f"torch_ms {statistics.median(times):.3f}")
    print(f"torch_peak_gib {torch.cuda.max_memory_allocated() / 2**30:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
