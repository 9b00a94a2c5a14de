#!/usr/bin/env bash
# The embedded default, end to end, offline: set up, build a synthetic all-in-one data set (noise,
# rain, haze) from the real photos in tests/fixtures/data (train: astronaut, rocket, hubble; held out:
# chelsea, coffee), train DOD stage 1 on the tiny pretrained base in configs/tiny_base with
# configs/tiny.ini, and print the held-out PSNR of the restored images against the degraded inputs.
# Usage: bash scripts/demo.sh [dod-train --set overrides, e.g. train.steps=600]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

D=runs/demo
mkdir -p "$D"
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
mkdir -p "$T/train" "$T/val"
cp tests/fixtures/data/astronaut.png tests/fixtures/data/rocket.jpg tests/fixtures/data/hubble.bmp "$T/train/"
cp tests/fixtures/data/chelsea.png tests/fixtures/data/coffee.png "$T/val/"
build/bin/dod-data synth --clean "$T/train" --tasks noise,rain,haze --out "$D/train.h5" --seed 1 --quiet
build/bin/dod-data synth --clean "$T/val" --tasks noise,rain,haze --out "$D/val.h5" --seed 2 --quiet

rm -rf "$D/run"
sets=()
for kv in "$@"; do sets+=(--set "$kv"); done
build/bin/dod-train --config configs/tiny.ini "${sets[@]}" 2>&1 | tee "$D/train.log"

echo
echo "demo: held-out images (chelsea, coffee x noise/rain/haze), restored vs degraded input:"
grep "validation at step" "$D/train.log" | sed 's/^dod-train: /  /'
last=$(grep -o '"val_psnr": [0-9.]*, "val_ssim": [0-9.]*, "val_input_psnr": [0-9.]*' "$D/run/metrics.jsonl" | tail -1)
out=$(echo "$last" | sed 's/.*"val_psnr": \([0-9.]*\).*/\1/')
inp=$(echo "$last" | sed 's/.*"val_input_psnr": \([0-9.]*\).*/\1/')
awk -v o="$out" -v i="$inp" 'BEGIN { printf "demo: final held-out PSNR %.3f dB restored vs %.3f dB degraded: %+.3f dB\n", o, i, o - i }'
echo "demo: sample grids (degraded | restored | ground truth) in $D/run/samples/"
