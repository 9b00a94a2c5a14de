#!/usr/bin/env bash
# A 4096 x 3072 image restores within --max-memory 8 on the CPU with the tiny pretrained base
# (configs/tiny_base): an adapter from a 2-step run on it, a 4096 x 3072 input (random pixels: the test
# is about memory and the tiled path, not quality), UNet latent tiles of 32 (the public 96 would spend
# most of the time in the tiny UNet's full-resolution attention), the VAE in tiles chosen from the budget.
# Checks: exit 0, a 4096 x 3072 PNG, the plan's estimate and the measured peak RSS both under 8 GiB.
# Label `long` (several minutes on 2 cores; ctest -LE long leaves it out).
# Usage: bash tests/cli_restore_large.sh BUILD_DIR SOURCE_DIR
set -uo pipefail
B=$1 S=$2
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
. "$S/tests/shell_lib.sh"

tiny_dod_data "$B" "$T/syn.h5" || { echo "FAIL: dod-data synth"; exit 1; }
tiny_dod_ini "$T/tb.ini" "$T/syn.h5" "$T/run"
sed -i "s|^base = .*|base = $S/configs/tiny_base|" "$T/tb.ini"
printf '[train]\nsteps = 2\n[model]\nprompt_embedding = %s\n' "$S/configs/tiny_base/prompt_embeds_zero.safetensors" >> "$T/tb.ini"
"$B/bin/dod-train" --config "$T/tb.ini" --quiet > "$T/train.log" 2>&1 || { cat "$T/train.log"; echo "FAIL: dod-train"; exit 1; }
"$B/bin/dod-export" --run "$T/run" --out "$T/tb.safetensors" > /dev/null 2>&1 || { echo "FAIL: dod-export"; exit 1; }
{ printf 'P6\n4096 3072\n255\n'; head -c $((4096 * 3072 * 3)) /dev/urandom; } > "$T/big.ppm"
"$B/bin/dod-restore" --base "$S/configs/tiny_base" --adapter "$T/tb.safetensors" --estimate-only --size 4096x3072 \
    --max-memory 8 > "$T/plan.txt" 2>&1
cat "$T/plan.txt"
check "the plan fits 8 GiB" "awk -F'|' '/\*\*peak\*\*/ { gsub(/[ *]/, \"\", \$4); exit !(\$4 < 8) }' $T/plan.txt"
start=$(date +%s)
"$B/bin/dod-restore" --base "$S/configs/tiny_base" --adapter "$T/tb.safetensors" --in "$T/big.ppm" --out "$T/out" \
    --max-memory 8 --tile 32 --overlap 8 > "$T/o.txt" 2> "$T/e.txt"
rc=$?
cat "$T/e.txt" "$T/o.txt"
echo "4096x3072 on the tiny base: $(( $(date +%s) - start )) s"
check "4096x3072 restores (exit 0)" "[ $rc = 0 ]"
check "a 4096x3072 PNG" "[ \"\$(od -An -tu1 -j16 -N8 $T/out/big.png | awk '{ print \$1*16777216+\$2*65536+\$3*256+\$4, \$5*16777216+\$6*65536+\$7*256+\$8 }')\" = '4096 3072' ]"
check "the VAE ran in tiles" "grep -q 'VAE tiles of' $T/e.txt"
check "peak RSS under 8 GiB" "awk '/images? restored/ { for (i = 1; i <= NF; i++) if (\$i == \"RSS\") r = \$(i + 1) } END { exit !(r > 0 && r < 8192) }' $T/o.txt"

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
