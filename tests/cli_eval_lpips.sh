#!/usr/bin/env bash
# dod-eval with --lpips-vgg / --lpips-lin: `metrics` scores the fixture pairs (tests/fixtures/lpips/eval)
# as the lpips package does, to 1e-5 relative, with an LPIPS column in the table, CSV and JSON; `run`
# adds LPIPS to its Markdown, CSV and JSON reports, per image in the JSON, and agrees with `metrics` on
# its saved images; one flag without the other is a usage error. The VGG16 weights are the random
# stand-in of `dod-bench lpips_random_vgg` (seed 18, as the fixture). Usage: cli_eval_lpips.sh BUILD_DIR SOURCE_DIR
set -uo pipefail
B=$1 S=$2
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
E="$B/bin/dod-eval"
. "$S/tests/shell_lib.sh"
FIX=$S/tests/fixtures/lpips
"$B/bin/dod-bench" lpips_random_vgg "$T/vgg.safetensors"
LP=(--lpips-vgg "$T/vgg.safetensors" --lpips-lin "$FIX/vgg_lin_v0.1.pth")

# ---- metrics -----------------------------------------------------------------------------------------
"$E" metrics --pred "$FIX/eval/pred" --gt "$FIX/eval/gt" "${LP[@]}" --csv "$T/m.csv" --json "$T/m.json" > "$T/m.txt" 2> "$T/m.err"
check "metrics with LPIPS exits 0" "[ $? = 0 ]"
check "table has an LPIPS column and its average" "grep -qE '^name +PSNR +SSIM +LPIPS$' $T/m.txt && grep -qE '^average .*LPIPS VGG v0.1' $T/m.txt"
check "CSV header name,psnr,ssim,lpips" "head -1 $T/m.csv | grep -qx 'name,psnr,ssim,lpips'"
close() {  # every pair's CSV LPIPS within 1e-5 relative of the lpips package's; the average too
    awk -F'[, ]' 'NR == FNR { ref[$1] = $2; next } FNR == 1 { next }
        { d = ($4 - ref[$1]) / ref[$1]; if (d < 0) d = -d; if (!($1 in ref) || d > 1e-5) bad = 1; n++; s += $4 }
        END { exit bad || n != 3 }' "$FIX/eval/lpips_ref.txt" "$T/m.csv"
}
check "LPIPS per pair = the lpips package's, to 1e-5 relative" close
check "JSON has per-image lpips and mean_lpips" "[ \$(grep -c '\"lpips\":' $T/m.json) = 3 ] && grep -q '\"mean_lpips\":' $T/m.json"
"$E" metrics --pred "$FIX/eval/pred" --gt "$FIX/eval/gt" --lpips-vgg "$T/vgg.safetensors" > /dev/null 2> "$T/one.err"
check "--lpips-vgg alone: usage error" "[ $? = 2 ] && grep -q -- '--lpips-vgg and --lpips-lin go together' $T/one.err"
"$E" metrics --pred "$FIX/eval/pred" --gt "$FIX/eval/gt" --lpips-vgg /nonexistent/vgg.pth --lpips-lin "$FIX/vgg_lin_v0.1.pth" \
    > /dev/null 2> "$T/nf.err"
check "missing VGG file: exit 1 naming it" "[ $? = 1 ] && grep -q '/nonexistent/vgg.pth: cannot open' $T/nf.err"

# ---- run -----------------------------------------------------------------------------------------------
"$B/bin/dod-data" synth --clean "$S/tests/fixtures/data" --tasks noise,rain --sigma 25 --store-noisy --out "$T/syn.h5" \
    --seed 1 --quiet || { echo "FAIL: dod-data synth"; exit 1; }
tiny_dod_ini "$T/tiny.ini" "$T/syn.h5" "$T/run"
sed -i 's/^tasks = .*/tasks = derain:1,denoise:1/' "$T/tiny.ini"
printf '[model]\nfrozen_dtype = f32\n[train]\nsteps = 1\n' >> "$T/tiny.ini"
"$B/bin/dod-train" --config "$T/tiny.ini" --quiet > "$T/train.log" 2>&1 || { cat "$T/train.log"; echo "FAIL: dod-train"; exit 1; }
"$E" run --config "$T/tiny.ini" --checkpoint "$T/run" --data "$T/syn.h5" --tasks derain,denoise --max-images 2 \
    --crop-multiple 0 "${LP[@]}" --save-images "$T/out" --save-inputs --csv "$T/r.csv" --json "$T/r.json" > "$T/r.md" 2> "$T/r.err"
check "run with LPIPS exits 0" "[ $? = 0 ]"
check "Markdown: LPIPS column per set and in the average" "grep -q '^| set | images | PSNR | SSIM | LPIPS |' $T/r.md && grep -qE '^\| derain \| 2 \| [0-9.]+ \| [0-9.]+ \| 0\.[0-9]{6} \|' $T/r.md && grep -qE '^\| \*\*average\*\* \| 4 \| [0-9.]+ \| [0-9.]+ \| 0\.[0-9]{6} \|' $T/r.md"
check "CSV: lpips column" "head -1 $T/r.csv | grep -q ',lpips$' && grep -qE '^average,.*,[0-9.e-]+$' $T/r.csv"
check "JSON: lpips per image (4), per set (2) and average" "[ \$(grep -c '\"lpips\":' $T/r.json) = 7 ]"
"$E" run --config "$T/tiny.ini" --checkpoint "$T/run" --data "$T/syn.h5" --tasks derain,denoise --max-images 2 \
    --crop-multiple 0 "${LP[@]}" --html "$T/html" > /dev/null 2>&1
check "HTML: LPIPS column in the summary and in each set's table" \
    "[ \$(grep -o '<th>LPIPS</th>' $T/html/index.html | wc -l) = 3 ] && [ \$(grep -c 'class=\"sortable images\"' $T/html/index.html) = 2 ]"
"$E" run --config "$T/tiny.ini" --checkpoint "$T/run" --data "$T/syn.h5" --tasks derain --max-images 2 --crop-multiple 0 \
    > "$T/plain.md" 2>/dev/null
check "without the flags the reports have no LPIPS column" "grep -q '^| set | images | PSNR | SSIM | s/image |' $T/plain.md"
# The run scores its float output; the saved 8-bit PNGs score within 1e-3 of it.
"$E" metrics --pred "$T/out/derain/restored" --gt "$T/out/derain/gt" "${LP[@]}" --csv "$T/saved.csv" > /dev/null 2>&1
check "run vs metrics on the saved images: LPIPS within 1e-3" "awk -F, 'NR == FNR { if (FNR > 1) { s += \$4; n++ } next }
    \$1 == \"derain\" { d = s / n - \$NF; ok = n == 2 && d < 1e-3 && d > -1e-3 } END { exit !ok }' $T/saved.csv $T/r.csv"
echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
