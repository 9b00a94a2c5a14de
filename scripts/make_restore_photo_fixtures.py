#!/usr/bin/env python3
"""Input photos for tests/test_exif.c and tests/cli_restore.sh (dod-restore's inputs, data/photo.h).

Writes tests/fixtures/restore/:
  grey16.png        16-bit greyscale 40 x 30, value (x * 1601 + y * 2203) mod 65536 (the test recomputes it)
  rgba.png          8-bit RGBA 36 x 28: R = 7x, G = 5y, B = (x + y) * 3, A = (x * 7 + y * 5) mod 256
  grey_alpha.png    8-bit grey + alpha 20 x 16: L = 12x, A = 255 - 15y
  exif6.jpg         a 64 x 48 crop of tests/fixtures/data/astronaut.png as a JPEG whose EXIF orientation
                    is 6 (stored sideways: a viewer rotates it 90 degrees clockwise)
  exif1.jpg         the same stored pixels and JPEG settings, orientation 1
  exif8_be.jpg      the same with orientation 8 in a big-endian (Motorola) EXIF block
  exif6_upright.png PIL's ImageOps.exif_transpose of exif6.jpg (an independent reading of the tag: PIL's
                    JPEG decoder, so within a few levels of stb_image's)
Needs: Pillow, numpy.
Run:   ${PYTHON:-python3} scripts/make_restore_photo_fixtures.py
"""
import os
import struct

import numpy as np
from PIL import Image, ImageOps

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
OUT = os.path.join(ROOT, "tests", "fixtures", "restore")


def exif_block(orientation, big_endian=False):
    """APP1 payload: 'Exif\\0\\0' + a TIFF header with IFD0 holding only the orientation tag."""
    e = ">" if big_endian else "<"
    tiff = (b"MM" if big_endian else b"II") + struct.pack(e + "HI", 42, 8)
    tiff += struct.pack(e + "H", 1) + struct.pack(e + "HHIHH", 0x0112, 3, 1, orientation, 0) + struct.pack(e + "I", 0)
    return b"Exif\x00\x00" + tiff


def main():
    os.makedirs(OUT, exist_ok=True)
    y, x = np.mgrid[0:30, 0:40]
    Image.fromarray(((x * 1601 + y * 2203) % 65536).astype(np.uint16)).save(os.path.join(OUT, "grey16.png"))
    y, x = np.mgrid[0:28, 0:36]
    rgba = np.stack([7 * x, 5 * y, (x + y) * 3, (x * 7 + y * 5) % 256], -1).astype(np.uint8)
    Image.fromarray(rgba, "RGBA").save(os.path.join(OUT, "rgba.png"))
    y, x = np.mgrid[0:16, 0:20]
    Image.fromarray(np.stack([12 * x, 255 - 15 * y], -1).astype(np.uint8), "LA").save(os.path.join(OUT, "grey_alpha.png"))

    photo = Image.open(os.path.join(ROOT, "tests", "fixtures", "data", "astronaut.png")).convert("RGB")
    crop = photo.crop((40, 20, 104, 68))
    for name, orient, be in (("exif6.jpg", 6, False), ("exif1.jpg", 1, False), ("exif8_be.jpg", 8, True)):
        crop.save(os.path.join(OUT, name), quality=95, exif=exif_block(orient, be))
    upright = ImageOps.exif_transpose(Image.open(os.path.join(OUT, "exif6.jpg")))
    assert upright.size == (48, 64), upright.size
    upright.save(os.path.join(OUT, "exif6_upright.png"))
    assert ImageOps.exif_transpose(Image.open(os.path.join(OUT, "exif8_be.jpg"))).size == (48, 64)


if __name__ == "__main__":
    main()
