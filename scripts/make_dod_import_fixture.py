#!/usr/bin/env python3
"""Writes tests/fixtures/dod_import/ (read by tests/test_dod_import.c and tests/cli_import_public.sh): the
files the public DOD code saves, made from OUR fixture model's weights renamed to its key layout, so
that importing them must give back exactly the model we started from.

The public code (its osediff.py) saves with torch.save:
  stage 1 (OSEDiff_gen.save_model): a dict of
    unet_lora_target_modules  the LoRA target list (strings)       vae_lora_target_modules  the VAE regex
    rank_unet, rank_vae       ints
    state_dict_unet           {k: v for k, v in unet.state_dict() if "lora" in k or "conv_in" in k}: PEFT names
                              <layer>.lora_A.default.weight / .lora_B.default.weight, conv_in.weight/.bias
    state_dict_vae            {k: v ... if "lora" in k or "skip_conv" in k}: <layer>.lora_A.vae_skip.weight, ...
    state_dict_unet_de_mlp    nn.Sequential(Linear(1024, 256), ReLU).state_dict(): 0.weight, 0.bias
    state_dict_unet_block_mlp nn.Sequential(Linear(64, 64), ReLU).state_dict(): 0.weight, 0.bias
    state_dict_unet_fuse_mlp  nn.Linear(256 + 64, 2 r).state_dict(): weight, bias
    state_dict_unet_block     nn.Embedding(10, 64).state_dict(): weight
  stage 2 (OSEDiff_stage2.save_model, full=False): a dict of
    rank_vae_decoder          int
    state_dict_vae            the decoder's skip convs and fusion blocks: decoder.skip_conv_<1..4>.weight,
                              decoder.sft_blocks_<1..4>.encode_enc_1.{norm1,conv1,norm2,conv2,conv_out}.*
                              (ResBlock 2C -> C; its 1x1 shortcut is named conv_out),
                              .encode_enc_2.0.rdb<1..3>.conv<1..5>.* (basicsr RRDB inside make_layer's
                              nn.Sequential), .encode_enc_3.{norm1,conv1,norm2,conv2}.*, .w (a 0-dim scalar)
  prompt_embeds.pt            torch.save of the [1, 77, D] prompt embedding tensor
The PEFT names come from peft itself: LoraConfig(r, init_lora_weights="gaussian", target_modules=...) with
the public code's target lists injected into the diffusers models of tests/fixtures/sd/sd2_tiny (adapter
names "default" and "vae_skip" as the public code's add_adapter calls give them). The stage-2 names are
the public code's module attributes (spelled out above; its NAFNett/basicsr copies are not needed).

Values: tests/fixtures/dod/step.safetensors (scripts/make_dod_fixture.py): s1.param.* for the LoRA
tensors and conv_in, s2.param.* for stage 2. The modulation MLPs and block embeddings get seeded random
values at DOD's sizes (de 256, block 64; that fixture's are 12 and 6, with the cnn extractor's 8 features),
de_mlp reading the ADM fixture's 32 features (tests/fixtures/adm): the sizes a configuration gives, so
dod-import-public can build the model (tests/cli_import_public.sh).

  stage1.pkl                  stage 1 as above (torch 1.13 zip format)
  stage2.pkl                  stage 2 as above
  prompt_embeds.pt            tests/fixtures/dod/prompt.safetensors' [77, 16] embedding as [1, 77, 16]
  expect_stage1.safetensors   the stage-1 tensors under OUR names (the LoRA and conv_in of tests/fixtures/dod,
                              the modulation above)

Run: ${PYTHON:-python3} scripts/make_dod_import_fixture.py   (needs torch, diffusers 0.21, peft >= 0.7,
     safetensors)
"""
import collections
import os
import re

import torch
import torch.nn as nn
from diffusers import AutoencoderKL, UNet2DConditionModel
from peft import LoraConfig, inject_adapter_in_model
from safetensors.torch import load_file, save_file

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
BASE = os.path.join(ROOT, "tests", "fixtures", "sd", "sd2_tiny", "model")
STEP = os.path.join(ROOT, "tests", "fixtures", "dod", "step.safetensors")
PROMPT = os.path.join(ROOT, "tests", "fixtures", "dod", "prompt.safetensors")
OUT = os.path.join(ROOT, "tests", "fixtures", "dod_import")
RANK, DE, BLK, ADM_DIM = 4, 256, 64, 32   # the modulation at DOD's sizes (dod-import-public builds those)
# The public code's target lists (osediff.py): PEFT's list matching for the UNet, a regex for the VAE encoder.
UNET_TARGETS = ["to_k", "to_q", "to_v", "to_out.0", "conv", "conv1", "conv2", "conv_shortcut", "conv_out",
                "proj_in", "proj_out", "ff.net.2", "ff.net.0.proj"]
VAE_TARGETS = r"^encoder\..*(conv1|conv2|conv_in|conv_shortcut|conv|conv_out|to_k|to_q|to_v|to_out\.0)$"


def ours_of_peft(prefix, key):
    """PEFT's '<layer>.lora_A.<adapter>.weight' -> our '<prefix><layer>.lora_A.weight'."""
    m = re.fullmatch(r"(.+)\.(lora_[AB])\.[^.]+\.weight", key)
    return f"{prefix}{m.group(1)}.{m.group(2)}.weight" if m else prefix + key


def main():
    step = load_file(STEP)
    s1 = {k[len("s1.param."):]: v for k, v in step.items() if k.startswith("s1.param.")}
    s2 = {k[len("s2.param."):]: v for k, v in step.items() if k.startswith("s2.param.")}
    g = torch.Generator().manual_seed(4242)
    mod = {"mod.de_mlp.weight": (DE, ADM_DIM), "mod.de_mlp.bias": (DE,), "mod.block_mlp.weight": (BLK, BLK),
           "mod.block_mlp.bias": (BLK,), "mod.fuse_mlp.weight": (2 * RANK, DE + BLK), "mod.fuse_mlp.bias": (2 * RANK,),
           "mod.block_embeddings.weight": (10, BLK)}
    for name, shape in mod.items():
        s1[name] = (torch.randn(*shape, generator=g) * (0.1 if len(shape) == 1 else shape[-1] ** -0.5)).float()

    unet = inject_adapter_in_model(LoraConfig(r=RANK, init_lora_weights="gaussian", target_modules=UNET_TARGETS),
                                   UNet2DConditionModel.from_pretrained(os.path.join(BASE, "unet")), "default")
    vae = inject_adapter_in_model(LoraConfig(r=RANK, init_lora_weights="gaussian", target_modules=VAE_TARGETS),
                                  AutoencoderKL.from_pretrained(os.path.join(BASE, "vae")), "vae_skip")
    used = set()

    def public_dict(state, keep, prefix):
        out = collections.OrderedDict()
        for k, v in state.items():
            if not keep(k):
                continue
            ours = ours_of_peft(prefix, k)
            assert ours in s1 and s1[ours].shape == v.shape, (k, ours)
            out[k] = s1[ours].clone()
            used.add(ours)
        return out

    def module_dict(module, ours):
        out = collections.OrderedDict()
        for k, v in module.state_dict().items():
            name = ours[k]
            assert s1[name].shape == v.shape, (k, name)
            out[k] = s1[name].clone()
            used.add(name)
        return out

    stage1 = {
        "unet_lora_target_modules": UNET_TARGETS,
        "vae_lora_target_modules": VAE_TARGETS,
        "rank_unet": RANK,
        "rank_vae": RANK,
        "state_dict_unet": public_dict(unet.state_dict(), lambda k: "lora" in k or "conv_in" in k, "unet."),
        "state_dict_vae": public_dict(vae.state_dict(), lambda k: "lora" in k or "skip_conv" in k, "vae."),
        "state_dict_unet_de_mlp": module_dict(nn.Sequential(nn.Linear(ADM_DIM, DE), nn.ReLU(True)),
                                              {"0.weight": "mod.de_mlp.weight", "0.bias": "mod.de_mlp.bias"}),
        "state_dict_unet_block_mlp": module_dict(nn.Sequential(nn.Linear(BLK, BLK), nn.ReLU(True)),
                                                 {"0.weight": "mod.block_mlp.weight", "0.bias": "mod.block_mlp.bias"}),
        "state_dict_unet_fuse_mlp": module_dict(nn.Linear(DE + BLK, 2 * RANK),
                                                {"weight": "mod.fuse_mlp.weight", "bias": "mod.fuse_mlp.bias"}),
        "state_dict_unet_block": module_dict(nn.Embedding(10, BLK), {"weight": "mod.block_embeddings.weight"}),
    }
    # Every stage-1 tensor of ours has its public key, except the cnn extractor's (the public code has none).
    left = sorted(k for k in s1 if k not in used and not k.startswith("mod.cnn."))
    assert not left, left
    ours_s1 = {k: v for k, v in s1.items() if not k.startswith("mod.cnn.")}

    vae_dec = collections.OrderedDict()
    levels = sum(1 for k in s2 if k.startswith("detail.skip_convs."))   # the VAE's up blocks: 4 for SD, 3 here
    for i in range(levels):
        n = i + 1
        vae_dec[f"decoder.skip_conv_{n}.weight"] = s2[f"detail.skip_convs.{i}.weight"]
        for pub, ours in (("encode_enc_1", "res_in"), ("encode_enc_3", "res_out")):
            for part in ("norm1", "conv1", "norm2", "conv2", "conv_shortcut"):
                for wb in ("weight", "bias"):
                    name = f"detail.fuse.{i}.{ours}.{part}.{wb}"
                    if name in s2:
                        p = "conv_out" if part == "conv_shortcut" else part
                        vae_dec[f"decoder.sft_blocks_{n}.{pub}.{p}.{wb}"] = s2[name]
        for r in range(1, 4):
            for j in range(1, 6):
                for wb in ("weight", "bias"):
                    vae_dec[f"decoder.sft_blocks_{n}.encode_enc_2.0.rdb{r}.conv{j}.{wb}"] = \
                        s2[f"detail.fuse.{i}.rrdb.rdb{r}.conv{j}.{wb}"]
        vae_dec[f"decoder.sft_blocks_{n}.w"] = s2[f"detail.fuse_weights.{i}"].reshape(())
    assert len(vae_dec) == len(s2), (len(vae_dec), len(s2))
    stage2 = {"rank_vae_decoder": RANK, "state_dict_vae": vae_dec}

    os.makedirs(OUT, exist_ok=True)
    torch.save(stage1, os.path.join(OUT, "stage1.pkl"))
    torch.save(stage2, os.path.join(OUT, "stage2.pkl"))
    torch.save(load_file(PROMPT)["prompt_embeds"].unsqueeze(0).contiguous(), os.path.join(OUT, "prompt_embeds.pt"))
    save_file({k: v.contiguous() for k, v in ours_s1.items()}, os.path.join(OUT, "expect_stage1.safetensors"))
    os.chmod(os.path.join(OUT, "expect_stage1.safetensors"), 0o644)
    print(f"stage 1: {len(stage1['state_dict_unet'])} UNet, {len(stage1['state_dict_vae'])} VAE tensors, "
          f"{len(ours_s1)} of ours; stage 2: {len(vae_dec)} tensors; to {OUT}")


if __name__ == "__main__":
    main()
