#!/usr/bin/env python3
"""Varied real photos for the demo's training set (tests/fixtures/photos/, docs/tiny-base.md).

Run:   ${PYTHON:-python3} scripts/make_photo_fixtures.py [--mate DIR] [--sklearn DIR] [--out DIR]
Needs: Pillow, and the photos of two Debian packages (or their extracted .deb files):
       mate-backgrounds   /usr/share/backgrounds/mate/nature/*.jpg    GPL-2+ (debian/copyright)
       python3-sklearn    .../sklearn/datasets/images/{china,flower}.jpg   CC BY 2.0 (their README.txt)
       (`apt-get download mate-backgrounds python3-sklearn` and `dpkg-deb -x` them when not installed.)
Writes tests/fixtures/photos/<name>.jpg: each whole photo resized (Lanczos) so its longer side is
LONG_SIDE pixels, JPEG quality 90, no metadata. Deterministic. The README beside them lists each
photo's source, licence and authors.
"""
import argparse
import glob
import os

from PIL import Image

LONG_SIDE = 288
MATE = ["Aqua", "Blinds", "Dune", "FreshFlower", "Garden", "GreenMeadow", "LadyBird", "RainDrops", "Storm",
        "TwoWings", "Wood", "YellowFlower"]
SKLEARN = ["china", "flower"]


def default_sklearn():
    hits = sorted(glob.glob("/usr/lib/python3/dist-packages/sklearn/datasets/images"))
    return hits[0] if hits else None


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mate", default="/usr/share/backgrounds/mate/nature")
    ap.add_argument("--sklearn", default=default_sklearn())
    ap.add_argument("--out", default=os.path.join(here, "..", "tests", "fixtures", "photos"))
    args = ap.parse_args()
    out = os.path.normpath(args.out)
    os.makedirs(out, exist_ok=True)
    sources = [(os.path.join(args.mate, n + ".jpg"), "mate_" + n.lower()) for n in MATE]
    sources += [(os.path.join(args.sklearn or "", n + ".jpg"), "sklearn_" + n) for n in SKLEARN]
    total = 0
    for src, stem in sources:
        if not os.path.isfile(src):
            raise SystemExit(f"{src}: not found (install mate-backgrounds / python3-sklearn, or pass --mate / --sklearn)")
        img = Image.open(src).convert("RGB")
        scale = LONG_SIDE / max(img.size)
        size = (round(img.size[0] * scale), round(img.size[1] * scale))
        img = img.resize(size, Image.LANCZOS)
        path = os.path.join(out, stem + ".jpg")
        tmp = path + ".tmp"
        img.save(tmp, "JPEG", quality=90)
        os.replace(tmp, path)
        total += os.path.getsize(path)
        print(f"{path}: {size[0]}x{size[1]}, {os.path.getsize(path)} bytes")
    print(f"{len(sources)} photos, {total} bytes")


if __name__ == "__main__":
    main()
