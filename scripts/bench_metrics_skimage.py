#!/usr/bin/env python3
"""Reference timings for `dod-bench metrics` (tests/bench/bench_metrics.c runs this; not a test).

Run:   python3 scripts/bench_metrics_skimage.py --data-dir
           prints scikit-image's data folder (exit 1 when scikit-image is not importable)
       python3 scripts/bench_metrics_skimage.py [--repeat N] PRED.png:GT.png ...
           prints one JSON object: per pair, the best-of-N seconds and the values of
             promptir: PromptIR's compute_psnr_ssim calls -- peak_signal_noise_ratio and
                       structural_similarity(multichannel=True), data_range=1, on uint8 / 255 float32
             basicsr:  the scikit-image equivalent of BasicSR's SSIM (gaussian_weights=True,
                       sigma=1.5, use_sample_covariance=False, data_range=255, float64) plus PSNR
                       with data_range=255 (BasicSR itself needs cv2, which is not installed here)
Needs: numpy, scikit-image, Pillow. Conversions from uint8 are inside the timed region, as they are
in the C timings.
"""
import json
import os
import sys
import time
import warnings


def main(argv):
    if argv[:1] == ["--data-dir"]:
        try:
            import skimage
        except ImportError:
            sys.exit(1)
        print(os.path.join(os.path.dirname(skimage.__file__), "data"))
        return
    repeat = 5
    if argv[:1] == ["--repeat"]:
        repeat = int(argv[1])
        argv = argv[2:]
    import numpy as np
    import skimage
    from PIL import Image
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity
    warnings.simplefilter("ignore")

    def promptir(pred, gt):
        restored = np.clip(pred.astype(np.float32) / np.float32(255), 0, 1)
        clean = np.clip(gt.astype(np.float32) / np.float32(255), 0, 1)
        psnr = peak_signal_noise_ratio(clean, restored, data_range=1)
        ssim = structural_similarity(clean, restored, data_range=1, multichannel=True)
        return psnr, ssim

    def basicsr(pred, gt):
        p = pred.astype(np.float64)
        g = gt.astype(np.float64)
        psnr = peak_signal_noise_ratio(g, p, data_range=255)
        ssim = structural_similarity(g, p, channel_axis=-1, gaussian_weights=True, sigma=1.5,
                                     use_sample_covariance=False, data_range=255)
        return psnr, ssim

    out = {"skimage": skimage.__version__, "numpy": np.__version__, "repeat": repeat, "pairs": []}
    for spec in argv:
        pred_path, gt_path = spec.split(":", 1)
        pred = np.array(Image.open(pred_path).convert("RGB"))
        gt = np.array(Image.open(gt_path).convert("RGB"))
        entry = {"pred": pred_path, "gt": gt_path}
        for name, fn in (("promptir", promptir), ("basicsr", basicsr)):
            best = float("inf")
            for _ in range(repeat):
                t0 = time.perf_counter()
                psnr, ssim = fn(pred, gt)
                best = min(best, time.perf_counter() - t0)
            entry[name] = {"sec": best, "psnr": float(psnr), "ssim": float(ssim)}
        out["pairs"].append(entry)
    json.dump(out, sys.stdout)
    print()


if __name__ == "__main__":
    main(sys.argv[1:])
