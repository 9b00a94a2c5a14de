#!/usr/bin/env python3
"""Times the restoration of one image in PyTorch: the reference half of `dod-bench restore`.

The model is scripts/load_adapter.py's (diffusers UNet/VAE, PEFT LoRA, the modulation as hooks), loaded
from the adapter dod-bench wrote for its own model, restoring as dod-restore does: reflect-pad, the
modulation, the VAE encoder on the whole image, the UNet on the whole latent or in the public code's
latent tiles (--tile/--overlap), x0, the VAE decoder on the whole image. A random --size x --size image,
one warm-up, then the median of --iters. --random-weights builds the base from its configs (the weights
left at diffusers' init; `dod-bench restore --base DIR --random-weights` twin). --vae-tile N: diffusers'
own tiled VAE in N-pixel tiles (when dod-bench tiled its VAE: the whole-image VAE of a large image does
not fit PyTorch 1.13's attention, which holds every score).

Run:   ${PYTHON:-python3} scripts/bench_restore_torch.py --base DIR --adapter FILE [--size S] [--iters N]
                              [--threads T] [--device cpu|cuda] [--tile N --overlap N] [--random-weights]
Needs: torch (1.13 works), diffusers 0.21.4, peft 0.7.1, safetensors.
Prints "torch_ms <median ms per image>" and "torch_peak_gib <GiB>" (cuda: max allocated; cpu: the
process's peak RSS); exits 3 when a package is missing or --device cuda has no GPU.
"""
import argparse
import os
import resource
import statistics
import sys
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True)
    ap.add_argument("--adapter", required=True)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--tile", type=int, default=96)
    ap.add_argument("--overlap", type=int, default=32)
    ap.add_argument("--random-weights", action="store_true")
    ap.add_argument("--vae-tile", type=int, default=0)
    args = ap.parse_args()
    try:
        import torch
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from load_adapter import load_adapter
    except ImportError as e:
        print(f"missing {e.name}", file=sys.stderr)
        return 3
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device", file=sys.stderr)
        return 3
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    model = load_adapter(args.base, args.adapter, args.device, torch.float32, args.random_weights)
    g = torch.Generator().manual_seed(3)
    x = torch.rand(1, 3, args.size, args.size, generator=g) * 2 - 1
    times = []
    for i in range(args.iters + 1):
        t0 = time.perf_counter()
        y = model.restore(x, args.tile, args.overlap, args.vae_tile)
        if args.device == "cuda":
            torch.cuda.synchronize()
        if i > 0:
            times.append((time.perf_counter() - t0) * 1e3)
    assert torch.isfinite(y).all()
    print(f"torch_threads {torch.get_num_threads()}")
    print(f"torch_ms {statistics.median(times):.3f}")
    if args.device == "cuda":
        print(f"torch_peak_gib {torch.cuda.max_memory_allocated() / 2**30:.3f}")
    else:
        print(f"torch_peak_gib {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
