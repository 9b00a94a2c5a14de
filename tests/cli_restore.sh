#!/usr/bin/env bash
# dod-export and dod-restore end to end on the tiny SD fixture: dod-restore reproduces PyTorch's
# restoration of the committed adapter (scripts/load_adapter.py, diffusers + PEFT; whole latent and latent
# tiles); an adapter exported from a run restores exactly as dod-eval run restores with the run's
# checkpoint (and dod-eval run --adapter likewise), whole and tiled; inputs of every kind (16-bit grey,
# RGBA, EXIF-rotated JPEG, JPEG output); the memory plan of SD 2.1-base shapes at 4096 x 3072; bad input
# (a truncated, corrupted or foreign file, another base, unreadable or empty images, an output folder that
# cannot be written), each named, exit 1, no partial output.
# Usage: bash tests/cli_restore.sh BUILD_DIR SOURCE_DIR
set -uo pipefail
B=$1 S=$2
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
. "$S/tests/shell_lib.sh"
X="$B/bin/dod-export" R="$B/bin/dod-restore" E="$B/bin/dod-eval"
FIX="$S/tests/fixtures/restore"
BASE="$S/tests/fixtures/sd/sd2_tiny/model"

# png_info FILE: "WIDTH HEIGHT BITDEPTH COLOURTYPE" from the IHDR chunk
png_info() { od -An -tu1 -j16 -N10 "$1" | awk '{ print $1*16777216+$2*65536+$3*256+$4, $5*16777216+$6*65536+$7*256+$8, $9, $10 }'; }
# psnr_of PRED_DIR GT_DIR: the basicsr PSNR dod-eval metrics gives the pair (one image each)
psnr_of() { "$E" metrics --profile basicsr --pred "$1" --gt "$2" | awk '$1 == "average" { print $2 }'; }

# ---- PyTorch agreement: the committed adapter, input and load_adapter.py outputs -------------------------
for m in whole tiled; do
    args="--tile 96 --overlap 32"
    [ $m = tiled ] && args="--tile 16 --overlap 8"
    # shellcheck disable=SC2086
    "$R" --base "$BASE" --adapter "$FIX/adapter.safetensors" --in "$FIX/input.png" --out "$T/c_$m" $args > "$T/r_$m.log" 2>&1
    check "$m: dod-restore restores the fixture input" "[ $? = 0 ] && [ -s $T/c_$m/input.png ]"
    mkdir -p "$T/t_$m" && cp "$FIX/torch_$m.png" "$T/t_$m/input.png"
    p=$(psnr_of "$T/c_$m" "$T/t_$m")
    echo "dod-restore vs PyTorch ($m): PSNR $p dB"
    # measured: values differ by at most 1 level on < 0.01% of them (about 90 dB); 75 dB allows ~0.2%
    check "$m: dod-restore matches PyTorch + PEFT (PSNR $p >= 75 dB)" "awk -v p='$p' 'BEGIN { exit !(p == \"inf\" || p >= 75) }'"
done
check "tiled: the UNet ran in latent tiles" "grep -q '12 UNet tiles' $T/r_tiled.log"
"$R" --base "$BASE" --adapter "$FIX/adapter.safetensors" --in "$FIX/input.png" --out "$T/c_merged" --merge on > "$T/r_merged.log" 2>&1
p=$(psnr_of "$T/c_merged" "$T/t_whole")
echo "dod-restore with the LoRA merged per image vs PyTorch's adapters: PSNR $p dB"
check "--merge on: still PyTorch's image (PSNR $p >= 75 dB)" "grep -q 'LoRA merged' $T/r_merged.log && awk -v p='$p' 'BEGIN { exit !(p == \"inf\" || p >= 75) }'"

# ---- a run, its export, and three restorations that must agree exactly ---------------------------------
"$B/bin/dod-data" synth --clean "$S/tests/fixtures/data" --tasks noise,rain,haze --sigma 25 --store-noisy \
    --out "$T/syn.h5" --seed 1 --quiet || { echo "FAIL: dod-data synth"; exit 1; }
tiny_dod_ini "$T/tiny.ini" "$T/syn.h5" "$T/run"
printf '[model]\nfrozen_dtype = f32\nprompt = "a photo"\n[train]\nsteps = 4\n' >> "$T/tiny.ini"   # the CLIP text encoder's prompt
"$B/bin/dod-train" --config "$T/tiny.ini" --quiet > "$T/train.log" 2>&1 || { cat "$T/train.log"; echo "FAIL: dod-train"; exit 1; }
"$X" --run "$T/run" --out "$T/a.safetensors" > "$T/x.log" 2>&1
check "dod-export --run writes an adapter" "[ $? = 0 ] && [ -s $T/a.safetensors ] && grep -q 'stage-1 DOD adapter' $T/x.log"
check "dod-export --run takes the run's prompt embeddings (its cache) and records the prompt" \
    "grep -q 'prompt embeddings from $T/run/prompt_embeds.safetensors' $T/x.log && grep -a -q '\"prompt\":\"a photo\"' $T/a.safetensors"
"$X" --checkpoint "$T/run/checkpoints/step_0000004.safetensors" --out "$T/b.safetensors" > /dev/null 2>&1
tensors_hash() { grep -a -o '"tensors_hash":"[0-9a-f]*"' "$1"; }
check "dod-export --checkpoint (its recorded configuration) writes the same tensors" "[ -n \"\$(tensors_hash $T/a.safetensors)\" ] && [ \"\$(tensors_hash $T/a.safetensors)\" = \"\$(tensors_hash $T/b.safetensors)\" ]"
"$X" --run "$T/run" --out "$T/h.safetensors" --dtype bf16 > /dev/null 2>&1
check "--dtype bf16 halves the file" "[ \$(stat -c %s $T/h.safetensors) -lt \$(( \$(stat -c %s $T/a.safetensors) * 6 / 10 )) ]"
for tiles in "whole" "unet" "vae"; do
    case $tiles in
        whole) ea="" ; ra="" ;;
        unet) ea="--tile 16 --tile-overlap 8" ; ra="--tile 16 --overlap 8" ;;
        vae) ea="--vae-tile 64 --vae-overlap 32" ; ra="--vae-tile 64 --vae-overlap 32" ;;
    esac
    # shellcheck disable=SC2086
    "$E" run --config "$T/tiny.ini" --checkpoint "$T/run" --data "$T/syn.h5" --tasks derain --save-images "$T/ev_$tiles" \
        --save-inputs --csv "$T/ev_$tiles.csv" $ea > /dev/null 2>&1
    check "$tiles: dod-eval run with the checkpoint" "[ $? = 0 ] && [ \$(ls $T/ev_$tiles/derain/restored | wc -l) = 5 ]"
    # shellcheck disable=SC2086
    "$E" run --adapter "$T/a.safetensors" --base "$BASE" --data "$T/syn.h5" --tasks derain --save-images "$T/ea_$tiles" \
        --csv "$T/ea_$tiles.csv" $ea > /dev/null 2>&1
    check "$tiles: dod-eval run --adapter scores exactly as the checkpoint" "[ $? = 0 ] && cmp -s <(cut -d, -f1-6 $T/ev_$tiles.csv) <(cut -d, -f1-6 $T/ea_$tiles.csv)"
    # shellcheck disable=SC2086
    "$R" --base "$BASE" --adapter "$T/a.safetensors" --in "$T/ev_$tiles/derain/input" --out "$T/dr_$tiles" --quiet $ra \
        > "$T/dr_$tiles.log" 2>&1
    same=0
    for f in "$T/ev_$tiles/derain/restored/"*.png; do
        cmp -s "$f" "$T/dr_$tiles/$(basename "$f")" && same=$((same + 1))
    done
    check "$tiles: dod-restore's PNGs are dod-eval run's, byte for byte ($same of 5)" "[ $same = 5 ]"
done
"$E" run --adapter "$T/a.safetensors" --base "$BASE" --data "$T/syn.h5" --tasks derain --max-images 1 --html "$T/ha" \
    > /dev/null 2>&1
check "dod-eval run --adapter --html: the page names the adapter" "[ $? = 0 ] && grep -q 'adapter <code>$T/a.safetensors</code>' $T/ha/index.html"
mkdir -p "$T/no_te" && cp -r "$BASE/unet" "$BASE/vae" "$BASE/scheduler" "$T/no_te/"
"$R" --base "$T/no_te" --adapter "$T/a.safetensors" --in "$T/ev_whole/derain/input" --out "$T/dr_no_te" --quiet > /dev/null 2>&1
same=0
for f in "$T/ev_whole/derain/restored/"*.png; do cmp -s "$f" "$T/dr_no_te/$(basename "$f")" && same=$((same + 1)); done
check "the adapter carries the prompt: the base without tokenizer/ and text_encoder/ restores the same ($same of 5)" "[ $same = 5 ]"
check "the tiled runs differ from the whole one (the options took effect)" "! cmp -s <(cut -d, -f5 $T/ev_whole.csv) <(cut -d, -f5 $T/ev_unet.csv) && ! cmp -s <(cut -d, -f5 $T/ev_whole.csv) <(cut -d, -f5 $T/ev_vae.csv)"

# ---- inputs of every kind -------------------------------------------------------------------------------
mkdir -p "$T/in"
cp "$FIX/grey16.png" "$FIX/rgba.png" "$FIX/exif6.jpg" "$FIX/grey_alpha.png" "$T/in/"
"$R" --base "$BASE" --adapter "$T/a.safetensors" --in "$T/in" --out "$T/kinds" > "$T/kinds.log" 2>&1
check "a folder of mixed inputs restores, one progress line each and a summary" "[ $? = 0 ] && [ \$(grep -c '^dod-restore: \[' $T/kinds.log) = 4 ] && grep -q '4 of 4 images restored, .* s per megapixel; peak RSS' $T/kinds.log"
check "16-bit grey in: grey PNG out, 40x30" "[ \"\$(png_info $T/kinds/grey16.png)\" = '40 30 8 0' ] && grep -q 'grey16.png 40x30 16-bit' $T/kinds.log"
check "RGBA in: RGBA PNG out" "[ \"\$(png_info $T/kinds/rgba.png)\" = '36 28 8 6' ]"
check "grey + alpha in: grey + alpha out" "[ \"\$(png_info $T/kinds/grey_alpha.png)\" = '20 16 8 4' ]"
check "EXIF orientation 6: restored upright (48x64)" "[ \"\$(png_info $T/kinds/exif6.png)\" = '48 64 8 2' ] && grep -q 'EXIF-rotated' $T/kinds.log"
"$R" --base "$BASE" --adapter "$T/a.safetensors" --in "$T/in/rgba.png" --out "$T/jpg" --format jpg --quality 90 --quiet > /dev/null 2>&1
check "--format jpg writes a JPEG" "[ $? = 0 ] && [ \"\$(od -An -tx1 -N3 $T/jpg/rgba.jpg | tr -d ' ')\" = ffd8ff ]"

# ---- the memory plan of SD 2.1-base shapes at 4096 x 3072 ----------------------------------------------
mkdir -p "$T/sd21/unet" "$T/sd21/vae" "$T/sd21/scheduler"
cp "$S/tests/fixtures/dod_modules/sd21_unet_config.json" "$T/sd21/unet/config.json"
cp "$S/tests/fixtures/dod_modules/sd21_vae_config.json" "$T/sd21/vae/config.json"
cp "$BASE/scheduler/scheduler_config.json" "$T/sd21/scheduler/"
"$R" --base "$T/sd21" --estimate-only --size 4096x3072 --max-memory 8 > "$T/est.txt" 2>&1
check "--estimate-only: SD 2.1-base at 4096x3072 in 8 GiB on the CPU: VAE in 512-px tiles" "[ $? = 0 ] && grep -q '| VAE decoder | 512x512 tiles' $T/est.txt && grep -q '| \*\*peak\*\*' $T/est.txt"
cat "$T/est.txt"
"$R" --base "$T/sd21" --estimate-only --size 4096x3072 --max-memory 2 > /dev/null 2> "$T/e.txt"
check "a budget below the weights is refused, naming them" "[ $? = 1 ] && grep -q 'the weights (3.* GiB)' $T/e.txt"

# ---- bad input: named, exit 1, no partial output ---------------------------------------------------------
head -c 3000 "$T/a.safetensors" > "$T/trunc.safetensors"
"$R" --base "$BASE" --adapter "$T/trunc.safetensors" --in "$FIX/input.png" --out "$T/bad1" > /dev/null 2> "$T/e.txt"
check "a truncated adapter is named" "[ $? = 1 ] && grep -q 'trunc.safetensors' $T/e.txt && [ -z \"\$(ls $T/bad1)\" ]"
cp "$T/a.safetensors" "$T/corrupt.safetensors"
size=$(stat -c %s "$T/corrupt.safetensors")
printf '\x5a' | dd of="$T/corrupt.safetensors" bs=1 seek=$((size / 2)) conv=notrunc 2> /dev/null
"$R" --base "$BASE" --adapter "$T/corrupt.safetensors" --in "$FIX/input.png" --out "$T/bad2" > /dev/null 2> "$T/e.txt"
check "a corrupted adapter (one byte) is named as corrupted" "[ $? = 1 ] && grep -q 'corrupt.safetensors: corrupted' $T/e.txt && [ -z \"\$(ls $T/bad2)\" ]"
"$R" --base "$BASE" --adapter "$T/run/checkpoints/step_0000004.safetensors" --in "$FIX/input.png" --out "$T/bad3" > /dev/null 2> "$T/e.txt"
check "a checkpoint is not an adapter" "[ $? = 1 ] && grep -q 'not a dod adapter' $T/e.txt"
"$R" --base "$S/configs/tiny_base" --adapter "$T/a.safetensors" --in "$FIX/input.png" --out "$T/bad4" > /dev/null 2> "$T/e.txt"
check "another base is refused, naming both" "[ $? = 1 ] && grep -q 'made for another base model: exported on .*sd2_tiny/model .* --base is .*configs/tiny_base' $T/e.txt"
cp -r "$BASE" "$T/base2"
vsize=$(stat -c %s "$T/base2/vae/diffusion_pytorch_model.safetensors")
printf '\x3f' | dd of="$T/base2/vae/diffusion_pytorch_model.safetensors" bs=1 seek=$((vsize - 1)) conv=notrunc 2> /dev/null
"$R" --base "$T/base2" --adapter "$T/a.safetensors" --in "$FIX/input.png" --out "$T/bad5" > /dev/null 2> "$T/e.txt"
check "a base with the same configs but other weights is refused" "[ $? = 1 ] && grep -q 'same configs, different weights' $T/e.txt && grep -q 'base2' $T/e.txt"
mkdir -p "$T/mixed"
cp "$FIX/input.png" "$T/mixed/good.png"
echo "not a png" > "$T/mixed/junk.png"
: > "$T/mixed/empty.png"
"$R" --base "$BASE" --adapter "$T/a.safetensors" --in "$T/mixed" --out "$T/mixed_out" > "$T/o.txt" 2> "$T/e.txt"
check "unreadable and empty images: named, the others restored, exit 1" "[ $? = 1 ] && grep -q 'junk.png: cannot decode' $T/e.txt && grep -q 'empty.png: empty file' $T/e.txt && grep -q '1 of 3 images restored' $T/o.txt"
check "no output (nor temp file) for the failed images" "[ \"\$(ls -A $T/mixed_out)\" = good.png ]"
touch "$T/a_file"
"$R" --base "$BASE" --adapter "$T/a.safetensors" --in "$FIX/input.png" --out "$T/a_file" > /dev/null 2> "$T/e.txt"
check "an output folder that cannot be made or written is named before loading" "[ $? = 1 ] && grep -q 'a_file' $T/e.txt"
"$R" --base "$BASE" --adapter "$T/a.safetensors" --in "$T/nothing.png" --out "$T/bad6" > /dev/null 2> "$T/e.txt"
check "a missing input is named" "[ $? = 1 ] && grep -q 'nothing.png' $T/e.txt"
"$R" --base "$BASE" --adapter "$T/a.safetensors" --in "$FIX/input.png" --out "$T/bad7" --vae-tile 60 > /dev/null 2> "$T/e.txt"
check "a VAE tile not a multiple of 8 is a usage error" "[ $? = 2 ] && grep -q 'multiple of 8' $T/e.txt"
"$X" --run "$T/nope" --out "$T/x.safetensors" > /dev/null 2> "$T/e.txt"
check "dod-export: a missing run is named, nothing written" "[ $? = 1 ] && grep -q 'nope' $T/e.txt && [ ! -e $T/x.safetensors ]"
"$X" --out "$T/x.safetensors" > /dev/null 2>&1
check "dod-export without a source is a usage error" "[ $? = 2 ]"
"$E" run --adapter "$T/a.safetensors" --data "$T/syn.h5" > /dev/null 2> "$T/e.txt"
check "dod-eval run --adapter needs --base" "[ $? = 2 ]"

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
