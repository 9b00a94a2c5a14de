#!/usr/bin/env bash
# Builds the all-in-one benchmark test sets (configs/bench_aio3.ini, configs/bench_aio5.ini) as
# dod-data files from the public downloads.
#   usage: scripts/make_benchmark_sets.sh PUBLIC_ROOT OUT_DIR [SET ...]
#   SET: cbsd68 rain100l sots gopro lol (default: all). Needs dod-data: $DOD_DATA, else
#   build/bin/dod-data next to this script's repository, else dod-data on PATH.
#
# Expected layout under PUBLIC_ROOT (the public downloads, unpacked as they come):
#   CBSD68/original_png/*.png                 CBSD68 (github clausmichele/CBSD68-dataset), 68 clean images
#   Rain100L/input/*.png  Rain100L/target/*.png   Rain100L test, 100 pairs (Restormer/PromptIR test
#                                             download; rain-001 <-> norain-001 or identical names)
#   SOTS/outdoor/hazy/*   SOTS/outdoor/gt/*   RESIDE SOTS outdoor, 500 pairs (0001_0.8_0.2.jpg -> 0001.png)
#   GOPRO_Large/test/<sequence>/blur/*.png and .../sharp/*.png   GoPro test, 1111 pairs
#       (or a flat GoPro/test/input + GoPro/test/target, as Restormer's download has it)
#   LOLdataset/eval15/low/*.png  LOLdataset/eval15/high/*.png    LOL eval15, 15 pairs
#
# Writes into OUT_DIR (file: tasks):
#   cbsd68.h5: denoise_s15, denoise_s25, denoise_s50   noisy images made once, with fixed seeds
#              (1015, 1025, 1050) and stored (--store-noisy), so every machine scores the same inputs
#   rain100l_test.h5: derain    sots_outdoor.h5: dehaze    gopro_test.h5: deblur    lol_eval15.h5: lowlight
# Each file is built as OUT_DIR/NAME.partial.h5 and renamed when complete; an existing NAME.h5 is an
# error (remove it to rebuild). Any missing folder, unmatched file or unreadable image stops the
# script with dod-data's message naming it, and a non-zero exit.
set -euo pipefail
if [ $# -lt 2 ]; then
    sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi
ROOT=$1 OUT=$2
shift 2
SETS=${*:-cbsd68 rain100l sots gopro lol}
HERE=$(cd "$(dirname "$0")/.." && pwd)
DOD_DATA=${DOD_DATA:-}
if [ -z "$DOD_DATA" ]; then
    if [ -x "$HERE/build/bin/dod-data" ]; then DOD_DATA=$HERE/build/bin/dod-data
    else DOD_DATA=$(command -v dod-data || true); fi
fi
[ -n "$DOD_DATA" ] && [ -x "$DOD_DATA" ] || { echo "make_benchmark_sets: dod-data not found (set DOD_DATA)" >&2; exit 1; }
mkdir -p "$OUT"
PARTIAL=
# a failed step leaves no half-built file behind
trap '[ -z "$PARTIAL" ] || rm -f "$PARTIAL"' EXIT

need_dir() {
    [ -d "$1" ] || { echo "make_benchmark_sets: $2: missing folder $1 (see the layout at the top of $0)" >&2; exit 1; }
}
# begin NAME: the partial file to build; finish NAME: rename it into place.
begin() {
    if [ -e "$OUT/$1.h5" ]; then
        echo "make_benchmark_sets: $OUT/$1.h5 exists; remove it to rebuild" >&2
        exit 1
    fi
    rm -f "$OUT/$1.partial.h5"
    PARTIAL=$OUT/$1.partial.h5
}
finish() {
    mv "$PARTIAL" "$OUT/$1.h5"
    PARTIAL=
    echo "make_benchmark_sets: wrote $OUT/$1.h5"
}
pack() { "$DOD_DATA" pack --quiet "$@"; }

for set in $SETS; do
    case $set in
    cbsd68)
        need_dir "$ROOT/CBSD68/original_png" CBSD68
        begin cbsd68
        append=
        for sigma in 15 25 50; do
            pack --task "denoise_s$sigma" --clean "$ROOT/CBSD68/original_png" --sigma "$sigma" --store-noisy \
                --seed "10$(printf %02d "$sigma")" --out "$PARTIAL" $append
            append=--append
        done
        finish cbsd68 ;;
    rain100l)
        need_dir "$ROOT/Rain100L/input" Rain100L; need_dir "$ROOT/Rain100L/target" Rain100L
        begin rain100l_test
        pack --task derain --lq "$ROOT/Rain100L/input" --hq "$ROOT/Rain100L/target" --out "$PARTIAL"
        finish rain100l_test ;;
    sots)
        need_dir "$ROOT/SOTS/outdoor/hazy" SOTS; need_dir "$ROOT/SOTS/outdoor/gt" SOTS
        begin sots_outdoor
        pack --task dehaze --lq "$ROOT/SOTS/outdoor/hazy" --hq "$ROOT/SOTS/outdoor/gt" --out "$PARTIAL"
        finish sots_outdoor ;;
    gopro)
        begin gopro_test
        if [ -d "$ROOT/GOPRO_Large/test" ]; then
            append=
            for seq in "$ROOT"/GOPRO_Large/test/*/; do
                need_dir "$seq/blur" GoPro; need_dir "$seq/sharp" GoPro
                pack --task deblur --lq "$seq/blur" --hq "$seq/sharp" --out "$PARTIAL" $append
                append=--append
            done
            [ -n "$append" ] || { echo "make_benchmark_sets: GoPro: no sequence folders in $ROOT/GOPRO_Large/test" >&2; exit 1; }
        else
            need_dir "$ROOT/GoPro/test/input" "GoPro (GOPRO_Large/test/<sequence> or GoPro/test/input)"
            need_dir "$ROOT/GoPro/test/target" GoPro
            pack --task deblur --lq "$ROOT/GoPro/test/input" --hq "$ROOT/GoPro/test/target" --out "$PARTIAL"
        fi
        finish gopro_test ;;
    lol)
        need_dir "$ROOT/LOLdataset/eval15/low" LOL; need_dir "$ROOT/LOLdataset/eval15/high" LOL
        begin lol_eval15
        pack --task lowlight --lq "$ROOT/LOLdataset/eval15/low" --hq "$ROOT/LOLdataset/eval15/high" --out "$PARTIAL"
        finish lol_eval15 ;;
    *)
        echo "make_benchmark_sets: unknown set '$set' (cbsd68 rain100l sots gopro lol)" >&2
        exit 2 ;;
    esac
done
