#!/usr/bin/env python3
"""Times one DOD training step in PyTorch (CPU, or CUDA); the reference half of `dod-bench train`.

The model is scripts/make_dod_fixture.py's DodTorch (the PyTorch twin of layers/dod_model.c, imported,
not copied) on the tiny SD 2.x base, in float32: rank 4, alpha 6, cnn 4-6-8-8, de 12, block 6, RRDB
growth 2 (the parity fixture's sizes, which `dod-bench train` configures on its side too).
A step is what dod-train does: forward (train mode, posterior noise given), the stage's loss
(stage 1: 2 * MSE; stage 2: MSE + 0.1 * (1 - SSIM)), backward, clip_grad_norm_(1.0), AdamW
(lr 5e-5, betas (0.9, 0.999), weight decay 1e-2, eps 1e-8) over the stage's trainables. One
warm-up step, then the median of --iters steps.

With --base DIR the model is the spec-sized DOD (rank 8, alpha 8, cnn 32-64-128-256, de 256, block 64,
growth 32: dod_model_default_config) on the diffusers configs in DIR (unet/config.json,
vae/config.json, scheduler/scheduler_config.json) with RANDOM frozen weights built from the configs
alone (no weight files needed), directly on the device when torch can (torch.set_default_device);
this is `dod-bench train --base DIR --random-weights`'s twin, e.g. at SD 2.1-base size.
--device cuda runs it on the GPU (stage 1 only: the SSIM helper builds its window on the CPU), in
float32 with TF32 off (our f32 precision mode), and also prints "torch_peak_gib <max allocated GiB>" and
"torch_reserved_gib <max reserved GiB>" (what its caching allocator held: the figure to compare with
the device memory our allocator reserves).
--precision mixed is the usual PyTorch recipe for a frozen base (diffusers / OSEDiff training scripts):
frozen UNet/VAE weights stored in bf16, the trainables (conv_in, LoRA, modulation, detail) f32 master
copies, forward and loss under torch.autocast(bfloat16) (products in bf16; norms, softmax and losses in
f32 by autocast's own lists), TF32 allowed: the twin of our DOD_PREC_MIXED with bf16 frozen weights.

Run:   ${PYTHON:-python3} scripts/bench_train_torch.py [--stage 1|2] [--batch B] [--crop S]
                              [--iters N] [--threads T] [--device cpu|cuda] [--base DIR]
                              [--precision f32|mixed]
Needs: torch (1.13 works), diffusers 0.21.4, safetensors.
Prints "torch_threads <n>" and "torch_ms <median milliseconds per step>"; exits 3 when a package is
missing or --device cuda has no GPU (the C side then reports its own time only).
"""
import argparse
import contextlib
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
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--base", default=None)
    ap.add_argument("--precision", choices=("f32", "mixed"), default="f32")
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
    dev = torch.device(args.device)
    if args.device == "cuda":
        if not torch.cuda.is_available():
            print("torch sees no CUDA device", file=sys.stderr)
            return 3
        if args.stage != 1:
            print("--device cuda: stage 1 only", file=sys.stderr)
            return 2
        mixed = args.precision == "mixed"  # our f32 mode: plain f32 products; mixed: TF32 allowed
        torch.backends.cuda.matmul.allow_tf32 = mixed
        torch.backends.cudnn.allow_tf32 = mixed
    dod.DT = torch.float32  # the C side runs f32; the fixture generator's default is float64
    if args.base:
        use_spec_sizes(dod, dev)
        model = dod.DodTorch(args.base)
        to_device(model, dev)
    else:
        model = dod.DodTorch()
    autocast = contextlib.nullcontext()
    if args.precision == "mixed":
        for p in list(model.unet.parameters()) + list(model.vae.parameters()):
            if not p.requires_grad:  # frozen base weights; conv_in and the adapters stay f32
                p.data = p.data.to(torch.bfloat16)
        if args.stage != 1:  # the detail module's group_norm meets bf16 weights it cannot mix with
            print("--precision mixed: stage 1 only", file=sys.stderr)
            return 2
        autocast = torch.autocast(args.device, dtype=torch.bfloat16)
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
    hq = (torch.rand(n, 3, s, s, generator=g) * 2 - 1).to(dev)
    lq = (hq + 0.15 * torch.randn(n, 3, s, s, generator=g).to(dev)).clamp(-1, 1)
    prompt = torch.randn(77, model.unet.config.cross_attention_dim, generator=g).to(dev)

    def step():
        opt.zero_grad(set_to_none=True)
        e = torch.randn(*model.latent_shape(n, s, s), generator=g).to(dev)
        with autocast:
            out = model.forward(lq, e, prompt)
            if args.stage == 1:
                loss = 2 * F.mse_loss(out, hq)
            else:
                loss = F.mse_loss(out, hq) + 0.1 * (1 - dod.ssim(out, hq, 2.0))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(plist, 1.0)
        opt.step()
        if args.device == "cuda":
            torch.cuda.synchronize()
        return loss.item()

    step()  # warm-up
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(args.iters):
        t0 = time.perf_counter()
        step()
        times.append((time.perf_counter() - t0) * 1e3)
    print(f"torch_threads {torch.get_num_threads()}")
    if args.device == "cuda":
        print(f"torch_peak_gib {torch.cuda.max_memory_allocated() / 2 ** 30:.3f}")
        print(f"torch_reserved_gib {torch.cuda.max_memory_reserved() / 2 ** 30:.3f}")
    print(f"torch_ms {statistics.median(times):.3f}")
    return 0


def use_spec_sizes(dod, dev):
    """dod_model_default_config's sizes, and frozen UNet/VAE built from their configs with random weights
    (directly on `dev` when torch has set_default_device) instead of loaded from weight files."""
    dod.R, dod.ALPHA = 8, 8.0
    dod.CNN, dod.DE, dod.BLK = (32, 64, 128, 256), 256, 64
    dod.GROWTH = 32

    class RandomFromConfig:
        def __init__(self, cls):
            self.cls = cls

        def from_pretrained(self, path):
            import torch
            cfg = self.cls.load_config(path)
            if hasattr(torch, "set_default_device"):  # torch >= 2.0: no CPU init of 865M weights
                torch.set_default_device(dev)
                try:
                    return self.cls.from_config(cfg)
                finally:
                    torch.set_default_device("cpu")
            return self.cls.from_config(cfg).to(dev)

    dod.UNet2DConditionModel = RandomFromConfig(dod.UNet2DConditionModel)
    dod.AutoencoderKL = RandomFromConfig(dod.AutoencoderKL)


def to_device(model, dev):
    """Everything of a DodTorch on dev: the frozen models with their LoRA wrappers (module .to keeps the
    Parameter objects), the loose trainables, and the CPU timestep tensor its forward builds."""
    model.unet.to(dev)
    model.vae.to(dev)
    for p in list(model.s1.values()) + list(model.s2.values()):
        p.data = p.data.to(dev)
    model.unet.register_forward_pre_hook(lambda mod, a: (a[0], a[1].to(a[0].device)) + tuple(a[2:]))


if __name__ == "__main__":
    sys.exit(main())
