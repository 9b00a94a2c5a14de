#!/usr/bin/env python3
"""Times a diffusers UNet2DConditionModel forward on the CPU; the reference half of `dod-bench unet`.

Run:   ${PYTHON:-python3} scripts/bench_unet_torch.py FIX [--iters N] [--size S] [--batch B] [--threads T]
Needs: torch (CPU), diffusers 0.21.x, safetensors.
FIX is a fixture directory (FIX/model/unet/{config.json,diffusion_pytorch_model.safetensors},
FIX/io.safetensors with unet.sample / unet.timestep / unet.encoder_hidden_states). Without --size
the fixture's own inputs are used; with --size the latent is B x C x S x S (random, fixed seed) and
the text context keeps the fixture's length and width.
Prints one line "torch_ms <median milliseconds per forward>" (plus "torch_threads <n>").
"""
import argparse
import statistics
import sys
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("fixture")
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--size", type=int, default=0)
    ap.add_argument("--batch", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    try:
        import torch
        from diffusers import UNet2DConditionModel
        from safetensors.torch import load_file
    except ImportError as e:  # the C side reports this and prints only its own time
        print(f"missing {e.name}", file=sys.stderr)
        return 3
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    unet = UNet2DConditionModel.from_pretrained(f"{args.fixture}/model/unet").float().eval()
    io = load_file(f"{args.fixture}/io.safetensors")
    sample, t, ctx = io["unet.sample"], io["unet.timestep"], io["unet.encoder_hidden_states"]
    if args.size > 0 or args.batch > 0:
        n = args.batch if args.batch > 0 else sample.shape[0]
        s = args.size if args.size > 0 else sample.shape[2]
        g = torch.Generator().manual_seed(0)
        sample = torch.randn(n, sample.shape[1], s, s, generator=g)
        t = torch.full((n,), float(t[0]))
        ctx = ctx[:1].expand(n, -1, -1).contiguous()
    times = []
    with torch.no_grad():
        unet(sample, t, ctx)  # warm-up
        for _ in range(args.iters):
            t0 = time.perf_counter()
            unet(sample, t, ctx)
            times.append((time.perf_counter() - t0) * 1e3)
    print(f"torch_threads {torch.get_num_threads()}")
    print(f"torch_ms {statistics.median(times):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
