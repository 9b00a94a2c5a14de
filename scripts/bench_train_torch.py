#!/usr/bin/env python3
"""Times one DOD training step in PyTorch (CPU, or CUDA); the reference half of `dod-bench train`.

The model is scripts/make_dod_fixture.py's DodTorch (the PyTorch twin of layers/dod_model.c, imported,
not copied) on the tiny SD 2.x base, in float32: rank 4, alpha 6, cnn 4-6-8-8, de 12, block 6, RRDB
growth 2 (the parity fixture's sizes, which `dod-bench train` configures on its side too).
A step is what dod-train does: forward (train mode, posterior noise given), the stage's loss
(stage 1: 2 * MSE; stage 2: MSE + 0.1 * (1 - SSIM)), backward, clip_grad_norm_(1.0), AdamW
(lr 5e-5, betas (0.9, 0.999), weight decay 1e-2, eps 1e-8) over the stage's trainables. One
warm-up step (two for compile), then the median of --iters steps.

With --base DIR the model is the spec-sized DOD (rank 8, alpha 8, cnn 32-64-128-256, de 256, block 64,
growth 32: dod_model_default_config) on the diffusers configs in DIR (unet/config.json,
vae/config.json, scheduler/scheduler_config.json) with RANDOM frozen weights built from the configs
alone (no weight files needed), directly on the device when torch can (torch.set_default_device);
this is `dod-bench train --base DIR --random-weights`'s twin, e.g. at SD 2.1-base size.
--device cuda runs it on the GPU (stage 1 only: the SSIM helper builds its window on the CPU), in
float32 with TF32 off (our f32 precision mode).
--precision mixed is the usual PyTorch recipe for a frozen base (diffusers / OSEDiff training scripts):
frozen UNet/VAE weights stored in bf16, the trainables (conv_in, LoRA, modulation, detail) f32 master
copies, forward and loss under torch.autocast(bfloat16) (products in bf16; norms, softmax and losses in
f32 by autocast's own lists), TF32 allowed: the twin of our DOD_PREC_MIXED with bf16 frozen weights.

--variants (comma-separated, default eager,best,compile), each on a freshly built model in the same run:
  eager    the recipe above as diffusers sets it up by default (its default attention processor: SDPA
           on torch >= 2.0, baddbmm + softmax + bmm before), NCHW, cudnn.benchmark off;
  best     the strongest eager setup: channels_last (model, trainables and inputs),
           torch.nn.functional.scaled_dot_product_attention through diffusers' AttnProcessor2_0 (torch
           >= 2.0), torch.backends.cudnn.benchmark = True;
  compile  best with the UNet and the VAE's encoder and decoder compiled (nn.Module.compile, torch >= 2.2).
A variant whose pieces are missing runs with what exists and says what was left out; one that cannot
run at all (compile on torch 1.13) is reported as missing, with the reason.
--count-flops: one more (untimed) forward + backward of the first variant under a FLOP counter:
torch.utils.flop_counter.FlopCounterMode (PyTorch's own, torch >= 2.1; it counts an SDPA backward as
five products, the remade Q K^T included) or, before 2.1, scripts/count_flops_torch.py's aten counter.

Run:   ${PYTHON:-python3} scripts/bench_train_torch.py [--stage 1|2] [--batch B] [--crop S]
                              [--iters N] [--threads T] [--device cpu|cuda] [--base DIR]
                              [--precision f32|mixed] [--variants LIST] [--count-flops]
Needs: torch (1.13 works), diffusers 0.21.4, safetensors.
Prints, per variant, "torch_variant NAME MS PEAK_GIB RESERVED_GIB | what it ran with" (peaks: CUDA
max_memory_allocated / max_memory_reserved after the warm-up; "-" on the CPU) or
"torch_variant_missing NAME | why"; "torch_flops N | counter" with --count-flops; then
"torch_threads <n>" and, for the first variant that ran, "torch_ms <median ms>" (plus
"torch_peak_gib" / "torch_reserved_gib" on CUDA). Exits 3 when a package is missing or --device cuda
has no GPU (the C side then reports its own time only).
"""
import argparse
import contextlib
import gc
import os
import statistics
import sys
import time

VARIANTS = ("eager", "best", "compile")


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
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--count-flops", action="store_true")
    args = ap.parse_args()
    variants = [v for v in args.variants.split(",") if v]
    bad = [v for v in variants if v not in VARIANTS]
    if bad or not variants:
        print(f"--variants {args.variants}: choose from {','.join(VARIANTS)}", file=sys.stderr)
        return 2
    try:
        import torch
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
    if args.precision == "mixed" and args.stage != 1:  # the detail module's group_norm meets bf16 weights
        print("--precision mixed: stage 1 only", file=sys.stderr)
        return 2
    dod.DT = torch.float32  # the C side runs f32; the fixture generator's default is float64
    if args.base:
        use_spec_sizes(dod, torch.device(args.device))

    first = None
    for name in variants:
        missing = variant_missing(torch, name)
        if missing:
            print(f"torch_variant_missing {name} | {missing}", flush=True)
            continue
        try:
            ms, peak, reserved, notes = run_variant(torch, dod, args, name)
        except Exception as e:  # a variant that fails (e.g. a compile error) is reported, the others still run
            msg = " ".join(f"{type(e).__name__}: {e}".split())[:300]
            print(f"torch_variant_missing {name} | failed: {msg}", flush=True)
            continue
        fmt = lambda v: "-" if v is None else f"{v:.3f}"
        print(f"torch_variant {name} {ms:.3f} {fmt(peak)} {fmt(reserved)} | {notes}", flush=True)
        if first is None:
            first = (name, ms, peak, reserved)
    if args.count_flops and first:
        flops, counter = count_flops(torch, dod, args, first[0])
        print(f"torch_flops {flops} | {counter}, forward + backward of one step, variant {first[0]}", flush=True)
    print(f"torch_threads {torch.get_num_threads()}")
    if first is None:
        print("no variant ran", file=sys.stderr)
        return 1
    if first[2] is not None:
        print(f"torch_peak_gib {first[2]:.3f}")
        print(f"torch_reserved_gib {first[3]:.3f}")
    print(f"torch_ms {first[1]:.3f}")
    return 0


def variant_missing(torch, name):
    """Why variant `name` cannot run with this torch at all, or None."""
    if name == "compile" and not hasattr(torch.nn.Module, "compile"):
        return f"torch {torch.__version__} has no torch.compile / nn.Module.compile (torch >= 2.2)"
    return None


def build(torch, dod, args, name):
    """A fresh model of variant `name`: (model, trainables, optimizer, autocast, lq, hq, prompt, notes)."""
    dev = torch.device(args.device)
    notes = []
    model = dod.DodTorch(args.base) if args.base else dod.DodTorch()
    if args.device != "cpu":
        to_device(model, dev)
    if args.precision == "mixed":
        for p in list(model.unet.parameters()) + list(model.vae.parameters()):
            if not p.requires_grad:  # frozen base weights; conv_in and the adapters stay f32
                p.data = p.data.to(torch.bfloat16)
    best = name in ("best", "compile")
    torch.backends.cudnn.benchmark = best
    fmt = torch.channels_last if best else torch.contiguous_format
    if best:
        notes.append("channels_last")
        model.unet.to(memory_format=fmt)
        model.vae.to(memory_format=fmt)
        for p in list(model.s1.values()) + list(model.s2.values()):  # loose trainables (modulation, detail)
            if p.dim() == 4:
                p.data = p.data.contiguous(memory_format=fmt)
        if hasattr(torch.nn.functional, "scaled_dot_product_attention"):
            from diffusers.models.attention_processor import AttnProcessor2_0
            model.unet.set_attn_processor(AttnProcessor2_0())
            model.vae.set_attn_processor(AttnProcessor2_0())
            notes.append("scaled_dot_product_attention (AttnProcessor2_0)")
        else:
            notes.append(f"no scaled_dot_product_attention in torch {torch.__version__}: diffusers' default attention")
        notes.append("cudnn.benchmark on" if args.device == "cuda" else "cudnn.benchmark (no effect on the CPU)")
    else:
        proc = type(next(iter(model.unet.attn_processors.values()))).__name__
        notes.append(f"NCHW, diffusers' default attention ({proc}), cudnn.benchmark off")
    if name == "compile":
        model.unet.compile()
        model.vae.encoder.compile()
        model.vae.decoder.compile()
        notes.append("UNet, VAE encoder and decoder compiled")
    autocast = contextlib.nullcontext()
    if args.precision == "mixed":
        autocast = torch.autocast(args.device, dtype=torch.bfloat16)
        notes.insert(0, "bf16 autocast, bf16 frozen weights")
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
    hq, lq = hq.contiguous(memory_format=fmt), lq.contiguous(memory_format=fmt)
    prompt = torch.randn(77, model.unet.config.cross_attention_dim, generator=g).to(dev)
    return model, plist, opt, autocast, lq, hq, prompt, ", ".join(notes)


def loss_of(torch, dod, model, args, autocast, lq, hq, prompt, g):
    import torch.nn.functional as F
    e = torch.randn(*model.latent_shape(lq.shape[0], lq.shape[2], lq.shape[3]), generator=g).to(lq.device)
    with autocast:
        out = model.forward(lq, e, prompt)
        if args.stage == 1:
            return 2 * F.mse_loss(out, hq)
        return F.mse_loss(out, hq) + 0.1 * (1 - dod.ssim(out, hq, 2.0))


def run_variant(torch, dod, args, name):
    """Median ms per step of variant `name`, its peak allocated / reserved GiB (CUDA) and notes."""
    cuda = args.device == "cuda"
    model, plist, opt, autocast, lq, hq, prompt, notes = build(torch, dod, args, name)
    g = torch.Generator().manual_seed(1)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = loss_of(torch, dod, model, args, autocast, lq, hq, prompt, g)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(plist, 1.0)
        opt.step()
        if cuda:
            torch.cuda.synchronize()
        return loss.item()

    for _ in range(2 if name == "compile" else 1):  # warm-up (compile: the compiling step and one more)
        step()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(args.iters):
        t0 = time.perf_counter()
        step()
        times.append((time.perf_counter() - t0) * 1e3)
    peak = reserved = None
    if cuda:
        peak = torch.cuda.max_memory_allocated() / 2 ** 30
        reserved = torch.cuda.max_memory_reserved() / 2 ** 30
    del model, plist, opt, lq, hq, prompt
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    torch.backends.cudnn.benchmark = False
    return statistics.median(times), peak, reserved, notes


def count_flops(torch, dod, args, name):
    """FLOPs of one forward + backward of variant `name`, and the counter's name."""
    model, plist, opt, autocast, lq, hq, prompt, _ = build(torch, dod, args, name)
    g = torch.Generator().manual_seed(1)
    try:
        from torch.utils.flop_counter import FlopCounterMode
        counter = FlopCounterMode(display=False)
        label = f"torch.utils.flop_counter (torch {torch.__version__})"
        total = counter.get_total_flops
    except ImportError:
        import count_flops_torch
        counter = count_flops_torch.FlopCounter()
        label = f"scripts/count_flops_torch.py's aten counter (torch {torch.__version__} has no torch.utils.flop_counter)"
        total = lambda: counter.flops
    with counter:
        loss = loss_of(torch, dod, model, args, autocast, lq, hq, prompt, g)
        loss.backward()
    return int(total()), label


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
