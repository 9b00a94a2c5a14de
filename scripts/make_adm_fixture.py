#!/usr/bin/env python3
"""Writes tests/fixtures/adm/ (read by tests/test_adm_encoder.c): a SMALL random-weight model of the
guided-diffusion UNet behind DOD's degradation extractor, built by guided-diffusion's own module code,
and the pooled middle-block features that code computes.

The real extractor is OpenAI's 256x256 unconditional ImageNet model (256x256_diffusion_uncond.pt; its
flags: --attention_resolutions 32,16,8 --class_cond False --diffusion_steps 1000 --image_size 256
--learn_sigma True --noise_schedule linear --num_channels 256 --num_head_channels 64 --num_res_blocks 2
--resblock_updown True --use_fp16 True --use_scale_shift_norm True). The fixture keeps its block
structure: channel_mult of six levels, two ResBlocks a level, ResBlock downsampling (resblock_updown),
scale-shift norm, attention at the same relative levels (downsampling rates 8, 16, 32: levels 3, 4, 5
and the middle block) with legacy QKV order (use_new_attention_order False), learn_sigma (6 output
channels). Only the sizes shrink: num_channels 16, channel_mult (1, 1, 1, 1, 1, 2) (so the first ResBlock
of level 5 has a 1x1 skip connection), num_head_channels 8 (2 heads at 16 channels, 4 at 32), and
GroupNorm32 with 8 groups instead of 32 (guided_diffusion.nn.normalization patched: 32 groups need
>= 32 channels everywhere, which would make the file several MB); layers/adm_encoder.h takes the group
count as a parameter (32 for the real file).

  adm_tiny.pt            torch.save (zip) of the model's state dict in float32, like the released file,
                         without most of output_blocks (to stay under 1 MB): out.* and
                         output_blocks.0.0.in_layers.0.* stay, so the file still holds tensors the
                         extractor must not read
  adm_ref.safetensors    per case: x<k> (input in [-1, 1]) and feat<k> = the middle block's output
                         average-pooled over H, W ([N, 32]); mid0 = case 0's unpooled middle output
                           case 0: [2, 3, 64, 64], t = 0 (the DOD extractor)
                           case 1: [1, 3, 45, 37], t = 0 (odd sizes: the avg-pools floor)
                           case 2: case 0's input at t = 417 (the timestep embedding's frequencies;
                                   no x2 is stored)
  meta.json              the sizes and flags above, and per t = 0 case the FLOPs of PyTorch's forward up
                         to the middle block ("forward", counted by scripts/count_flops_torch.py's
                         FlopCounter: 2 per multiply-add of its products) and the share of the timestep
                         embedding's products in it ("time_embedding": time_embed and every ResBlock's
                         emb_layers, from the model's structure), which layers/adm_encoder.c folds into
                         the norms at load instead of running them per forward, and "einsum_multiply":
                         the products torch.einsum ran as an elementwise multiply, which the counter
                         cannot see (an attention over one token: its P V einsum has a contraction of
                         length 1; 2 * N * C FLOPs each, recorded by hooks on the AttentionBlocks)

The features come from UNetModel.forward itself: a forward hook on middle_block records its output and
stops the forward there (the output blocks cannot run on odd sizes anyway). Float32, CPU.

Run: ${PYTHON:-python3} scripts/make_adm_fixture.py GUIDED_DIFFUSION_DIR
  GUIDED_DIFFUSION_DIR: a checkout of github.com/openai/guided-diffusion (never copied into this
  repository); needs torch, numpy, safetensors.
"""
import json
import os
import sys

import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from count_flops_torch import FlopCounter  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "adm")
GROUPS = 8
FLAGS = dict(image_size=256, num_channels=16, num_res_blocks=2, channel_mult="1,1,1,1,1,2", learn_sigma=True,
             class_cond=False, use_checkpoint=False, attention_resolutions="32,16,8", num_heads=4,
             num_head_channels=8, num_heads_upsample=-1, use_scale_shift_norm=True, dropout=0.0,
             resblock_updown=True, use_fp16=False, use_new_attention_order=False)
CASES = [((2, 3, 64, 64), 0), ((1, 3, 45, 37), 0), ((2, 3, 64, 64), 417)]


class Stop(Exception):
    pass


def time_embedding_flops(model, n):
    """FLOPs of the timestep embedding's products for a batch of n: time_embed's linears and the
    emb_layers linear of every ResBlock the encoder runs (input_blocks, middle_block)."""
    flops = 0
    for name, m in model.named_modules():
        top = name.split(".")[0]
        if isinstance(m, torch.nn.Linear) and (top == "time_embed" or (
                top in ("input_blocks", "middle_block") and ".emb_layers." in name)):
            flops += 2 * n * m.in_features * m.out_features
    return flops


def main():
    if len(sys.argv) != 2 or not os.path.isdir(os.path.join(sys.argv[1], "guided_diffusion")):
        sys.exit("usage: make_adm_fixture.py GUIDED_DIFFUSION_DIR (a checkout of openai/guided-diffusion)")
    sys.path.insert(0, os.path.abspath(sys.argv[1]))
    import guided_diffusion.unet as gd_unet
    from guided_diffusion.nn import GroupNorm32
    from guided_diffusion.script_util import create_model

    gd_unet.normalization = lambda channels: GroupNorm32(GROUPS, channels)
    torch.manual_seed(20240819)
    model = create_model(**FLAGS).float().eval()
    # Random weights with non-degenerate scales: zero_module left the out_layers convs and proj_out at
    # 0, and the default inits would let the activations vanish or explode over 19 blocks.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.copy_(torch.randn_like(p) * 0.1)
            elif p.ndim == 1:   # norm weights
                p.copy_(1 + torch.randn_like(p) * 0.2)
            else:
                fan_in = p[0].numel()
                p.copy_(torch.randn_like(p) * (1.0 / fan_in) ** 0.5)

    mid = {}

    def hook(module, inputs, output):
        mid["out"] = output
        raise Stop()

    model.middle_block.register_forward_hook(hook)
    single_token = []   # per forward, the FLOPs of the one-token attentions' P V products

    def attention_hook(module, inputs, output):
        x = inputs[0]
        if x[0, 0].numel() == 1:
            single_token.append(2 * x.shape[0] * x.shape[1])

    for m in model.modules():
        if isinstance(m, gd_unet.AttentionBlock):
            m.register_forward_hook(attention_hook)
    ref = {}
    flops = []
    for k, (shape, t) in enumerate(CASES):
        g = torch.Generator().manual_seed(100 + k)
        x = ref["x0"] if k == 2 else (torch.rand(*shape, generator=g) * 2 - 1).float()
        counter = FlopCounter()
        single_token.clear()
        try:
            with torch.no_grad(), counter:
                model(x, torch.full((shape[0],), t, dtype=torch.long))
        except Stop:
            pass
        if t == 0:
            flops.append(dict(case=k, forward=counter.flops, time_embedding=time_embedding_flops(model, shape[0]),
                              einsum_multiply=sum(single_token)))
        h = mid.pop("out").float()
        if k != 2:
            ref[f"x{k}"] = x
        ref[f"feat{k}"] = h.mean(dim=(2, 3))
        if k == 0:
            ref["mid0"] = h
        print(f"case {k}: x {tuple(shape)} t {t} -> middle {tuple(h.shape)}, |feat| max {ref[f'feat{k}'].abs().max():.4f}")

    sd = model.state_dict()
    keep = {k: v.contiguous() for k, v in sd.items()
            if not k.startswith("output_blocks.") or k.startswith("output_blocks.0.0.in_layers.0.")}
    os.makedirs(OUT, exist_ok=True)
    torch.save(keep, os.path.join(OUT, "adm_tiny.pt"))
    save_file({k: v.contiguous() for k, v in ref.items()}, os.path.join(OUT, "adm_ref.safetensors"))
    os.chmod(os.path.join(OUT, "adm_ref.safetensors"), 0o644)
    enc = [k for k in keep if k.split(".")[0] in ("time_embed", "input_blocks", "middle_block")]
    meta = dict(FLAGS, groups=GROUPS, n_encoder_tensors=len(enc), n_file_tensors=len(keep),
                cases=[dict(shape=list(s), timestep=t) for s, t in CASES], flops=flops)
    with open(os.path.join(OUT, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
    print(f"{len(keep)} tensors saved ({len(enc)} of the encoder), to {OUT}")


if __name__ == "__main__":
    main()
