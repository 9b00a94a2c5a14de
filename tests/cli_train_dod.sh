#!/usr/bin/env bash
# dod-train with the real DOD model (kind = dod) on the tiny SD fixture: a run trains, validates,
# checkpoints, and a run interrupted after 2 steps and resumed reproduces the uninterrupted losses
# bit for bit; the same with bf16 activations ([model] activations = bf16). Usage: bash tests/cli_train_dod.sh BUILD_DIR SOURCE_DIR
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
# The same with bf16 activation storage: resumed bit for bit, and losses close to (not equal to) f32's.
bf16() { "$B/bin/dod-train" --config "$T/tiny.ini" --set model.activations=bf16 --set val.every=0 "$@"; }
bf16 --set train.run_dir="$T/bf16_full" > "$T/bf16_full.log" 2>&1
check "bf16 activations announced" "grep -q 'dod-train: bf16 activations' $T/bf16_full.log"
bf16 --set train.steps=2 --set train.run_dir="$T/bf16_part" > "$T/bf16_part.log" 2>&1
bf16 --set train.run_dir="$T/bf16_part" --resume "$T/bf16_part" > "$T/bf16_resume.log" 2>&1
check "bf16: resumed losses identical to the uninterrupted run" \
    "diff <(losses $T/bf16_full/metrics.jsonl) <(losses $T/bf16_part/metrics.jsonl)"
close() {  # the first step's loss within 1e-3 relative of f32's, and not identical
    local a b
    a=$(losses "$T/full/metrics.jsonl" | head -1 | cut -d' ' -f2)
    b=$(losses "$T/bf16_full/metrics.jsonl" | head -1 | cut -d' ' -f2)
    awk -v a="$a" -v b="$b" 'BEGIN { d = (a - b) / a; if (d < 0) d = -d; exit !(d < 1e-3 && a != b) }'
}
check "bf16: first loss within 1e-3 of f32's and not identical" close
echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
