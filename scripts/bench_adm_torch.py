#!/usr/bin/env python3
"""Times guided-diffusion's degradation extractor in PyTorch on the CPU: the reference half of `dod-bench adm`.

Run:   ${PYTHON:-python3} scripts/bench_adm_torch.py --guided-diffusion DIR [--batch B] [--size S] [--iters N]
                                                    [--threads T]
DIR is a checkout of github.com/openai/guided-diffusion (imported from there, never copied here). Needs torch.
The 256x256 unconditional model of the released flags (num_channels 256, num_res_blocks 2, attention at
32,16,8 with 64-channel heads, resblock_updown, scale-shift norm, learn_sigma), random weights, f32, with
its decoder half dropped (output_blocks, out: what DOD's extractor never runs). One step = UNetModel.forward
on x [B, 3, S, S] at t = 0 under no_grad, stopped by a hook after the middle block, then the spatial mean
(DOD's features). One warm-up, then the median of --iters. Prints "torch_ms <median milliseconds>",
"torch_peak_gib <peak RSS growth, GiB>", "torch_threads <n>".
"""
import argparse
import os
import resource
import statistics
import sys
import time


class Stop(Exception):
    pass


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--guided-diffusion", required=True)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--iters", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    try:
        import torch
    except ImportError as e:
        print(f"missing {e.name}", file=sys.stderr)
        return 3
    if not os.path.isdir(os.path.join(args.guided_diffusion, "guided_diffusion")):
        print(f"{args.guided_diffusion}: not a guided-diffusion checkout", file=sys.stderr)
        return 3
    sys.path.insert(0, os.path.abspath(args.guided_diffusion))
    from guided_diffusion.script_util import create_model

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    model = create_model(image_size=256, num_channels=256, num_res_blocks=2, learn_sigma=True, class_cond=False,
                         attention_resolutions="32,16,8", num_head_channels=64, resblock_updown=True,
                         use_scale_shift_norm=True, use_fp16=False, dropout=0.0).float().eval()
    model.output_blocks = torch.nn.ModuleList()
    model.out = torch.nn.Identity()
    out = {}

    def hook(module, inputs, output):
        out["mid"] = output
        raise Stop()

    model.middle_block.register_forward_hook(hook)
    x = torch.rand(args.batch, 3, args.size, args.size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    t = torch.zeros(args.batch, dtype=torch.long)
    times = []
    for i in range(args.iters + 1):
        t0 = time.perf_counter()
        with torch.no_grad():
            try:
                model(x, t)
            except Stop:
                pass
            d = out.pop("mid").mean(dim=(2, 3))
        if i:
            times.append((time.perf_counter() - t0) * 1000)
    assert d.shape == (args.batch, 1024)
    peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1048576.0   # KiB -> GiB
    print(f"torch_ms {statistics.median(times):.3f}")
    print(f"torch_peak_gib {peak:.3f}")
    print(f"torch_threads {torch.get_num_threads()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
