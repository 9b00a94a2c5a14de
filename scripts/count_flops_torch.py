#!/usr/bin/env python3
"""PyTorch's side of the FLOP count (autograd/profile.h): counts the products PyTorch's own aten ops
compute, with our convention, independently of our C code.

The counter is a TorchDispatchMode (torch >= 1.13): it sees every aten op below autograd, forward and
backward alike, and counts 2 FLOPs per multiply-add of
  mm, addmm (2*M*N*K), bmm, baddbmm (2*B*M*N*K),
  convolution (2*N*Cout*Ho*Wo*Cin*kh*kw, groups 1), convolution_backward (the same per gradient
  output_mask asks for: dX, dW),
i.e. the products autograd actually runs (a frozen weight gets no dW). Grouped convolutions (the
SSIM loss's depthwise Gaussian blur) are left out: our op_ssim counts no FLOPs. PyTorch's eager
attention (diffusers' AttnProcessor on torch 1.13: baddbmm, softmax, bmm) keeps P, so its backward
is 4 products, which is what our op_attention counts as model FLOPs (its remade Q K^T counts as
recomputed). torch.utils.flop_counter (PyTorch's own counter, torch >= 2.1) is not in torch 1.13;
scripts/bench_train_torch.py --count-flops uses it where it exists.

Main: one training step (forward + loss, backward) of scripts/make_dod_fixture.py's model, stages 1
and 2 (the parity fixture's sizes and inputs), writes tests/fixtures/dod/flops.json:
  {"s1": {"forward": F, "backward": B}, "s2": {...}, "modulation_fuse": {"forward": F, "backward_s1": B}}
which tests/test_flops.c compares with our counter on the same step (exactly: the counts are integers).
Two places compute differently on purpose, and the test accounts for them by formula:
  - the modulation's fuse MLP: PyTorch's twin runs one [N, de+block] x [de+block, 2r] product per
    UNet block (10), and backward only for the blocks whose gamma/beta reach a LoRA layer; ours
    splits W_fuse = [W_e | W_b] into one [N, de] and one [10, block] product (layers/dod_modulation.c).
    "modulation_fuse" holds PyTorch's share (its products, from the model's structure);
  - ours also runs the frozen UNet conv_in, whose output the trainable copy then replaces
    (layers/dod_model.c's hook): one conv_in forward more.

Run:   ${PYTHON:-python3} scripts/count_flops_torch.py
Needs: torch (1.13 works), diffusers 0.21.4, safetensors.
"""
import json
import math
import os
import sys

import torch
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten


def _conv_flops(out_shape, w_shape):
    n, cout = out_shape[0], out_shape[1]
    return 2 * n * cout * math.prod(out_shape[2:]) * math.prod(w_shape[1:])


class FlopCounter(TorchDispatchMode):
    """Counts FLOPs (2 per multiply-add) of the product ops into .flops (an int)."""

    def __init__(self):
        super().__init__()
        self.flops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        packet = func.overloadpacket
        if packet in (aten.mm, aten.addmm):
            a, b = (args[0], args[1]) if packet is aten.mm else (args[1], args[2])
            self.flops += 2 * a.shape[0] * a.shape[1] * b.shape[1]
        elif packet in (aten.bmm, aten.baddbmm):
            a, b = (args[0], args[1]) if packet is aten.bmm else (args[1], args[2])
            self.flops += 2 * a.shape[0] * a.shape[1] * a.shape[2] * b.shape[2]
        elif packet is aten.convolution:
            x, w, groups = args[0], args[1], args[8]
            if groups == 1 and not args[6]:  # not transposed
                self.flops += _conv_flops(out.shape, w.shape)
        elif packet is aten.convolution_backward:
            grad_out, w, groups, mask = args[0], args[2], args[9], args[10]
            if groups == 1 and not args[7]:
                self.flops += (int(mask[0]) + int(mask[1])) * _conv_flops(grad_out.shape, w.shape)
        return out


def count_fixture_step():
    """Forward (+ loss) and backward FLOPs of the parity fixture's stage-1 and stage-2 steps."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import torch.nn.functional as F
    import make_dod_fixture as dod

    torch.manual_seed(0)
    model = dod.DodTorch()
    n, h, w = dod.N, dod.H, dod.W
    hq = torch.rand(n, 3, h, w, dtype=dod.DT) * 2 - 1
    lq = (hq + 0.15 * torch.randn(n, 3, h, w, dtype=dod.DT)).clamp(-1, 1)
    prompt = torch.randn(77, model.unet.config.cross_attention_dim, dtype=dod.DT)
    e = torch.randn(*model.latent_shape(n, h, w), dtype=dod.DT)
    result = {}
    for stage in (1, 2):
        if stage == 2:
            for p in model.s1.values():
                p.requires_grad_(False)
                p.grad = None
            model.stage = 2
        with FlopCounter() as fwd:
            out = model.forward(lq, e, prompt)
            if stage == 1:
                loss = 2 * F.mse_loss(out, hq)
            else:
                loss = F.mse_loss(out, hq) + 0.1 * (1 - dod.ssim(out, hq, 2.0))
        with FlopCounter() as bwd:
            loss.backward()
        result[f"s{stage}"] = {"forward": fwd.flops, "backward": bwd.flops}
        print(f"stage {stage}: forward {fwd.flops} FLOPs, backward {bwd.flops}")
    # PyTorch's fuse-MLP products: 10 forward; dX and dW for each block whose modulation is used.
    one = 2 * n * (dod.DE + dod.BLK) * 2 * dod.R
    used = {m.block for m in model.unet.modules() if isinstance(m, dod.LoraWrap) and m.conditional}
    result["modulation_fuse"] = {"forward": 10 * one, "backward_s1": 2 * len(used) * one}
    return result


def main():
    result = count_fixture_step()
    result["generator"] = "scripts/count_flops_torch.py (torch " + torch.__version__ + ")"
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "dod", "flops.json")
    with open(path + ".tmp", "w") as f:
        json.dump(result, f, indent=1)
        f.write("\n")
    os.replace(path + ".tmp", path)
    print(f"wrote {os.path.normpath(path)}")


if __name__ == "__main__":
    main()
