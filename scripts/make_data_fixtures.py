#!/usr/bin/env python3
"""Small real-photo crops for the data tests (tests/fixtures/data/).

Run:   /work/venv/bin/python scripts/make_data_fixtures.py
Needs: Debian python3-skimage (its skimage/data photos) and Pillow. No network.

The photos are public domain or CC0 according to scikit-image's own data notes
(skimage/data/_fetchers.py): astronaut (NASA, public domain), coffee (CC0, Rachel Michetti),
chelsea (CC0, Stefan van der Walt), rocket (SpaceX, public domain), hubble_deep_field (NASA,
public domain). Crops are small (<= 200 px) and cover the three formats the packer reads:
PNG, JPEG and BMP. Output is deterministic (fixed crop boxes, JPEG quality 90).
"""
import os

from PIL import Image
import skimage

SRC = os.path.join(os.path.dirname(skimage.__file__), "data")
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "data")

# (source file, crop box left, top, right, bottom, output name, format)
CROPS = [
    ("astronaut.png", 180, 40, 340, 168, "astronaut.png", "PNG"),      # 160 x 128
    ("coffee.png", 200, 120, 400, 270, "coffee.png", "PNG"),           # 200 x 150
    ("chelsea.png", 140, 60, 284, 172, "chelsea.png", "PNG"),          # 144 x 112
    ("rocket.jpg", 250, 160, 378, 256, "rocket.jpg", "JPEG"),          # 128 x 96
    ("hubble_deep_field.jpg", 300, 200, 396, 272, "hubble.bmp", "BMP"),  # 96 x 72
]


def main():
    os.makedirs(OUT, exist_ok=True)
    for src, l, t, r, b, name, fmt in CROPS:
        img = Image.open(os.path.join(SRC, src)).convert("RGB").crop((l, t, r, b))
        path = os.path.join(OUT, name)
        if fmt == "JPEG":
            img.save(path, fmt, quality=90)
        else:
            img.save(path, fmt)
        print(f"{path}: {img.size[0]}x{img.size[1]} {fmt}")


if __name__ == "__main__":
    main()
