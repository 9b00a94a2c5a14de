#!/usr/bin/env bash
# dod-train with the real DOD model (kind = dod) on the tiny SD fixture: a run trains, validates,
# checkpoints, and a run interrupted after 2 steps and resumed reproduces the uninterrupted losses
# bit for bit. Usage: bash tests/cli_train_dod.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
B=$1 S=$2
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
"$B/bin/dod-data" synth --clean "$S/tests/fixtures/data" --tasks noise,rain,haze --out "$T/syn.h5" --seed 1 --quiet
cat > "$T/tiny.ini" <<INI
[model]
kind = dod
base = $S/tests/fixtures/sd/sd2_tiny/model
frozen_dtype = f32
[stage]
stage = 1
[data]
train = $T/syn.h5
tasks = dehaze:1,derain:1,denoise:1
crop = 32
threads = 2
val = $T/syn.h5
[optim]
lr = 1e-3
[loss]
mse = 2
[train]
steps = 4
seed = 7
run_dir = $T/full
[log]
every = 1
[checkpoint]
every = 2
[val]
every = 4
images = 2
INI
pass=0 fail=0
check() { if eval "$2"; then pass=$((pass + 1)); else fail=$((fail + 1)); echo "FAIL: $1"; fi; }
"$B/bin/dod-train" --config "$T/tiny.ini" > "$T/full.log" 2>&1
check "uninterrupted run finished" "grep -q 'done: 4 steps' $T/full.log"
check "validation grid written" "ls $T/full/samples/step_0000004.png >/dev/null"
check "checkpoint written" "ls $T/full/checkpoints/step_0000004.safetensors >/dev/null"
"$B/bin/dod-train" --config "$T/tiny.ini" --set train.steps=2 --set train.run_dir="$T/part" > "$T/part.log" 2>&1
"$B/bin/dod-train" --config "$T/tiny.ini" --set train.run_dir="$T/part" --resume "$T/part" > "$T/resume.log" 2>&1
losses() { grep -o '"loss": [^,]*' "$1"; }
check "resumed losses identical to the uninterrupted run" "diff <(losses $T/full/metrics.jsonl) <(losses $T/part/metrics.jsonl)"
check "four loss lines" "[ \$(losses $T/part/metrics.jsonl | wc -l) = 4 ]"
echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
