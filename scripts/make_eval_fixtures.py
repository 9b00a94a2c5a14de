#!/usr/bin/env python3
"""Writes tests/fixtures/eval/bad_pairs.h5: a small dod dataset file (docs/data-format.md layout)
with the faults `dod-eval run` must name, count and refuse to report as complete. dod-data itself
never writes such a file (it checks every pair), hence h5py here.

  task derain, count 5, 24x24 images made from a fixed numpy seed:
    00000000  a good pair                     (hq_source good-a.png)
    00000001  LQ 20x24 but HQ 24x24          (size mismatch; hq_source bad-size.png)
    00000002  an empty sample group          (unreadable: no hq/lq datasets)
    00000003  HQ dataset of rank 2           (unreadable; hq_source bad-rank.png)
    00000004  a good pair                     (hq_source good-b.png)

Run: ${PYTHON:-python3} scripts/make_eval_fixtures.py   (needs numpy, h5py)
"""
import os

import h5py
import numpy as np

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "eval", "bad_pairs.h5")


def fixed_str(s):
    return np.bytes_(s.encode())


def main():
    rng = np.random.default_rng(20240601)
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with h5py.File(OUT, "w", libver=("earliest", "latest")) as f:
        f.attrs["dod_format"] = fixed_str("dod-degradation-dataset")
        f.attrs["dod_format_version"] = np.int32(1)
        task = f.create_group("tasks").create_group("derain")
        task.attrs["lq_mode"] = fixed_str("stored")
        task.attrs["count"] = np.int64(5)

        def sample(i, name, hq, lq):
            g = task.create_group("%08d" % i)
            g.attrs["hq_source"] = fixed_str(name)
            g.attrs["lq_source"] = fixed_str("rain-" + name)
            g.create_dataset("hq", data=hq)
            g.create_dataset("lq", data=lq)

        def img(h, w):
            return rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)

        sample(0, "good-a.png", img(24, 24), img(24, 24))
        sample(1, "bad-size.png", img(24, 24), img(20, 24))
        task.create_group("%08d" % 2)   # count may not exceed the groups; this one holds no images
        sample(3, "bad-rank.png", rng.integers(0, 256, size=(24, 24), dtype=np.uint8), img(24, 24))
        sample(4, "good-b.png", img(24, 24), img(24, 24))
    print("wrote", OUT, os.path.getsize(OUT), "bytes")


if __name__ == "__main__":
    main()
