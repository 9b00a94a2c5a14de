#!/usr/bin/env python3
"""Small real-photo crops for the data tests (tests/fixtures/data/) and the demo's extra training
photos (tests/fixtures/demo/).

Run:   ${PYTHON:-python3} scripts/make_data_fixtures.py
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


# The demo's training photos beside the three above (scripts/demo.sh): native-resolution 192 x 144
# crops of other parts of the training photos, JPEG quality 95. Chelsea and coffee stay held out.
DEMO_OUT = os.path.join(os.path.dirname(OUT), "demo")
DEMO_CROPS = [
    ("astronaut.png", 40, 300, 232, 444, "astronaut_suit.jpg", "JPEG"),
    ("astronaut.png", 300, 20, 492, 164, "astronaut_flag.jpg", "JPEG"),
    ("motorcycle_left.png", 120, 150, 312, 294, "motorcycle_front.jpg", "JPEG"),
    ("motorcycle_left.png", 420, 250, 612, 394, "motorcycle_rear.jpg", "JPEG"),
    ("rocket.jpg", 60, 260, 252, 404, "rocket_ground.jpg", "JPEG"),
    ("ihc.png", 100, 100, 292, 244, "ihc.jpg", "JPEG"),
    ("hubble_deep_field.jpg", 500, 400, 692, 544, "hubble_field.jpg", "JPEG"),
]


def main():
    for out, crops in ((OUT, CROPS), (DEMO_OUT, DEMO_CROPS)):
        save_crops(out, crops)


def save_crops(out, crops):
    os.makedirs(out, exist_ok=True)
    for src, l, t, r, b, name, fmt in crops:
        img = Image.open(os.path.join(SRC, src)).convert("RGB").crop((l, t, r, b))
        path = os.path.join(out, name)
        if fmt == "JPEG":
            img.save(path, fmt, quality=90 if out == OUT else 95)
        else:
            img.save(path, fmt)
        print(f"{path}: {img.size[0]}x{img.size[1]} {fmt}")


if __name__ == "__main__":
    main()
