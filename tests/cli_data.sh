#!/bin/bash
# dod-data end to end: pack with the public sets' naming conventions (Rain100L, RESIDE SOTS, LOL,
# GoPro), clean/denoise packing, synth, info, verify, export, append, and the error paths (corrupt
# image, size mismatch, unmatched names, foreign/corrupt files) with their messages and exit codes.
# Usage: bash tests/cli_data.sh BUILD_DIR SOURCE_DIR
set -u
BUILD=$1
SRC=$2
DATA="$BUILD/bin/dod-data"
FIX="$SRC/tests/fixtures/data"
if [ ! -x "$DATA" ]; then
    echo "dod-data not built (needs HDF5); skipping"
    echo "0 passed, 0 failed"
    exit 0
fi
T=$(mktemp -d /tmp/dod_cli_data_XXXXXX)
trap 'rm -rf "$T"' EXIT
. "$SRC/tests/shell_lib.sh"
# expect_fail NAME PATTERN CMD...: CMD must exit non-zero and print PATTERN (grep -E) on stderr
expect_fail() {
    local name=$1 pattern=$2
    shift 2
    if "$@" >"$T/out" 2>"$T/err"; then
        bad "$name: succeeded but should fail"
    elif grep -qE -- "$pattern" "$T/err"; then
        ok
    else
        bad "$name: stderr lacks /$pattern/:"
        cat "$T/err" >&2
    fi
}
expect_ok() {
    local name=$1
    shift
    if "$@" >"$T/out" 2>"$T/err"; then ok; else
        bad "$name: exit $?"
        cat "$T/err" >&2
    fi
}

# synth from the real photos: every task, deterministic by seed
expect_ok synth "$DATA" synth --clean "$FIX" --tasks noise,rain,haze,blur,lowlight --out "$T/s1.h5" --seed 5
expect_ok synth-again "$DATA" synth --clean "$FIX" --tasks noise,rain,haze,blur,lowlight --out "$T/s2.h5" --seed 5 --quiet
expect_ok synth-other "$DATA" synth --clean "$FIX" --tasks rain --out "$T/s3.h5" --seed 6 --quiet
mkdir -p "$T/e1" "$T/e2"   # e3 does not exist yet: export makes it
for f in 1 2; do "$DATA" export "$T/s$f.h5" --task derain --index 2 --out-dir "$T/e$f" || bad "export s$f"; done
"$DATA" export "$T/s3.h5" --task derain --index 2 --out-dir "$T/e3" || bad "export s3"
if cmp -s "$T/e1/lq.png" "$T/e2/lq.png"; then ok; else bad "synth is not deterministic by seed"; fi
if cmp -s "$T/e1/lq.png" "$T/e3/lq.png"; then bad "seeds 5 and 6 synthesise the same rain"; else ok; fi
expect_ok info "$DATA" info "$T/s1.h5"
for task in denoise derain dehaze deblur lowlight; do
    if grep -qE "^$task +(stored|gaussian_noise) +5 +72x96 +150x200" "$T/out"; then ok; else bad "info row $task"; cat "$T/out" >&2; fi
done
expect_ok verify "$DATA" verify "$T/s1.h5"
grep -q "25 samples ok, 0 bad" "$T/out" && ok || bad "verify count: $(cat "$T/out")"

# public naming conventions
mk() { mkdir -p "$T/$1"; cp "$FIX/$2" "$T/$1/$3"; }
mk rain100l/rainy astronaut.png rain-001.png; mk rain100l/rainy coffee.png rain-002.png
mk rain100l/gt astronaut.png norain-001.png;  mk rain100l/gt coffee.png norain-002.png
mk sots/hazy chelsea.png 0001_0.8_0.2.jpg;    mk sots/hazy coffee.png 0002_1_0.16.jpg
mk sots/hazy chelsea.png 0001_0.9_0.1.jpg;    mk sots/clear chelsea.png 0001.png; mk sots/clear coffee.png 0002.png
mk lol/low rocket.jpg 22.png;                 mk lol/high rocket.jpg 22.png
mk gopro/blur hubble.bmp 000047.png;          mk gopro/sharp hubble.bmp 000047.png
# (file contents are whatever stb decodes; names drive the pairing; a .jpg name holding PNG bytes decodes fine)
expect_ok pack-rain "$DATA" pack --task derain --lq "$T/rain100l/rainy" --hq "$T/rain100l/gt" --out "$T/p.h5"
expect_ok pack-sots "$DATA" pack --task dehaze --lq "$T/sots/hazy" --hq "$T/sots/clear" --out "$T/p.h5" --append
expect_ok pack-lol "$DATA" pack --task lowlight --lq "$T/lol/low" --hq "$T/lol/high" --out "$T/p.h5" --append
expect_ok pack-gopro "$DATA" pack --task deblur --lq "$T/gopro/blur" --hq "$T/gopro/sharp" --out "$T/p.h5" --append
expect_ok pack-clean "$DATA" pack --task denoise --clean "$FIX" --sigma 15,25,50 --out "$T/p.h5" --append
expect_ok pack-noisy "$DATA" pack --task cbsd_s25 --clean "$FIX" --sigma 25 --store-noisy --seed 1 --out "$T/p.h5" --append
printf '# explicit pairs\nrain-001.png\tnorain-002.png\n' > "$T/pairs.txt"
expect_fail pack-pairs-size "size mismatch" "$DATA" pack --task custom --pairs "$T/pairs.txt" --lq "$T/rain100l/rainy" --hq "$T/rain100l/gt" --out "$T/p.h5" --append
printf 'rain-002.png norain-002.png\n' > "$T/pairs.txt"
expect_ok pack-pairs "$DATA" pack --task custom --pairs "$T/pairs.txt" --lq "$T/rain100l/rainy" --hq "$T/rain100l/gt" --out "$T/p.h5" --append
expect_ok info2 "$DATA" info "$T/p.h5"
for row in "derain +stored +2 " "dehaze +stored +3 " "lowlight +stored +1 " "deblur +stored +1 " \
           "denoise +gaussian_noise +5 .* 15,25,50" "cbsd_s25 +stored +5 " "custom +stored +1 "; do
    grep -qE "^$row" "$T/out" && ok || bad "info row /$row/: $(cat "$T/out")"
done
expect_ok verify2 "$DATA" verify "$T/p.h5"

# bad input: nothing written, the file named, exit non-zero
cp "$T/p.h5" "$T/p.before"
head -c 200 "$FIX/coffee.png" > "$T/rain100l/rainy/rain-002.png"
expect_fail corrupt-image "rain-002.png: truncated or corrupt PNG: chunk 'IDAT'" "$DATA" pack --task derain2 --lq "$T/rain100l/rainy" --hq "$T/rain100l/gt" --out "$T/p.h5" --append
cmp -s "$T/p.h5" "$T/p.before" && ok || bad "failed append changed the file"
expect_fail corrupt-new "rain-002.png: truncated or corrupt PNG: chunk 'IDAT'" "$DATA" pack --task derain --lq "$T/rain100l/rainy" --hq "$T/rain100l/gt" --out "$T/new.h5"
[ ! -e "$T/new.h5" ] && ok || bad "partial output left"
ls "$T" | grep -q '\.tmp\.' && bad "temp file left: $(ls "$T")" || ok
cp "$FIX/coffee.png" "$T/rain100l/rainy/rain-002.png"
cp "$FIX/chelsea.png" "$T/rain100l/rainy/rain-003.png"
expect_fail unmatched "rain-003.png: no HQ partner" "$DATA" pack --task derain --lq "$T/rain100l/rainy" --hq "$T/rain100l/gt" --out "$T/new.h5"
expect_ok skip-unmatched "$DATA" pack --task derain --lq "$T/rain100l/rainy" --hq "$T/rain100l/gt" --out "$T/new.h5" --skip-unmatched
grep -q "warning: .*rain-003.png" "$T/err" && ok || bad "skip-unmatched should warn"
expect_fail exists "already exists" "$DATA" pack --task derain --lq "$T/rain100l/rainy" --hq "$T/rain100l/gt" --out "$T/new.h5"
expect_fail store-noisy-2 "exactly one --sigma" "$DATA" pack --task d --clean "$FIX" --sigma 15,25 --store-noisy --out "$T/x.h5"
expect_fail no-sigma "need --sigma" "$DATA" pack --task d --clean "$FIX" --out "$T/x.h5"
expect_fail bad-task-name "task name" "$DATA" pack --task "a/b" --clean "$FIX" --sigma 15 --out "$T/x.h5"
expect_fail synth-unknown "unknown degradation 'snow'" "$DATA" synth --clean "$FIX" --tasks rain,snow --out "$T/x.h5"
echo "not hdf5" > "$T/text.h5"
expect_fail info-text "text.h5: not an HDF5 file" "$DATA" info "$T/text.h5"
expect_fail verify-missing "nope.h5: cannot open" "$DATA" verify "$T/nope.h5"
expect_fail append-text "text.h5: not an HDF5 file" "$DATA" pack --task d --clean "$FIX" --sigma 15 --out "$T/text.h5" --append
head -c 20000 "$T/p.h5" > "$T/trunc.h5"
expect_fail truncated "trunc.h5" "$DATA" verify "$T/trunc.h5"
expect_fail export-bad-index "--index 'two': expected a sample index" "$DATA" export "$T/p.h5" --task denoise --index two --out-dir "$T"
expect_fail export-missing-task "no task 'snow'" "$DATA" export "$T/p.h5" --task snow --index 0 --out-dir "$T"
expect_fail usage "unknown command" "$DATA" frobnicate

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
