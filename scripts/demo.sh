#!/usr/bin/env bash
# The embedded default, end to end, offline: set up, build a synthetic all-in-one data set (noise,
# rain, haze) from real photos (train: tests/fixtures/data astronaut, rocket, hubble, the seven crops
# in tests/fixtures/demo and the fourteen nature / city photos in tests/fixtures/photos; held out:
# chelsea, coffee, with noise at sigma 25), train DOD on the tiny pretrained base in configs/tiny_base
# (stage 1 with configs/tiny.ini, then stage 2 with configs/tiny_stage2.ini from its run), and print
# the held-out PSNR, SSIM and mean colour shift (docs/metrics.md) of the restored images against the
# degraded inputs, per task and overall.
# Usage: [STAGE2_SET="key=value ..."] bash scripts/demo.sh [stage-1 --set overrides, e.g. train.steps=600]
set -euo pipefail
cd "$(dirname "$0")/.."
# OpenMP threads that spin while waiting for each other are ruinous when the 2 cores are shared: on a
# machine running other jobs (load ~10) dod-train's step took 10x longer with libgomp's default than
# with passive waiting (docs/tiny-base.md). A value set by the caller is kept.
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-passive}"
# Only the two tools the demo runs are built here (scripts/setup.sh builds everything).
DOD_BUILD_TARGETS="${DOD_BUILD_TARGETS:-dod-data dod-train}" bash scripts/setup.sh

D=runs/demo
mkdir -p "$D"
# A rerun starts over: the data sets and the run are rebuilt.
rm -rf "$D/run" "$D/stage2" "$D/train.h5" "$D/val.h5"
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
mkdir -p "$T/train" "$T/val"
cp tests/fixtures/data/astronaut.png tests/fixtures/data/rocket.jpg tests/fixtures/data/hubble.bmp tests/fixtures/demo/*.jpg \
   tests/fixtures/photos/*.jpg "$T/train/"
cp tests/fixtures/data/chelsea.png tests/fixtures/data/coffee.png "$T/val/"
build/bin/dod-data synth --clean "$T/train" --tasks noise,rain,haze --out "$D/train.h5" --seed 1 --quiet
# Held-out noise at sigma 25 (validation uses the first listed sigma; training draws 15, 25, 50): at
# sigma 15 the noisy input (~25 dB) is close to what the tiny VAE itself can reconstruct of these photos
# (docs/tiny-base.md).
build/bin/dod-data synth --clean "$T/val" --tasks noise,rain,haze --out "$D/val.h5" --seed 2 --sigma 25 --quiet

sets=()
for kv in "$@"; do sets+=(--set "$kv"); done
# Stage 1: conditional LoRA, conv_in and the modulation (configs/tiny.ini).
build/bin/dod-train --config configs/tiny.ini "${sets[@]}" 2>&1 | tee "$D/train.log"
# The run directories as resolved with the overrides (a stage-1 train.run_dir=... is followed).
run_dir_of() { build/bin/dod-train "$@" --print-config | sed -n 's/^run_dir = "\(.*\)"$/\1/p'; }
RUN1=$(run_dir_of --config configs/tiny.ini "${sets[@]}")
# Stage 2: the detail module in the VAE decoder, stage 1 frozen (configs/tiny_stage2.ini, from the
# stage-1 run). STAGE2_SET="key=value ..." overrides its keys.
sets2=(--set "stage.init_from=$RUN1")
for kv in ${STAGE2_SET:-}; do sets2+=(--set "$kv"); done
RUN2=$(run_dir_of --config configs/tiny_stage2.ini "${sets2[@]}")
build/bin/dod-train --config configs/tiny_stage2.ini "${sets2[@]}" 2>&1 | tee "$D/stage2.log"

# Per-task means of the last validation in a log (printed by the loop when it reports them).
per_task() {
  awk '/validation at step/ { last = "" } / images?, restored PSNR / { sub(/^dod-train: */, "    "); last = last $0 "\n" }
       END { if (last != "") printf "%s", last }' "$1"
}
echo
echo "demo: held-out images (chelsea, coffee x noise/rain/haze; never trained on), restored vs degraded input:"
echo "  stage 1 (configs/tiny.ini):"
grep "validation at step" "$D/train.log" | sed 's/^dod-train: /    /'
echo "  per task at its last validation:"
per_task "$D/train.log"
echo "  stage 2 (configs/tiny_stage2.ini, the detail module on the frozen stage 1):"
grep "validation at step" "$D/stage2.log" | sed 's/^dod-train: /    /'
echo "  per task at its last validation:"
per_task "$D/stage2.log"
last=$(grep '"val_psnr"' "$RUN2/metrics.jsonl" | tail -1)
field() { echo "$last" | sed "s/.*\"$1\": \([-0-9.e+]*\).*/\1/"; }
awk -v o="$(field val_psnr)" -v i="$(field val_input_psnr)" -v os="$(field val_ssim)" -v is="$(field val_input_ssim)" \
    -v oc="$(field val_colour_shift)" -v ic="$(field val_input_colour_shift)" -v t="$SECONDS" 'BEGIN {
  printf "demo: final held-out PSNR %.3f dB restored vs %.3f dB degraded (%+.3f dB); SSIM %.4f vs %.4f (%+.4f)\n", o, i, o - i, os, is, os - is
  printf "demo: mean colour shift of the restored images %.2f (degraded inputs %.2f; 0-255 scale, docs/metrics.md)\n", oc, ic
  printf "demo: %s the degraded inputs; whole demo (setup, data, both stages, validation) took %dm%02ds\n", (o > i ? "restored images BEAT" : "restored images do NOT beat"), t / 60, t % 60 }'
# The target of the embedded default (docs/tiny-base.md): every task gains at least 1 dB and the mean
# colour shift of the restored images stays below 2, at the last validation of stage 2.
awk -v oc="$(field val_colour_shift)" '/validation at step/ { n = 0; worst = "" }
     / images?, restored PSNR / { g = $0; sub(/.*gain /, "", g); sub(/ dB.*/, "", g); t = $0
       sub(/^dod-train: */, "", t); sub(/:.*/, "", t); n++; if (worst == "" || g + 0 < wg) { worst = t; wg = g + 0 } }
     END { ok = n > 0 && wg >= 1 && oc < 2
           printf "demo: target (every task +1 dB, colour shift < 2): %s (least gain %+.3f dB, %s; colour shift %.2f)\n",
                  ok ? "MET" : "NOT MET", wg, worst, oc }' "$D/stage2.log"
echo "demo: sample grids (degraded | restored | ground truth) in $RUN1/samples/ (stage 1) and $RUN2/samples/"
