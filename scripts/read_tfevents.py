#!/usr/bin/env python3
"""List what TensorBoard itself reads from event files: every scalar and image tag with its steps.

    ${PYTHON:-python3} scripts/read_tfevents.py LOGDIR [--values REGEX]

LOGDIR is a folder of events.out.tfevents.* files (e.g. RUN_DIR/tb, or a single run of it). The
files are read with the tensorboard package's own reader
(tensorboard.backend.event_processing.event_accumulator.EventAccumulator, which also applies its
purge of steps after a SessionLog START), nothing kept back (size guidance 0). Output, tags sorted:

    file_version brain.Event:2
    scalar TAG steps=S1,S2,... [values=V1,V2,...]
    image TAG steps=S1,S2,... size=WxH[,WxH...]

Scalar values (%.6g) are printed for tags matching --values (default: every tag); tests/test_tfevents.c
prints the same listing with its own reader and compares it with the committed one
(tests/fixtures/tfevents/toy_run.listing, made by scripts/make_tfevents_fixtures.py).
"""
import argparse
import re
import sys

from tensorboard.backend.event_processing import event_accumulator as ea


def listing(logdir, values_re):
    acc = ea.EventAccumulator(logdir, size_guidance={ea.SCALARS: 0, ea.IMAGES: 0, ea.TENSORS: 0})
    acc.Reload()
    lines = ["file_version brain.Event:%d" % int(acc.file_version)] if acc.file_version else []
    tags = acc.Tags()
    for tag in sorted(tags["scalars"]):
        events = acc.Scalars(tag)
        line = "scalar %s steps=%s" % (tag, ",".join(str(e.step) for e in events))
        if values_re.search(tag):
            line += " values=" + ",".join("%.6g" % e.value for e in events)
        lines.append(line)
    for tag in sorted(tags["images"]):
        events = acc.Images(tag)
        sizes = sorted({"%dx%d" % (e.width, e.height) for e in events})
        lines.append("image %s steps=%s size=%s" % (tag, ",".join(str(e.step) for e in events), ",".join(sizes)))
    return lines


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("logdir")
    ap.add_argument("--values", default="", help="print values of scalar tags matching this regex (default: all)")
    a = ap.parse_args()
    lines = listing(a.logdir, re.compile(a.values))
    if not lines:
        sys.exit("read_tfevents.py: %s: no events found" % a.logdir)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
