#!/usr/bin/env python3
"""Times the LPIPS term of a training step in PyTorch on the CPU: the reference half of `dod-bench lpips`.

Run:   ${PYTHON:-python3} scripts/bench_lpips_torch.py [--batch B] [--crop S] [--iters N] [--threads T]
Needs: torch, torchvision, lpips.
lpips.LPIPS(net='vgg', version='0.1') with a random VGG trunk (pnet_rand: no download; the speed does not
depend on the values) and the package's linear heads; x [B, 3, S, S] requires grad (the model output),
y is a constant (the target). One step = lpips(x, y).mean() forward + backward to x. One warm-up,
then the median of --iters. Prints "torch_ms <median milliseconds>", "torch_peak_gib <peak RSS growth>",
"torch_threads <n>".
"""
import argparse
import resource
import statistics
import sys
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=7)
    ap.add_argument("--crop", type=int, default=256)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    try:
        import torch
        import lpips
    except ImportError as e:
        print(f"missing {e.name}", file=sys.stderr)
        return 3
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    model = lpips.LPIPS(net="vgg", pretrained=True, pnet_rand=True, verbose=False).eval()
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(args.batch, 3, args.crop, args.crop, generator=g) * 2 - 1).requires_grad_()
    y = torch.rand(args.batch, 3, args.crop, args.crop, generator=g) * 2 - 1
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times = []
    for i in range(args.iters + 1):
        t0 = time.perf_counter()
        model(x, y).mean().backward()
        if i:
            times.append((time.perf_counter() - t0) * 1000)
        x.grad = None
    peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1048576.0   # KiB -> GiB
    print(f"torch_ms {statistics.median(times):.3f}")
    print(f"torch_peak_gib {peak:.3f}")
    print(f"torch_threads {torch.get_num_threads()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
