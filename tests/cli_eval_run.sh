#!/usr/bin/env bash
# dod-eval run end to end on the tiny SD fixture model: a 2-step DOD checkpoint, a tiny synthetic
# test set; reports on stdout / CSV / JSON, saved images that `dod-eval metrics` scores identically,
# tiling, --max-images; the --html report's structure; scripts/make_benchmark_sets.sh and --bench on
# a fake PUBLIC_ROOT built from the photo fixtures; bad inputs (named, counted, exit 1, no report files).
# Usage: bash tests/cli_eval_run.sh BUILD_DIR SOURCE_DIR
set -uo pipefail
B=$1 S=$2
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
E="$B/bin/dod-eval"
D="$B/bin/dod-data"
. "$S/tests/shell_lib.sh"

# ---- a tiny checkpoint and test set -------------------------------------------------------------
"$D" synth --clean "$S/tests/fixtures/data" --tasks noise,rain,haze,blur,lowlight --sigma 25 --store-noisy \
    --out "$T/syn.h5" --seed 1 --quiet || { echo "FAIL: dod-data synth"; exit 1; }
tiny_dod_ini "$T/tiny.ini" "$T/syn.h5" "$T/run"
cat >> "$T/tiny.ini" <<INI
[model]
frozen_dtype = f32
[train]
steps = 2
INI
"$B/bin/dod-train" --config "$T/tiny.ini" --quiet > "$T/train.log" 2>&1 || { cat "$T/train.log"; echo "FAIL: dod-train"; exit 1; }

# ---- a complete run: reports, images, consistency with dod-eval metrics -------------------------
"$E" run --config "$T/tiny.ini" --checkpoint "$T/run" --data "$T/syn.h5" --tasks denoise,derain,dehaze \
    --profile basicsr --save-images "$T/out" --save-inputs --csv "$T/r.csv" --json "$T/r.json" > "$T/r.md" 2> "$T/r.err"
check "complete run exits 0" "[ $? = 0 ]"
check "report names the protocol and crop-multiple 16" "grep -q 'protocol: basicsr, RGB, crop-border 0, crop-multiple 16' $T/r.md"
check "one row per task and the average" "grep -q '^| denoise | 5 |' $T/r.md && grep -q '^| derain | 5 |' $T/r.md && grep -q '^| dehaze | 5 |' $T/r.md && grep -q '^| \*\*average\*\* | 15 |' $T/r.md"
check "paper-style row" "grep -q '^| dod (step 2) | [0-9.]*/\.[0-9]* |' $T/r.md"
check "CSV written with 3 sets and the average" "[ \$(wc -l < $T/r.csv) = 5 ] && grep -q '^average,' $T/r.csv"
check "JSON written with per-image entries" "[ \$(grep -c '\"seconds\":' $T/r.json) = 15 ]"
check "no progress bar when stderr is not a terminal" "! grep -q 'ETA' $T/r.err"
for task in denoise derain dehaze; do
    check "$task: 5 restored PNGs, inputs, gt and a grid" "[ \$(ls $T/out/$task/restored | wc -l) = 5 ] && [ \$(ls $T/out/$task/gt | wc -l) = 5 ] && [ \$(ls $T/out/$task/input | wc -l) = 5 ] && [ -s $T/out/$task/grid.png ]"
    "$E" metrics --profile basicsr --crop-multiple 16 --pred "$T/out/$task/restored" --gt "$T/out/$task/gt" \
        --csv "$T/m_$task.csv" > /dev/null
    # mean of the per-image metrics of the saved PNGs vs the run's CSV row, to 1e-6
    check "$task: dod-eval metrics on the saved images agrees to 1e-6" "awk -F, -v t=$task '
        FNR == 1 { next } NR == FNR { p += \$2; s += \$3; n++; next }
        \$1 == t { d1 = p / n - \$5; d2 = s / n - \$6; ok = (d1 < 1e-6 && d1 > -1e-6 && d2 < 1e-6 && d2 > -1e-6) }
        END { exit !ok }' $T/m_$task.csv $T/r.csv"
done

# ---- --html: the report page, its images and its structure (a browser: tests/browser/check_report.sh) -----
"$E" run --config "$T/tiny.ini" --checkpoint "$T/run" --data "$T/syn.h5" --tasks denoise,derain,dehaze \
    --html "$T/html" > "$T/h.md" 2> "$T/h.err"
check "--html run exits 0 and names the page" "[ $? = 0 ] && grep -q 'HTML report $T/html/index.html' $T/h.err"
H="$T/html/index.html"
if command -v xmllint > /dev/null; then
    check "the page is well-formed (xmllint)" "xmllint --noout $H"
else
    bad "xmllint missing: install libxml2-utils (scripts/setup.sh)"
fi
for task in denoise derain dehaze; do
    psnr=$(awk -F' [|] ' -v t="$task" '$1 == "| " t { print $3 }' "$T/h.md")
    check "$task: a summary row with the report's PSNR $psnr" "grep -q '<tr data-set=\"$task\"><td><a href=\"#set-$task\">$task</a></td><td class=\"num\" data-v=\"5\">5</td><td class=\"num\" data-v=\"[^\"]*\">$psnr</td>' $H"
    check "$task: 5 image rows in its section" "[ \$(sed -n '/<section id=\"set-$task\">/,/<\/section>/p' $H | grep -o '<tr data-image=' | wc -l) = 5 ]"
done
check "the average row" "grep -q '<tr class=\"average\"><td>average</td><td class=\"num\">15</td>' $H"
check "a slider per image and the pair selector" "[ \$(grep -o 'type=\"range\"' $H | wc -l) = 15 ] && grep -q '<select id=\"pair\">' $H"
grep -o '\(src\|href\|data-input\|data-restored\|data-gt\)="[^"#][^"]*"' "$H" | sed 's/^[^"]*"//; s/"$//' | sort -u > "$T/refs.txt"
missing=0
while read -r ref; do [ -f "$T/html/$(printf '%b' "${ref//%/\\x}")" ] || { echo "  missing: $ref"; missing=$((missing + 1)); }; done < "$T/refs.txt"
check "every image the page references exists (\$(wc -l < $T/refs.txt) files)" "[ $missing = 0 ] && [ \$(wc -l < $T/refs.txt) = 48 ]"
check "no external URL" "! grep -q '://' $H"
"$E" run --config "$T/tiny.ini" --checkpoint "$T/run" --data "$T/syn.h5" --tasks derain --max-images 1 --html "$T/html" > /dev/null 2>&1
check "an earlier report is replaced whole, nothing left beside it" "[ $? = 0 ] && [ ! -d $T/html/denoise ] && [ -d $T/html/derain ] && [ -z \"\$(ls $T | grep -E 'html\.(tmp|old)')\" ]"
mkdir -p "$T/mine" && echo keep > "$T/mine/notes.txt"
"$E" run --config "$T/tiny.ini" --checkpoint "$T/run" --data "$T/syn.h5" --tasks derain --html "$T/mine" > /dev/null 2> "$T/e.txt"
check "a folder that is not a report is refused before the run, untouched" "[ $? = 1 ] && grep -q 'mine: exists and is not an earlier dod-eval report' $T/e.txt && [ \"\$(ls $T/mine)\" = notes.txt ]"
"$E" run --config "$T/tiny.ini" --checkpoint "$T/run" --data "$T/syn.h5" --html "$T/h2" --save-images "$T/s2" > /dev/null 2> "$T/e.txt"
check "--html with --save-images is a usage error" "[ $? = 2 ] && grep -q 'give --html or --save-images' $T/e.txt"

# promptir scores the unrounded float output: close to, not equal to, the saved 8-bit PNGs' scores
"$E" run --config "$T/tiny.ini" --checkpoint "$T/run" --data "$T/syn.h5" --tasks derain --csv "$T/p.csv" > /dev/null 2>&1
"$E" metrics --crop-multiple 16 --pred "$T/out/derain/restored" --gt "$T/out/derain/gt" --csv "$T/mp.csv" > /dev/null
check "promptir: float-output score within 0.05 dB of the saved PNGs' score" "awk -F, 'FNR == 1 { next } NR == FNR { p += \$2; n++; next }
    \$1 == \"derain\" { d = p / n - \$5; ok = d < 0.05 && d > -0.05 } END { exit !ok }' $T/mp.csv $T/p.csv"

# ---- --max-images, tiling, progress -------------------------------------------------------------
"$E" run --config "$T/tiny.ini" --checkpoint "$T/run" --data "$T/syn.h5" --tasks derain --max-images 2 \
    --tile 32 --tile-overlap 16 --json "$T/tile.json" --progress > "$T/tile.md" 2> "$T/tile.err"
check "--max-images 2 scores 2 images and says so" "grep -q '^| derain | 2 |' $T/tile.md && grep -q 'at most the first 2' $T/tile.md"
check "--tile 32 (latent pixels) restores the UNet in several tiles" "grep -Eq '\"tiles\":[[:space:]]*([2-9]|[1-9][0-9])' $T/tile.json"
check "--progress draws a bar with an ETA" "grep -q 'ETA' $T/tile.err"

# ---- benchmark sets from a fake PUBLIC_ROOT, then --bench ---------------------------------------
P="$T/public"
mkdir -p "$P/CBSD68/original_png" "$P/Rain100L/input" "$P/Rain100L/target" "$P/SOTS/outdoor/hazy" "$P/SOTS/outdoor/gt" \
    "$P/GOPRO_Large/test/GOPR0384_11_00/blur" "$P/GOPRO_Large/test/GOPR0384_11_00/sharp" \
    "$P/GOPRO_Large/test/GOPR0410_11_00/blur" "$P/GOPRO_Large/test/GOPR0410_11_00/sharp" \
    "$P/LOLdataset/eval15/low" "$P/LOLdataset/eval15/high" "$T/exp"
cp "$S/tests/fixtures/data/astronaut.png" "$S/tests/fixtures/data/chelsea.png" "$S/tests/fixtures/data/coffee.png" "$P/CBSD68/original_png/"
export_pair() {   # task index lq_path hq_path
    "$D" export "$T/syn.h5" --task "$1" --index "$2" --out-dir "$T/exp" > /dev/null && mv "$T/exp/lq.png" "$3" && mv "$T/exp/hq.png" "$4"
}
export_pair derain 0 "$P/Rain100L/input/rain-001.png" "$P/Rain100L/target/norain-001.png"
export_pair derain 1 "$P/Rain100L/input/rain-002.png" "$P/Rain100L/target/norain-002.png"
export_pair dehaze 0 "$P/SOTS/outdoor/hazy/0001_0.8_0.2.png" "$P/SOTS/outdoor/gt/0001.png"
export_pair dehaze 1 "$P/SOTS/outdoor/hazy/0002_0.9_0.16.png" "$P/SOTS/outdoor/gt/0002.png"
export_pair deblur 0 "$P/GOPRO_Large/test/GOPR0384_11_00/blur/000001.png" "$P/GOPRO_Large/test/GOPR0384_11_00/sharp/000001.png"
export_pair deblur 1 "$P/GOPRO_Large/test/GOPR0410_11_00/blur/000001.png" "$P/GOPRO_Large/test/GOPR0410_11_00/sharp/000001.png"
export_pair lowlight 0 "$P/LOLdataset/eval15/low/1.png" "$P/LOLdataset/eval15/high/1.png"
export_pair lowlight 1 "$P/LOLdataset/eval15/low/22.png" "$P/LOLdataset/eval15/high/22.png"
DOD_DATA="$D" bash "$S/scripts/make_benchmark_sets.sh" "$P" "$T/bench" > "$T/mk.log" 2>&1
check "make_benchmark_sets.sh builds all five files" "[ \$? = 0 ] && ls $T/bench/cbsd68.h5 $T/bench/rain100l_test.h5 $T/bench/sots_outdoor.h5 $T/bench/gopro_test.h5 $T/bench/lol_eval15.h5 > /dev/null"
"$D" info "$T/bench/cbsd68.h5" > "$T/cb.info"
check "cbsd68.h5 holds stored noisy sets at sigma 15/25/50" "grep -Eq '^denoise_s15 +stored +3' $T/cb.info && grep -Eq '^denoise_s50 +stored +3' $T/cb.info"
check "GoPro sequences appended into one task" "$D info $T/bench/gopro_test.h5 | grep -Eq '^deblur +stored +2'"
DOD_DATA="$D" bash "$S/scripts/make_benchmark_sets.sh" "$P" "$T/bench" lol > "$T/mk2.log" 2>&1
check "an existing output is refused" "[ \$? != 0 ] && grep -q 'lol_eval15.h5 exists' $T/mk2.log"
rm -rf "$P/SOTS/outdoor/gt"
DOD_DATA="$D" bash "$S/scripts/make_benchmark_sets.sh" "$P" "$T/bench2" sots > "$T/mk3.log" 2>&1
check "a missing public folder is named and leaves no file" "[ \$? != 0 ] && grep -q 'SOTS/outdoor/gt' $T/mk3.log && [ -z \"\$(ls $T/bench2)\" ]"
mkdir -p "$P/SOTS/outdoor/gt" && cp "$P/GOPRO_Large/test/GOPR0384_11_00/sharp/000001.png" "$P/SOTS/outdoor/gt/0001.png"
DOD_DATA="$D" bash "$S/scripts/make_benchmark_sets.sh" "$P" "$T/bench2" sots > "$T/mk4.log" 2>&1
check "an unmatched hazy image fails the set and leaves no partial file" "[ \$? != 0 ] && [ -z \"\$(ls $T/bench2)\" ]"

for b in aio3 aio5; do
    "$E" run --bench "$S/configs/bench_$b.ini" --data-dir "$T/bench" --config "$T/tiny.ini" --checkpoint "$T/run" \
        --csv "$T/$b.csv" > "$T/$b.md" 2> "$T/$b.err"
    check "--bench $b runs every set" "[ $? = 0 ] && [ \$(wc -l < $T/$b.csv) = 7 ]"
done
check "aio3 table: CBSD68 s15/s25/s50, Rain100L, SOTS" "grep -q '^| method | CBSD68 s15 | CBSD68 s25 | CBSD68 s50 | Rain100L | SOTS | average |' $T/aio3.md"
check "aio5 table: BSD68 s25, Rain100L, SOTS, GoPro, LOL" "grep -q '^| method | BSD68 s25 | Rain100L | SOTS | GoPro | LOL | average |' $T/aio5.md"
check "benchmark header names the benchmark" "grep -q 'benchmark aio3' $T/aio3.md"

# ---- stage 2: the frozen stage-1 tensors come from [stage] init_from -----------------------------
sed -e 's/^stage = 1/stage = 2\ninit_from = '"${T//\//\\/}"'\/run/' -e 's/^steps = 2/steps = 1/' -e 's/^every = 2/every = 1/' \
    -e "s|^run_dir = .*|run_dir = $T/run2|" "$T/tiny.ini" > "$T/stage2.ini"
"$B/bin/dod-train" --config "$T/stage2.ini" --quiet > "$T/train2.log" 2>&1 || { cat "$T/train2.log"; echo "FAIL: dod-train stage 2"; }
"$E" run --config "$T/stage2.ini" --checkpoint "$T/run2" --data "$T/syn.h5" --tasks derain --max-images 1 > "$T/s2.md" 2> /dev/null
check "stage 2 checkpoint evaluates" "[ $? = 0 ] && grep -q 'model: dod stage 2' $T/s2.md && grep -q '^| derain | 1 |' $T/s2.md"
"$E" run --config "$T/stage2.ini" --checkpoint "$T/run" --data "$T/syn.h5" --tasks derain > /dev/null 2> "$T/e.txt"
check "a stage-1 checkpoint under a stage-2 configuration names a tensor" "[ $? = 1 ] && grep -q 'holds tensor unet.conv_in.weight' $T/e.txt"

# ---- bad inputs: named, counted, exit 1, no report files ----------------------------------------
"$E" run --config "$T/tiny.ini" --checkpoint "$T/run" --data "$S/tests/fixtures/eval/bad_pairs.h5" --crop-multiple 0 \
    --csv "$T/bad.csv" --json "$T/bad.json" --html "$T/bad_html" > "$T/bad.md" 2> "$T/bad.err"
check "bad pairs: exit 1" "[ $? = 1 ]"
check "bad pairs: the size mismatch is named with both sizes" "grep -q 'bad-size.*input 24x20 but ground truth 24x24' $T/bad.err"
check "bad pairs: the missing sample is named" "grep -q \"00000002.*/hq: name doesn't exist\" $T/bad.err"
check "bad pairs: the malformed image is named" "grep -q 'bad-rank.*not a uint8' $T/bad.err"
check "bad pairs: counted" "grep -q '3 of 5 images not scored (2 unreadable, 1 size mismatch)' $T/bad.err"
check "bad pairs: no CSV/JSON/HTML, stdout marked INCOMPLETE" "[ ! -e $T/bad.csv ] && [ ! -e $T/bad.json ] && [ ! -e $T/bad_html ] && grep -q INCOMPLETE $T/bad.md && grep -q '^| derain | 2/5 |' $T/bad.md"
check "bad pairs: no temp files left" "[ -z \"\$(ls $T | grep tmp)\" ]"

"$E" run --config "$T/tiny.ini" --checkpoint "$T/run" --data "$T/missing.h5" --csv "$T/x.csv" > "$T/o.md" 2> "$T/e.txt"
check "missing data file named, exit 1, nothing written" "[ $? = 1 ] && grep -q 'missing.h5' $T/e.txt && [ ! -s $T/o.md ] && [ ! -e $T/x.csv ]"
echo "not an hdf5 file" > "$T/junk.h5"
"$E" run --config "$T/tiny.ini" --checkpoint "$T/run" --data "$T/junk.h5" > /dev/null 2> "$T/e.txt"
check "unreadable data file named" "[ $? = 1 ] && grep -q 'junk.h5' $T/e.txt"
"$E" run --config "$T/tiny.ini" --checkpoint "$T/run" --data "$T/syn.h5" --tasks derain,nosuch > /dev/null 2> "$T/e.txt"
check "unknown task named" "[ $? = 1 ] && grep -q 'nosuch' $T/e.txt"
"$E" run --config "$T/tiny.ini" --checkpoint "$T/run" --data "$T/syn.h5" --set lora.rank=4 > /dev/null 2> "$T/e.txt"
check "checkpoint/config rank mismatch names the tensor" "[ $? = 1 ] && grep -q 'lora_A.weight' $T/e.txt"
"$E" run --config "$T/tiny.ini" --checkpoint "$T/nope" --data "$T/syn.h5" > /dev/null 2> "$T/e.txt"
check "missing checkpoint named" "[ $? = 1 ] && grep -q \"$T/nope\" $T/e.txt"
sed 's/^sigma = 25/sigma = 30/' "$S/configs/bench_aio5.ini" > "$T/wrong_sigma.ini"
"$E" run --bench "$T/wrong_sigma.ini" --data-dir "$T/bench" --config "$T/tiny.ini" --checkpoint "$T/run" > "$T/o.md" 2> "$T/e.txt"
check "benchmark sigma vs stored noise mismatch named, nothing run" "[ $? = 1 ] && grep -q 'holds noise of sigma 25, the benchmark says sigma 30' $T/e.txt && [ ! -s $T/o.md ]"
printf '[benchmark]\nname = x\ntasks = a\n[a]\nfile = f.h5\ntask = derain\ncolour = red\n' > "$T/bad_bench.ini"
"$E" run --bench "$T/bad_bench.ini" --config "$T/tiny.ini" --checkpoint "$T/run" > /dev/null 2> "$T/e.txt"
check "unknown benchmark key named with file and line" "[ $? = 1 ] && grep -q 'bad_bench.ini:7: \[a\] colour: unknown key' $T/e.txt"
"$E" run --bench "$S/configs/bench_aio3.ini" --data-dir "$T/nowhere" --config "$T/tiny.ini" --checkpoint "$T/run" > /dev/null 2> "$T/e.txt"
check "every missing benchmark file is listed" "[ $? = 1 ] && [ \$(grep -c 'nowhere/' $T/e.txt) -ge 5 ]"
"$E" run --config "$T/tiny.ini" --checkpoint "$T/run" --data "$T/syn.h5" --tile 16 --tile-overlap 16 > /dev/null 2> "$T/e.txt"
check "--tile-overlap not below --tile is a usage error" "[ $? = 2 ] && grep -q 'overlap 16' $T/e.txt"
"$E" run --config "$T/tiny.ini" --checkpoint "$T/run" --data "$T/syn.h5" --vae-tile 60 > /dev/null 2> "$T/e.txt"
check "--vae-tile not a multiple of 8 is a usage error" "[ $? = 2 ] && grep -q 'multiple of 8' $T/e.txt"
"$E" run --config "$T/tiny.ini" --data "$T/syn.h5" > /dev/null 2> "$T/e.txt"
check "missing --checkpoint is a usage error" "[ $? = 2 ]"

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
