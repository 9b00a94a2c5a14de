#!/usr/bin/env bash
# dod-train with the LPIPS term ([loss] lpips, lpips_vgg, lpips_lin): on a one-image dataset (the same
# batch every step, no flips) the toy model's LPIPS falls at every step; the tiny DOD model trains with
# it (frozen bf16 LPIPS weights); a weight without files fails naming both keys, a missing file names
# the file; configs/aio3.ini and aio5.ini (2 MSE + 5 LPIPS) still parse. The VGG16 weights are the
# random stand-in of `dod-bench lpips_random_vgg` (tests/fixtures/lpips/README.md), the heads the lpips
# package's. Usage: bash tests/cli_train_lpips.sh BUILD_DIR SOURCE_DIR
set -u
B=$1 S=$2
. "$S/tests/shell_lib.sh"
T=$(mktemp -d /tmp/dod_cli_lpips_XXXXXX)
trap 'rm -rf "$T"' EXIT
TRAIN=$B/bin/dod-train
if ! "$TRAIN" --config-reference > /dev/null 2>&1 || [ ! -x "$B/bin/dod-data" ]; then
    echo "0 passed, 0 failed (dod-train without iniparser or dod-data without HDF5: skipped)"; exit 0
fi
LIN=$S/tests/fixtures/lpips/vgg_lin_v0.1.pth
"$B/bin/dod-bench" lpips_random_vgg "$T/vgg.safetensors"
check "random VGG16 file written" "[ -s $T/vgg.safetensors ]"
"$B/bin/dod-data" pack --task denoise_s25 --clean "$S/tests/fixtures/lpips/train" --sigma 25 --store-noisy --seed 1 \
    --out "$T/one.h5" --quiet
cat > "$T/toy.ini" <<INI
[model]
kind = toy
frozen_dtype = f32
[data]
train = $T/one.h5
tasks = denoise_s25:2
crop = 32
flips = false
threads = 0
[optim]
lr = 1e-3
[loss]
mse = 2
lpips = 5
lpips_vgg = $T/vgg.safetensors
lpips_lin = $LIN
[train]
steps = 8
run_dir = $T/toy
[log]
every = 1
[val]
every = 0
INI
"$TRAIN" --config "$T/toy.ini" > "$T/toy.log" 2>&1
check "toy run with LPIPS finished" "grep -q 'done: 8 steps' $T/toy.log && grep -q 'dod-train: LPIPS (VGG16) from' $T/toy.log"
check "progress line shows lpips" "grep -qE 'step 8/8 \| loss [0-9.]+ mse [0-9.]+ lpips [0-9.]+ \| lr' $T/toy.log"
lp=$(grep -o '"lpips": [0-9.e-]*' "$T/toy/metrics.jsonl" | cut -d' ' -f2 | tr '\n' ' ')
falls() {  # 8 values, each below the one before, the last below 0.9 x the first
    awk -v s="$lp" 'BEGIN { n = split(s, v, " "); if (n != 8) exit 1
        for (i = 2; i <= n; i++) if (!(v[i] < v[i - 1])) exit 1
        exit !(v[n] < 0.9 * v[1]) }'
}
check "LPIPS falls at every step (same batch): $lp" falls
"$TRAIN" --config "$T/toy.ini" --set loss.lpips=0 --set train.steps=1 --set train.run_dir="$T/nolp" > "$T/nolp.log" 2>&1
check "weight 0: no LPIPS loaded, none in the progress line or metrics.jsonl" \
    "grep -q 'done: 1 steps' $T/nolp.log && grep -qE 'mse [0-9.]+ \| lr' $T/nolp.log && ! grep -qE 'LPIPS \\(VGG16\\)| lpips [0-9]' $T/nolp.log && ! grep -q '\"lpips\"' $T/nolp/metrics.jsonl"

# The tiny DOD model with the LPIPS term (frozen weights, LPIPS's among them, in bf16).
tiny_dod_data "$B" "$T/syn.h5"
tiny_dod_ini "$T/dod.ini" "$T/syn.h5" "$T/dod"
cat >> "$T/dod.ini" <<INI
[loss]
lpips = 5
lpips_vgg = $T/vgg.safetensors
lpips_lin = $LIN
[train]
steps = 2
[log]
every = 1
[val]
every = 0
INI
"$TRAIN" --config "$T/dod.ini" > "$T/dod.log" 2>&1
check "tiny DOD run with LPIPS finished" "grep -q 'done: 2 steps' $T/dod.log"
check "its LPIPS values are logged" "[ \$(grep -cE '\"lpips\": 0\\.[0-9]' $T/dod/metrics.jsonl) = 2 ]"

# Errors and the shipped configs.
"$TRAIN" --config "$S/configs/toy.ini" --set loss.lpips=5 > "$T/e1.log" 2>&1; rc=$?
check "weight without files: exit 1 naming both keys" \
    "[ $rc = 1 ] && grep -q '\[loss\] lpips: a non-zero LPIPS weight needs \[loss\] lpips_vgg .* and \[loss\] lpips_lin' $T/e1.log"
"$TRAIN" --config "$T/toy.ini" --set loss.lpips_vgg=/nonexistent/vgg16.pth --set train.run_dir="$T/e2" > "$T/e2.log" 2>&1; rc=$?
check "missing VGG file named" "[ $rc = 1 ] && grep -q '/nonexistent/vgg16.pth: cannot open' $T/e2.log"
for c in aio3 aio5; do
    "$TRAIN" --config "$S/configs/$c.ini" --print-config > "$T/$c.txt" 2>&1; rc=$?
    check "$c.ini parses with 2 MSE + 5 LPIPS" "[ $rc = 0 ] && grep -q '^lpips = 5$' $T/$c.txt && grep -q '^mse = 2$' $T/$c.txt && grep -q '^lpips_vgg = \".*vgg16-397923af.pth\"$' $T/$c.txt"
done
echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
