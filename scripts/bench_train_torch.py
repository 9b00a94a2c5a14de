#!/usr/bin/env python3
"""Times one DOD training step in PyTorch on the CPU; the reference half of `dod-bench train`.

The model is scripts/make_dod_fixture.py's DodTorch (the PyTorch twin of layers/dod_model.c, imported,
not copied) on the tiny SD 2.x base, in float32: rank 4, alpha 6, cnn 4-6-8-8, de 12, block 6, RRDB
growth 2 (the parity fixture's sizes, which `dod-bench train` configures on its side too).
A step is what dod-train does: forward (train mode, posterior noise given), the stage's loss
(stage 1: 2 * MSE; stage 2: MSE + 0.1 * (1 - SSIM)), backward, clip_grad_norm_(1.0), AdamW
(lr 5e-5, betas (0.9, 0.999), weight decay 1e-2, eps 1e-8) over the stage's trainables. One
warm-up step, then the median of --iters steps.

Run:   /work/venv/bin/python scripts/bench_train_torch.py [--stage 1|2] [--batch B] [--crop S]
                                                          [--iters N] [--threads T]
Needs: torch (1.13 works), diffusers 0.21.4, safetensors.
Prints "torch_threads <n>" and "torch_ms <median milliseconds per step>"; exits 3 when a package is
missing (the C side then reports its own time only).
"""
import argparse
import os
import statistics
import sys
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--stage", type=int, default=1, choices=(1, 2))
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--crop", type=int, default=32)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    try:
        import torch
        import torch.nn.functional as F
        import diffusers  # noqa: F401  (make_dod_fixture needs it; report it by name here)
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import make_dod_fixture as dod
    except ImportError as e:
        print(f"missing {e.name}", file=sys.stderr)
        return 3
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.crop % 8:
        print(f"--crop {args.crop}: must be a multiple of 8", file=sys.stderr)
        return 2
    dod.DT = torch.float32  # the C side runs f32; the fixture generator's default is float64
    model = dod.DodTorch()
    params = model.s1
    if args.stage == 2:
        for p in model.s1.values():
            p.requires_grad_(False)
        model.stage = 2
        params = model.s2
    plist = list(params.values())
    opt = torch.optim.AdamW(plist, lr=5e-5, betas=(0.9, 0.999), weight_decay=1e-2, eps=1e-8)

    n, s = args.batch, args.crop
    g = torch.Generator().manual_seed(0)
    hq = torch.rand(n, 3, s, s, generator=g) * 2 - 1
    lq = (hq + 0.15 * torch.randn(n, 3, s, s, generator=g)).clamp(-1, 1)
    prompt = torch.randn(77, model.unet.config.cross_attention_dim, generator=g)

    def step():
        opt.zero_grad(set_to_none=True)
        e = torch.randn(*model.latent_shape(n, s, s), generator=g)
        out = model.forward(lq, e, prompt)
        if args.stage == 1:
            loss = 2 * F.mse_loss(out, hq)
        else:
            loss = F.mse_loss(out, hq) + 0.1 * (1 - dod.ssim(out, hq, 2.0))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(plist, 1.0)
        opt.step()
        return loss.item()

    step()  # warm-up
    times = []
    for _ in range(args.iters):
        t0 = time.perf_counter()
        step()
        times.append((time.perf_counter() - t0) * 1e3)
    print(f"torch_threads {torch.get_num_threads()}")
    print(f"torch_ms {statistics.median(times):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
