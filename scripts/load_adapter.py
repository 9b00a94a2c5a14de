#!/usr/bin/env python3
"""Load a DOD adapter (dod-export) into diffusers + PyTorch, and restore images with it.

The adapter's format: docs/restore.md. Here:
  - the base's UNet2DConditionModel and AutoencoderKL come from diffusers (from_pretrained);
  - the LoRA goes in with PEFT (LoraConfig + inject_adapter_in_model + set_peft_model_state_dict: the
    adapter's names are PEFT's, after the "unet." / "vae." prefix); conv LoRA is PEFT's too (A a conv
    with the base kernel, B 1x1);
  - the degradation modulation is a few lines of torch: the extractor (cnn, or the frozen VAE encoder's
    pooled features), the MLPs and block embeddings give gamma_k, beta_k per image, and a forward hook on
    every UNet lora_A turns A x into (1 + gamma_k) A x + beta_k;
  - the stage-2 detail module (when present) runs before every VAE decoder up block from the encoder's
    skip features, through forward pre-hooks (scripts/make_dod_fixture.py's detail_apply);
  - restoration follows dod-restore: clamp, reflect-pad to the adapter's pad_multiple, posterior mean,
    the UNet at t = 999 on the whole latent or in the public code's latent tiles (Gaussian weights),
    x0 from the scheduler's alpha-bar, decode, clamp, crop; PNG out quantised as dod-restore does. The
    VAE always runs on the whole image here (dod-restore tiles it only beyond --max-memory).
  - adapters of models with the adm extractor (guided-diffusion's encoder) are not supported: loading one
    stops with a message saying so (dod-restore --adm-weights restores them).

As a library:  model = load_adapter(base_dir, adapter_path); out = model.restore(x)   (x [1,3,H,W] in [-1,1])
As a tool:     ${PYTHON:-python3} scripts/load_adapter.py --base SD_DIR --adapter A.safetensors --in IMG --out OUT.png
               [--tile 96 --overlap 32] [--device cpu|cuda] [--dtype float32|float64]
Needs: torch (1.13 works), diffusers 0.21.4, peft 0.6.2 (pip install --no-deps peft==0.6.2 accelerate==0.24.1
on Debian's torch 1.13), safetensors, numpy, Pillow.
"""
import argparse
import copy
import json
import math
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from peft import LoraConfig, inject_adapter_in_model, set_peft_model_state_dict
from safetensors import safe_open

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_dod_fixture import detail_apply  # noqa: E402  (the detail module's torch twin, written once)

TIMESTEP = 999


def _read(path):
    with safe_open(path, framework="pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k).float() for k in f.keys()}
    if not meta or meta.get("format") != "dod-adapter":
        raise ValueError(f"{path}: not a dod adapter (metadata format {meta and meta.get('format')})")
    if meta.get("format_version") != "1":
        raise ValueError(f"{path}: adapter format version {meta.get('format_version')}, this loader reads 1")
    return meta, tensors


def _inject(model, targets, rank, alpha, tensors, prefix):
    """PEFT LoRA on exactly the listed modules, its A/B loaded from tensors[prefix + name]."""
    config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=targets, init_lora_weights=False)
    inject_adapter_in_model(config, model)
    sd = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix) and ".lora_" in k}
    set_peft_model_state_dict(model, sd)
    loaded = {n for n, _ in model.named_parameters() if "lora_" in n}
    assert len(loaded) == len(sd), f"{prefix}: {len(sd)} adapter tensors, {len(loaded)} LoRA parameters in the model"


class DodAdapter:
    def __init__(self, base, adapter, device="cpu", dtype=torch.float32, random_weights=False):
        self.meta, t = _read(adapter)
        m = self.meta
        if m["extractor"] not in ("cnn", "vae"):   # adm: guided-diffusion's encoder is not ported here
            raise SystemExit(f"{adapter}: the adapter's degradation extractor is {m['extractor']!r}; this loader runs "
                             "only the cnn and vae extractors (restore it with dod-restore --adm-weights FILE)")
        self.device, self.dtype = device, dtype
        self.rank, self.alpha = int(m["lora_rank"]), float(m["lora_alpha"])
        self.stage, self.pad_multiple = int(m["stage"]), int(m["pad_multiple"])
        if random_weights:   # benchmarks: the base's shapes from its configs, weights left at their init
            self.unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(os.path.join(base, "unet")))
            self.vae = AutoencoderKL.from_config(AutoencoderKL.load_config(os.path.join(base, "vae")))
        else:
            self.unet = UNet2DConditionModel.from_pretrained(os.path.join(base, "unet"))
            self.vae = AutoencoderKL.from_pretrained(os.path.join(base, "vae"))
        sched = DDPMScheduler.from_pretrained(os.path.join(base, "scheduler"))
        abar = float(sched.alphas_cumprod[TIMESTEP].double())
        if sched.config.prediction_type == "v_prediction":
            self.cz, self.cp = math.sqrt(abar), math.sqrt(1 - abar)
        else:
            self.cz, self.cp = 1 / math.sqrt(abar), math.sqrt(1 - abar) / math.sqrt(abar)
        assert sched.config.prediction_type == m["prediction_type"], "the base's scheduler is not the adapter's"
        self.extractor = m["extractor"]
        if self.extractor == "vae":   # the frozen encoder without its LoRA: a copy made before injection
            self.vae_frozen = copy.deepcopy(self.vae)
        # conv_in (trained in full), then the LoRA
        self.unet.conv_in.weight.data.copy_(t["unet.conv_in.weight"])
        self.unet.conv_in.bias.data.copy_(t["unet.conv_in.bias"])
        self.unet_targets = json.loads(m["lora_unet_targets"])
        _inject(self.unet, self.unet_targets, self.rank, self.alpha, t, "unet.")
        _inject(self.vae, json.loads(m["lora_vae_targets"]), self.rank, self.alpha, t, "vae.")
        self.mod = {k[4:]: v for k, v in t.items() if k.startswith("mod.")}
        self.detail = {k: v for k, v in t.items() if k.startswith("detail.")}
        self.prompt = t["prompt_embeds"]
        # modulation hooks: A x -> (1 + gamma_k) A x + beta_k on every UNet adapter of block k
        blocks = json.loads(m["lora_unet_blocks"])
        self.gamma = self.beta = None
        for name, module in self.unet.named_modules():
            if name.endswith(".lora_A.default"):
                module.register_forward_hook(self._modulate(blocks[name[: -len(".lora_A.default")]]))
        self.skips = []
        if self.stage == 2:
            for blk in self.vae.encoder.down_blocks:
                blk.register_forward_pre_hook(lambda mod, args: self.skips.append(args[0]))
            for i, blk in enumerate(self.vae.decoder.up_blocks):
                blk.register_forward_pre_hook(self._detail_hook(i))
        for net in [self.unet, self.vae] + ([self.vae_frozen] if self.extractor == "vae" else []):
            net.to(device=device, dtype=dtype).eval().requires_grad_(False)
        self.mod = {k: v.to(device, dtype) for k, v in self.mod.items()}
        self.detail = {k: v.to(device, dtype) for k, v in self.detail.items()}
        self.prompt = self.prompt.to(device, dtype)

    def _modulate(self, k):
        def hook(module, args, out):
            g, b = self.gamma[k], self.beta[k]
            shape = [g.shape[0]] + [1] * (out.dim() - 1)
            shape[1 if out.dim() == 4 else -1] = g.shape[1]
            return (1 + g.reshape(shape)) * out + b.reshape(shape)
        return hook

    def modulation(self, y):
        """gamma_k, beta_k [N, r] for the 10 blocks from the degraded image y [N, 3, H, W] in [-1, 1]."""
        P = self.mod
        if self.extractor == "cnn":
            h = y
            for i in range(4):
                h = F.silu(F.conv2d(h, P[f"cnn.{i}.weight"], P[f"cnn.{i}.bias"], stride=2, padding=1))
            d = h.mean(dim=(2, 3))
        else:   # pooled input of the frozen encoder's conv_out
            cap = []
            hk = self.vae_frozen.encoder.conv_out.register_forward_pre_hook(lambda mod, args: cap.append(args[0]))
            self.vae_frozen.encoder(y)
            hk.remove()
            d = cap[0].mean(dim=(2, 3))
        e = F.relu(F.linear(d, P["de_mlp.weight"], P["de_mlp.bias"]))
        bk = F.relu(F.linear(P["block_embeddings.weight"], P["block_mlp.weight"], P["block_mlp.bias"]))
        gam, bet = [], []
        for k in range(bk.shape[0]):
            gb = F.linear(torch.cat([e, bk[k].expand(e.shape[0], -1)], 1), P["fuse_mlp.weight"], P["fuse_mlp.bias"])
            gam.append(gb[:, : self.rank])
            bet.append(gb[:, self.rank:])
        return gam, bet

    def _detail_hook(self, i):
        def hook(module, args):
            L = len(self.vae.decoder.up_blocks)
            groups = self.vae.config.norm_num_groups
            return (detail_apply(self.detail, groups, i, self.skips[L - 1 - i], args[0]),) + tuple(args[1:])
        return hook

    def _unet(self, z):
        t = torch.full((z.shape[0],), TIMESTEP, dtype=torch.long, device=z.device)
        return self.unet(z, t, encoder_hidden_states=self.prompt.expand(z.shape[0], -1, -1)).sample

    def _predict(self, z, tile, overlap):
        """The public OSEDiff/DOD code's latent tiling: whole when h * w <= tile^2, else square tiles of
        min(tile, h, w), the last flush with the edge, Gaussian-weighted (var 0.01; centre (T-1)/2 across,
        T/2 down), normalised by the summed weights."""
        _, _, h, w = z.shape
        if tile <= 0 or h * w <= tile * tile:
            return self._unet(z)
        T = min(tile, h, w)
        ov = overlap if overlap < T else T // 2
        starts = lambda n: [0] if n <= T else [min(k * (T - ov), n - T) for k in range(1 + -(-(n - T) // (T - ov)))]
        var = 0.01
        gx = np.array([math.exp(-(x - (T - 1) / 2) ** 2 / (T * T) / (2 * var)) / math.sqrt(2 * math.pi * var) for x in range(T)])
        gy = np.array([math.exp(-(y - T / 2) ** 2 / (T * T) / (2 * var)) / math.sqrt(2 * math.pi * var) for y in range(T)])
        wt = torch.tensor(np.outer(gy, gx), device=z.device)   # float64, as the public code's
        pred = torch.zeros_like(z)
        wsum = torch.zeros_like(z)
        for y0 in starts(h):
            for x0 in starts(w):
                pred[:, :, y0:y0 + T, x0:x0 + T] += self._unet(z[:, :, y0:y0 + T, x0:x0 + T]) * wt
                wsum[:, :, y0:y0 + T, x0:x0 + T] += wt
        return pred / wsum

    @torch.no_grad()
    def restore(self, x, tile=96, overlap=32, vae_tile=0):
        """x [1, 3, H, W] in [-1, 1] -> the restored image, same shape, clamped to [-1, 1]. vae_tile > 0:
        diffusers' own tiled VAE (enable_tiling, tiles of vae_tile pixels, each with its own GroupNorm
        statistics: not dod-restore's VAE tiles; benchmarks only, stage 1)."""
        x = x.to(self.device, self.dtype).clamp(-1, 1)
        H, W = x.shape[-2:]
        m = self.pad_multiple
        ph, pw = (m - H % m) % m, (m - W % m) % m
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="reflect")
        self.gamma, self.beta = self.modulation(x)
        self.skips.clear()
        sf = self.vae.config.scaling_factor
        if vae_tile > 0:
            assert self.stage == 1, "diffusers' tiled VAE has no detail module"
            f = 2 ** (len(self.vae.config.block_out_channels) - 1)
            self.vae.enable_tiling()
            self.vae.tile_sample_min_size, self.vae.tile_latent_min_size = vae_tile, vae_tile // f
            z = self.vae.encode(x).latent_dist.mean * sf
        else:
            self.vae.disable_tiling()
            z = self.vae.quant_conv(self.vae.encoder(x)).chunk(2, dim=1)[0] * sf
        pred = self._predict(z, tile, overlap)
        x0 = self.cz * z - self.cp * pred
        out = self.vae.decode(x0 / sf).sample.clamp(-1, 1)
        return out[:, :, :H, :W]


def load_adapter(base, adapter, device="cpu", dtype=torch.float32, random_weights=False):
    return DodAdapter(base, adapter, device, dtype, random_weights)


def read_image(path):
    """An 8-bit image as [1, 3, H, W] in [-1, 1] (v / 127.5 - 1, as dod-restore)."""
    from PIL import Image
    a = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)
    return torch.from_numpy(a / np.float32(127.5) - np.float32(1)).permute(2, 0, 1)[None]


def write_png(path, x):
    """[1, 3, H, W] in [-1, 1] -> 8-bit PNG: round half to even of ((x + 1) / 2) * 255 in float32."""
    from PIL import Image
    u = ((x[0].float().cpu().numpy() + np.float32(1)) * np.float32(0.5)).clip(0, 1)
    Image.fromarray(np.rint(u * np.float32(255)).astype(np.uint8).transpose(1, 2, 0)).save(path)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base", required=True)
    ap.add_argument("--adapter", required=True)
    ap.add_argument("--in", dest="inp", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--tile", type=int, default=96)
    ap.add_argument("--overlap", type=int, default=32)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    a = ap.parse_args()
    model = load_adapter(a.base, a.adapter, a.device, getattr(torch, a.dtype))
    write_png(a.out, model.restore(read_image(a.inp), a.tile, a.overlap))
    print(f"{a.out}: restored with {a.adapter} (stage {model.stage}, rank {model.rank}) on {a.base}")


if __name__ == "__main__":
    sys.exit(main())
