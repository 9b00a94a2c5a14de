# Where does the tiny demo lose PSNR? Diagnostics of a tiny base (configs/tiny_base) on held-out
# image pairs, with diffusers as an independent implementation (docs/tiny-base.md, "Diagnosis").
#
#   ${PYTHON:-python3} scripts/diag_tiny_base.py BASE_DIR PAIR_DIR [PAIR_DIR ...]
#
# Needs: torch, diffusers 0.21.4, safetensors, numpy, Pillow. A PAIR_DIR holds lq.png and hq.png
# (`dod-data export FILE.h5 --task T --index I --out-dir DIR`). Not used by tests or the demo.
# Per pair, PSNR (promptir protocol: float RGB in [0, 1], clipped, never rounded) against hq of:
#   input     lq itself (the bar DOD must beat)
#   vae(hq)   decode(mean(encode(hq))): the best any latent can do through this decoder, roughly
#   vae(lq)   decode(mean(encode(lq))): DOD with an identity UNet step
#   dod0      DOD at initialisation (LoRA B = 0): x0 = (z - sqrt(1-a) UNet(z, 999)) / sqrt(a), z = E(lq)
#             (v_prediction bases: x0 = sqrt(a) z - sqrt(1-a) UNet(z, 999))
#   lin       the same with the linear MMSE eps predictor in place of the UNet
# and the latent MSE of the step-0 x0 against the clean latent E(hq) (latent variance is ~1).
import sys

import numpy as np
import safetensors.torch  # noqa: F401  (import first, else diffusers 0.21 fails to load weights)
import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from PIL import Image


def load(path):
    return torch.from_numpy(np.asarray(Image.open(path).convert("RGB"), np.float32) / 127.5 - 1).permute(2, 0, 1)[None]


def psnr(a, b):
    a = ((a.clamp(-1, 1) + 1) / 2).double()
    b = ((b.clamp(-1, 1) + 1) / 2).double()
    return float(10 * torch.log10(1 / ((a - b) ** 2).mean()))


def pad8(x):
    h, w = x.shape[-2:]
    ph, pw = (-h) % 8, (-w) % 8
    return torch.nn.functional.pad(x, (0, pw, 0, ph), mode="reflect"), h, w


def main():
    base, pairs = sys.argv[1], sys.argv[2:]
    vae = AutoencoderKL.from_pretrained(base, subfolder="vae").eval()
    unet = UNet2DConditionModel.from_pretrained(base, subfolder="unet").eval()
    sched = DDPMScheduler.from_pretrained(base, subfolder="scheduler")
    a = float(sched.alphas_cumprod[999])
    sf = vae.config.scaling_factor
    ctx = torch.zeros(1, 1, unet.config.cross_attention_dim)
    rows = []
    with torch.no_grad():
        def enc(x):
            xp, h, w = pad8(x)
            return vae.encode(xp).latent_dist.mean * sf, h, w

        def dec(z, h, w):
            return vae.decode(z / sf).sample[..., :h, :w]

        for d in pairs:
            lq, hq = load(d + "/lq.png"), load(d + "/hq.png")
            zl, h, w = enc(lq)
            zh, _, _ = enc(hq)
            out = unet(zl, 999, encoder_hidden_states=ctx).sample
            if sched.config.prediction_type == "v_prediction":
                x0 = a ** 0.5 * zl - (1 - a) ** 0.5 * out
            else:
                x0 = (zl - (1 - a) ** 0.5 * out) / a ** 0.5
            var = float(zl.var())
            eps_lin = (1 - a) ** 0.5 * zl / (a * var + 1 - a)
            x0_lin = (zl - (1 - a) ** 0.5 * eps_lin) / a ** 0.5
            r = dict(name=d.rstrip("/").split("/")[-1], input=psnr(lq, hq), vae_hq=psnr(dec(zh, h, w), hq),
                     vae_lq=psnr(dec(zl, h, w), hq), dod0=psnr(dec(x0, h, w), hq), lin=psnr(dec(x0_lin, h, w), hq),
                     x0_mse=float(((x0 - zh) ** 2).mean()), x0lin_mse=float(((x0_lin - zh) ** 2).mean()),
                     zlq_mse=float(((zl - zh) ** 2).mean()), zvar=float(zh.var()))
            rows.append(r)
    keys = ["input", "vae_hq", "vae_lq", "dod0", "lin", "x0_mse", "x0lin_mse", "zlq_mse", "zvar"]
    print("%-10s" % "pair" + "".join("%10s" % k for k in keys))
    for r in rows:
        print("%-10s" % r["name"] + "".join("%10.3f" % r[k] for k in keys))
    print("%-10s" % "mean" + "".join("%10.3f" % np.mean([r[k] for r in rows]) for k in keys))


if __name__ == "__main__":
    main()
