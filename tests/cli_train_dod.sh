#!/usr/bin/env bash
# dod-train with the real DOD model (kind = dod) on the tiny SD fixture: a run trains, validates,
# checkpoints, and a run interrupted after 2 steps and resumed reproduces the uninterrupted losses
# bit for bit. Usage: bash tests/cli_train_dod.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
B=$1 S=$2
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
. "$S/tests/shell_lib.sh"
tiny_dod_data "$B" "$T/syn.h5"
tiny_dod_ini "$T/tiny.ini" "$T/syn.h5" "$T/full"
cat >> "$T/tiny.ini" <<INI
[model]
frozen_dtype = f32
[data]
val = $T/syn.h5
[train]
steps = 4
[log]
every = 1
[val]
every = 4
images = 2
INI
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
