#!/usr/bin/env python3
"""Fixtures of tests/test_tfevents.c (TensorBoard event files), in tests/fixtures/tfevents/:

  tiny.png            a 3 x 2 RGB PNG (written here with zlib, so the bytes are fixed)
  reference.tfevents  the events test_tfevents.c writes with eval/tfevents.c, encoded by protobuf
                      (tensorboard's event_pb2 / summary_pb2) and framed by tensorboard's own
                      RecordWriter (the framing of tensorboard.summary.writer.event_file_writer)
  toy_run/            the event files of a short toy training run with a rollback and a resume,
                      written by dod's writer (BUILD/tests/test_tfevents --write-run)
  toy_run.listing     what TensorBoard's EventAccumulator reads from toy_run/ (scripts/read_tfevents.py)

Run with $PYTHON (needs the tensorboard package) after building:
    ${PYTHON:-python3} scripts/make_tfevents_fixtures.py [BUILD_DIR]
"""
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib

from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.summary.writer.record_writer import RecordWriter

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from read_tfevents import listing  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "tfevents")
WALL_TIME = 1700000000.5   # tests/test_tfevents.c REF_WALL_TIME
LR_TAGS = "^train/lr$"     # scalar values listed: the schedule's, identical on every machine


def tiny_png():
    rows = [bytes([0, 255, 0, 0, 0, 255, 0, 0, 0, 255]), bytes([0, 10, 20, 30, 40, 50, 60, 70, 80, 90])]  # filter 0 + RGB x3

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", 3, 2, 8, 2, 0, 0, 0)   # width 3, height 2, 8-bit RGB
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"".join(rows), 9))
            + chunk(b"IEND", b""))


def scalar_event(step, tag, value):
    return event_pb2.Event(wall_time=WALL_TIME, step=step,
                           summary=summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, simple_value=value)]))


def reference_events(png):
    # The same sequence as write_reference() in tests/test_tfevents.c.
    image = summary_pb2.Summary.Image(height=2, width=3, colorspace=3, encoded_image_string=png)
    return [
        event_pb2.Event(wall_time=WALL_TIME, file_version="brain.Event:2",
                        source_metadata=event_pb2.SourceMetadata(writer="dod")),
        scalar_event(1, "train/loss", 0.5),
        scalar_event(2, "train/lr", 0.0),
        scalar_event(1234567890123, "val_psnr/dehaze", -3.25),
        scalar_event(0, "x", 1e-30),
        scalar_event(-5, "negative step", float("inf")),
        event_pb2.Event(wall_time=WALL_TIME, step=10,
                        summary=summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag="val/grid", image=image)])),
        event_pb2.Event(wall_time=WALL_TIME, step=11, session_log=event_pb2.SessionLog(status=event_pb2.SessionLog.START)),
    ]


def main():
    build = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "build")
    os.makedirs(OUT, exist_ok=True)
    png = tiny_png()
    with open(os.path.join(OUT, "tiny.png"), "wb") as f:
        f.write(png)
    with open(os.path.join(OUT, "reference.tfevents"), "wb") as f:
        w = RecordWriter(f)
        for ev in reference_events(png):
            w.write(ev.SerializeToString())

    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([os.path.join(build, "tests", "test_tfevents"), "--write-run", tmp], check=True)
        dst = os.path.join(OUT, "toy_run")
        shutil.rmtree(dst, ignore_errors=True)
        os.makedirs(dst)
        src = os.path.join(tmp, "run", "tb")
        names = sorted(os.listdir(src))
        # Stable names (the originals carry a time, host and process id); the order is kept.
        for i, name in enumerate(names):
            shutil.copy(os.path.join(src, name), os.path.join(dst, "events.out.tfevents.%010d.fixture.%d" % (i, i)))
    lines = listing(os.path.join(OUT, "toy_run"), re.compile(LR_TAGS))
    with open(os.path.join(OUT, "toy_run.listing"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
