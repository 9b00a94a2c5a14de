#!/usr/bin/env python3
"""Reference numbers for eval/metrics.c (tests/test_metrics.c, tests/cli_eval_metrics.sh).

Run:   ${PYTHON:-python3} scripts/make_metric_fixtures.py [--src DIR] [--out DIR]
Needs: numpy, scikit-image 0.19.3 (the version PromptIR/AirNet/AdaIR pin), Pillow (PNG + JPEG).
       Reads real photos from scikit-image's data folder (astronaut, coffee, chelsea, rocket: public
       domain / CC0 per skimage.data's docstrings); small crops of them are committed as fixtures.
Writes tests/fixtures/metrics/:
  gt/<name>.png                 clean crops whose sizes are NOT multiples of 16
  pred_noise/<name>.png         Gaussian noise sigma 15, PromptIR-style (clip, then truncating cast)
  pred_blur/<name>.png          Gaussian blur (Pillow, radius 1.2)
  pred_jpeg/<name>.png          JPEG quality 25 round trip (stored losslessly as PNG)
  pred_cropped/chelsea.png      the noisy chelsea already centre-cropped to 96x80 (a network output
                                at its working size; pairs with gt/chelsea.png only via crop-multiple)
  expected.json                 every (pred, gt, profile, y_channel, crop_border, crop_multiple) case
                                with its PSNR, SSIM and colour shift (numpy, docs/metrics.md)
  cli_noise_promptir.txt        the rows `dod-eval metrics` must print for pred_noise vs gt (full
                                precision; the CLI test allows for the printed rounding)
  cli_noise_basicsr_y4.txt      the same for --profile basicsr --y-channel --crop-border 4

The promptir profile calls exactly what PromptIR's utils/val_utils.py compute_psnr_ssim calls:
peak_signal_noise_ratio(clean, restored, data_range=1) and
structural_similarity(clean, restored, data_range=1, multichannel=True) on float32 HWC arrays
clipped to [0, 1]. Here "restored" is a PNG, so its floats are uint8 / 255 in float32 -- exactly the
arrays the C code builds from the same files.

The basicsr profile is a PORT of BasicSR's basicsr/metrics/psnr_ssim.py (calculate_psnr,
calculate_ssim, _ssim), basicsr/metrics/metric_util.py (to_y_channel) and
basicsr/utils/color_util.py (bgr2ycbcr, _convert_input_type_range, _convert_output_type_range),
as of XPixelGroup/BasicSR commit 8d56e3a, kept line for line except that cv2 is not available here: cv2.imread's BGR order is reproduced by
flipping Pillow's RGB, cv2.getGaussianKernel(11, 1.5) and cv2.filter2D (correlation, default
BORDER_REFLECT_101, full size, then BasicSR's [5:-5, 5:-5]) are re-implemented in numpy below.
OpenCV runs an 11x11 float64 filter2D through its DFT path and builds the kernel bit-exactly with
softfloat, so its results differ from this port by round-off (~1e-13), far below the 1e-6 the tests
check.
"""
import argparse
import json
import os
import sys
import warnings

import numpy as np
from PIL import Image, ImageFilter

import skimage
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

# (file in skimage's data folder, crop width, crop height, crop x0, crop y0): none a multiple of 16,
# and the remainders differ so the centre-crop offset (rem // 2) takes several values.
SOURCES = [
    ("astronaut.png", 99, 83, 200, 60),    # face and hair: smooth skin, fine texture
    ("coffee.png", 101, 86, 250, 120),     # cup rim, saucer, wood grain
    ("chelsea.png", 97, 81, 150, 60),      # cat fur and whiskers
    ("rocket.jpg", 105, 90, 300, 150),     # rocket body and smoke
]
DEGRADATIONS = ["noise", "blur", "jpeg"]


def degrade(kind, gt, seed):
    """uint8 HWC RGB in, uint8 HWC RGB out."""
    if kind == "noise":
        # PromptIR/AirNet test noise: clip(x + randn * sigma, 0, 255).astype(uint8) (truncating cast)
        rng = np.random.RandomState(seed)
        noise = rng.randn(*gt.shape)
        return np.clip(gt + noise * 15, 0, 255).astype(np.uint8)
    if kind == "blur":
        return np.array(Image.fromarray(gt).filter(ImageFilter.GaussianBlur(1.2)))
    if kind == "jpeg":
        import io
        buf = io.BytesIO()
        Image.fromarray(gt).save(buf, format="JPEG", quality=25)
        buf.seek(0)
        return np.array(Image.open(buf).convert("RGB"))
    raise ValueError(kind)


def crop_img(image, base=16):
    """PromptIR utils/image_utils.py crop_img: centre crop to a multiple of base (floor offset)."""
    h = image.shape[0]
    w = image.shape[1]
    crop_h = h % base
    crop_w = w % base
    return image[crop_h // 2:h - crop_h + crop_h // 2, crop_w // 2:w - crop_w + crop_w // 2, :]


def crop_border_hwc(img, crop_border):
    if crop_border != 0:
        return img[crop_border:-crop_border, crop_border:-crop_border, ...]
    return img


# ---- promptir profile: scikit-image, as PromptIR's compute_psnr_ssim calls it -------------------
def promptir_psnr_ssim(pred_u8, gt_u8):
    # torchvision ToTensor: uint8 -> float32 / 255; then np.clip(..., 0, 1) as compute_psnr_ssim does
    restored = np.clip(pred_u8.astype(np.float32) / np.float32(255), 0, 1)
    clean = np.clip(gt_u8.astype(np.float32) / np.float32(255), 0, 1)
    assert restored.dtype == np.float32 and clean.dtype == np.float32
    with warnings.catch_warnings():
        # multichannel= is deprecated in 0.19 (same as channel_axis=-1); identical images divide by 0
        warnings.simplefilter("ignore")
        with np.errstate(divide="ignore"):
            psnr = peak_signal_noise_ratio(clean, restored, data_range=1)
        ssim = structural_similarity(clean, restored, data_range=1, multichannel=True)
    return float(psnr), float(ssim)


# ---- basicsr profile: port of BasicSR (see the module docstring) ----------------------------------
def _convert_input_type_range(img):
    img_type = img.dtype
    img = img.astype(np.float32)
    if img_type == np.float32:
        pass
    elif img_type == np.uint8:
        img /= 255.
    else:
        raise TypeError(f'The img type should be np.float32 or np.uint8, but got {img_type}')
    return img


def _convert_output_type_range(img, dst_type):
    if dst_type not in (np.uint8, np.float32):
        raise TypeError(f'The dst_type should be np.float32 or np.uint8, but got {dst_type}')
    if dst_type == np.uint8:
        img = img.round()
    else:
        img /= 255.
    return img.astype(dst_type)


def bgr2ycbcr(img, y_only=False):
    img_type = img.dtype
    img = _convert_input_type_range(img)
    if y_only:
        out_img = np.dot(img, [24.966, 128.553, 65.481]) + 16.0
    else:
        out_img = np.matmul(
            img, [[24.966, 112.0, -18.214], [128.553, -74.203, -93.786], [65.481, -37.797, 112.0]]) + [16, 128, 128]
    out_img = _convert_output_type_range(out_img, img_type)
    return out_img


def to_y_channel(img):
    img = img.astype(np.float32) / 255.
    if img.ndim == 3 and img.shape[2] == 3:
        img = bgr2ycbcr(img, y_only=True)
        img = img[..., None]
    return img * 255.


def get_gaussian_kernel(ksize, sigma):
    """cv2.getGaussianKernel(ksize, sigma) for sigma > 0, CV_64F: exp(-x^2 / (2 sigma^2)), x centred,
    scaled by 1 / (sequential sum). Returns a (ksize, 1) column like OpenCV."""
    scale2x = -0.5 / (sigma * sigma)
    k = np.empty(ksize, dtype=np.float64)
    total = 0.0
    for i in range(ksize):
        x = i - (ksize - 1) * 0.5
        k[i] = np.exp(scale2x * x * x)
        total += k[i]
    k *= 1.0 / total
    return k.reshape(ksize, 1)


def filter2d(img, window):
    """cv2.filter2D(img, -1, window) for a float64 2-D image: correlation with the anchor at the
    kernel centre, borders BORDER_REFLECT_101 (numpy's 'reflect'), output the size of the input."""
    kh, kw = window.shape
    ph, pw = kh // 2, kw // 2
    padded = np.pad(img, ((ph, ph), (pw, pw)), mode="reflect")
    h, w = img.shape
    out = np.zeros((h, w), dtype=np.float64)
    for dy in range(kh):
        for dx in range(kw):
            out += window[dy, dx] * padded[dy:dy + h, dx:dx + w]
    return out


def calculate_psnr(img, img2, crop_border, input_order='HWC', test_y_channel=False, **kwargs):
    assert img.shape == img2.shape, (f'Image shapes are different: {img.shape}, {img2.shape}.')
    assert input_order == 'HWC'
    if crop_border != 0:
        img = img[crop_border:-crop_border, crop_border:-crop_border, ...]
        img2 = img2[crop_border:-crop_border, crop_border:-crop_border, ...]

    if test_y_channel:
        img = to_y_channel(img)
        img2 = to_y_channel(img2)

    img = img.astype(np.float64)
    img2 = img2.astype(np.float64)

    mse = np.mean((img - img2)**2)
    if mse == 0:
        return float('inf')
    return 10. * np.log10(255. * 255. / mse)


def _ssim(img, img2):
    c1 = (0.01 * 255)**2
    c2 = (0.03 * 255)**2
    kernel = get_gaussian_kernel(11, 1.5)
    window = np.outer(kernel, kernel.transpose())

    mu1 = filter2d(img, window)[5:-5, 5:-5]  # valid mode for window size 11
    mu2 = filter2d(img2, window)[5:-5, 5:-5]
    mu1_sq = mu1**2
    mu2_sq = mu2**2
    mu1_mu2 = mu1 * mu2
    sigma1_sq = filter2d(img**2, window)[5:-5, 5:-5] - mu1_sq
    sigma2_sq = filter2d(img2**2, window)[5:-5, 5:-5] - mu2_sq
    sigma12 = filter2d(img * img2, window)[5:-5, 5:-5] - mu1_mu2

    ssim_map = ((2 * mu1_mu2 + c1) * (2 * sigma12 + c2)) / ((mu1_sq + mu2_sq + c1) * (sigma1_sq + sigma2_sq + c2))
    return ssim_map.mean()


def calculate_ssim(img, img2, crop_border, input_order='HWC', test_y_channel=False, **kwargs):
    assert img.shape == img2.shape, (f'Image shapes are different: {img.shape}, {img2.shape}.')
    assert input_order == 'HWC'
    if crop_border != 0:
        img = img[crop_border:-crop_border, crop_border:-crop_border, ...]
        img2 = img2[crop_border:-crop_border, crop_border:-crop_border, ...]

    if test_y_channel:
        img = to_y_channel(img)
        img2 = to_y_channel(img2)

    img = img.astype(np.float64)
    img2 = img2.astype(np.float64)

    ssims = []
    for i in range(img.shape[2]):
        ssims.append(_ssim(img[..., i], img2[..., i]))
    return np.array(ssims).mean()


def basicsr_psnr_ssim(pred_u8, gt_u8, crop_border, y_channel):
    # cv2.imread gives BGR; BasicSR's calculate_* are called as (output, gt)
    pred_bgr = np.ascontiguousarray(pred_u8[..., ::-1])
    gt_bgr = np.ascontiguousarray(gt_u8[..., ::-1])
    psnr = calculate_psnr(pred_bgr, gt_bgr, crop_border, test_y_channel=y_channel)
    ssim = calculate_ssim(pred_bgr, gt_bgr, crop_border, test_y_channel=y_channel)
    return float(psnr), float(ssim)


# ---- driver ----------------------------------------------------------------------------------------
def load_rgb(path):
    return np.array(Image.open(path).convert("RGB"))


def save_png(path, arr):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp.png"
    Image.fromarray(arr).save(tmp, format="PNG", optimize=True)
    os.replace(tmp, path)


def colour_shift(pred_u8, gt_u8, profile, crop_border, crop_multiple):
    """docs/metrics.md "Colour shift": mean over channels of |mean(pred_c) - mean(gt_c)| on the 0-255
    scale, over the window the profile scores, with the values it scores (promptir: the float32
    uint8 / 255 clipped, times 255; basicsr: the bytes; the Y option does not apply)."""
    if crop_multiple:
        pred_u8 = crop_img(pred_u8, crop_multiple)
        gt_u8 = crop_img(gt_u8, crop_multiple)
    pred_u8, gt_u8 = crop_border_hwc(pred_u8, crop_border), crop_border_hwc(gt_u8, crop_border)
    if profile == "promptir":
        def vals(u8):
            return np.clip(u8.astype(np.float32) / np.float32(255), 0, 1).astype(np.float64) * 255
    else:
        def vals(u8):
            return u8.astype(np.float64)
    return float(np.mean(np.abs(vals(pred_u8).mean(axis=(0, 1)) - vals(gt_u8).mean(axis=(0, 1)))))


def score(pred_u8, gt_u8, profile, y_channel, crop_border, crop_multiple):
    """Same order as eval/metrics.c: crop-multiple (each image), size check, crop-border, metric."""
    if crop_multiple:
        pred_u8 = crop_img(pred_u8, crop_multiple)
        gt_u8 = crop_img(gt_u8, crop_multiple)
    assert pred_u8.shape == gt_u8.shape
    if profile == "promptir":
        assert not y_channel
        return promptir_psnr_ssim(crop_border_hwc(pred_u8, crop_border), crop_border_hwc(gt_u8, crop_border))
    return basicsr_psnr_ssim(pred_u8, gt_u8, crop_border, y_channel)


CONFIGS = ([("promptir", False, cb, cm) for cb in (0, 4) for cm in (0, 16)] +
           [("basicsr", y, cb, cm) for y in (False, True) for cb in (0, 4) for cm in (0, 16)])


def cli_rows(out_dir, pred_dir, profile, y_channel, crop_border, crop_multiple):
    """Full-precision "name psnr ssim" rows; tests/cli_eval_metrics.sh checks that dod-eval's printed
    values (PSNR %.4f, SSIM %.6f) are these rounded, within half a unit in the last place."""
    lines = []
    for src, *_ in SOURCES:
        stem = os.path.splitext(src)[0]
        pred = load_rgb(os.path.join(out_dir, pred_dir, stem + ".png"))
        gt = load_rgb(os.path.join(out_dir, "gt", stem + ".png"))
        psnr, ssim = score(pred, gt, profile, y_channel, crop_border, crop_multiple)
        lines.append(f"{stem} {psnr:.10f} {ssim:.10f}")
    return "\n".join(sorted(lines)) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--src", default=os.path.join(os.path.dirname(skimage.__file__), "data"))
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                                                  "tests", "fixtures", "metrics"))
    args = ap.parse_args()
    if skimage.__version__ != "0.19.3":
        sys.exit(f"need scikit-image 0.19.3 (PromptIR's version), found {skimage.__version__}")
    out = os.path.normpath(args.out)

    for i, (src, w, h, x0, y0) in enumerate(SOURCES):
        stem = os.path.splitext(src)[0]
        photo = load_rgb(os.path.join(args.src, src))
        gt = np.ascontiguousarray(photo[y0:y0 + h, x0:x0 + w])
        assert gt.shape == (h, w, 3) and w % 16 and h % 16, (src, gt.shape)
        save_png(os.path.join(out, "gt", stem + ".png"), gt)
        for j, kind in enumerate(DEGRADATIONS):
            save_png(os.path.join(out, "pred_" + kind, stem + ".png"), degrade(kind, gt, 1000 + 10 * i + j))
    noisy_chelsea = load_rgb(os.path.join(out, "pred_noise", "chelsea.png"))
    save_png(os.path.join(out, "pred_cropped", "chelsea.png"), np.ascontiguousarray(crop_img(noisy_chelsea, 16)))

    # Score what was written (re-read from PNG, so the arrays are exactly what the C code loads).
    cases = []
    for src, *_ in SOURCES:
        stem = os.path.splitext(src)[0]
        gt_rel = f"gt/{stem}.png"
        gt = load_rgb(os.path.join(out, gt_rel))
        pairs = [(f"pred_{kind}/{stem}.png", CONFIGS) for kind in DEGRADATIONS]
        pairs.append((gt_rel, [c for c in CONFIGS if c[3] == 0]))  # identical: PSNR inf, SSIM 1
        if stem == "chelsea":
            pairs.append(("pred_cropped/chelsea.png", [c for c in CONFIGS if c[3] == 16]))
        for pred_rel, configs in pairs:
            pred = load_rgb(os.path.join(out, pred_rel))
            for profile, y, cb, cm in configs:
                psnr, ssim = score(pred, gt, profile, y, cb, cm)
                cases.append({"pred": pred_rel, "gt": gt_rel, "profile": profile, "y_channel": y,
                              "crop_border": cb, "crop_multiple": cm,
                              "psnr": psnr if np.isfinite(psnr) else "inf", "ssim": ssim,
                              "colour_shift": colour_shift(pred, gt, profile, cb, cm)})
    doc = {"generator": "scripts/make_metric_fixtures.py",
           "versions": {"scikit-image": skimage.__version__, "numpy": np.__version__},
           "cases": cases}
    tmp = os.path.join(out, "expected.json.tmp")
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    os.replace(tmp, os.path.join(out, "expected.json"))

    for name, args_ in (("cli_noise_promptir.txt", ("pred_noise", "promptir", False, 0, 0)),
                        ("cli_noise_basicsr_y4.txt", ("pred_noise", "basicsr", True, 4, 0))):
        text = cli_rows(out, *args_)
        with open(os.path.join(out, name) + ".tmp", "w") as f:
            f.write(text)
        os.replace(os.path.join(out, name) + ".tmp", os.path.join(out, name))
    print(f"wrote {len(cases)} cases and {4 * (1 + len(DEGRADATIONS)) + 1} images to {out}")


if __name__ == "__main__":
    main()
