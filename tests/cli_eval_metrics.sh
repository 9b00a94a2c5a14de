#!/usr/bin/env bash
# dod-eval metrics on tests/fixtures/metrics: numbers against scikit-image / the BasicSR port
# (scripts/make_metric_fixtures.py), reports, and every failure path's exit code and message.
# Usage: bash tests/cli_eval_metrics.sh BUILD_DIR SOURCE_DIR
set -u
BUILD=${1:?build dir}
SRC=${2:?source dir}
EVAL="$BUILD/bin/dod-eval"
FIX="$SRC/tests/fixtures/metrics"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
passed=0
failed=0
ok() { passed=$((passed + 1)); }
fail() { failed=$((failed + 1)); echo "FAIL: $*" >&2; }
# expect_rc WANT DESCRIPTION -- command...   (stdout -> $TMP/out, stderr -> $TMP/err)
expect_rc() {
    local want=$1 what=$2
    shift 3
    "$@" >"$TMP/out" 2>"$TMP/err"
    local rc=$?
    if [ "$rc" -eq "$want" ]; then ok; else fail "$what: exit $rc, want $want"; cat "$TMP/err" >&2; fi
}
expect_in() {  # expect_in FILE TEXT DESCRIPTION
    if grep -qF -- "$2" "$1"; then ok; else fail "$3: '$2' not in $(basename "$1"):"; cat "$1" >&2; fi
}
# Printed rows vs the full-precision reference rows: |printed - reference| within half a unit of
# the printed last digit (PSNR 4 decimals, SSIM 6) plus 1e-7.
compare_rows() {  # compare_rows REFERENCE DESCRIPTION
    if awk -v what="$2" '
        NR == FNR { psnr[$1] = $2; ssim[$1] = $3; n++; next }
        $1 in psnr {
            seen++
            dp = $2 - psnr[$1]; ds = $3 - ssim[$1]
            if (dp < 0) dp = -dp
            if (ds < 0) ds = -ds
            if (dp > 0.00005 + 1e-7 || ds > 0.0000005 + 1e-7) {
                printf "%s: %s printed %s %s, reference %s %s\n", what, $1, $2, $3, psnr[$1], ssim[$1] > "/dev/stderr"
                bad++
            }
        }
        END { if (seen != n) { printf "%s: %d of %d rows printed\n", what, seen, n > "/dev/stderr"; bad++ }
              exit bad ? 1 : 0 }' "$1" "$TMP/out"; then ok; else fail "$2"; fi
}

[ -x "$EVAL" ] || { echo "FAIL: $EVAL not built" >&2; exit 1; }

# 1. good runs: rows match the references, reports written
expect_rc 0 "promptir run" -- "$EVAL" metrics --pred "$FIX/pred_noise" --gt "$FIX/gt" --json "$TMP/r.json" --csv "$TMP/r.csv"
compare_rows "$FIX/cli_noise_promptir.txt" "promptir rows"
expect_in "$TMP/out" "average" "promptir average row"
expect_in "$TMP/out" "(4 images; promptir, RGB, crop-border 0, crop-multiple 0)" "promptir options echoed"
expect_in "$TMP/r.json" '"count":	4' "json count"
expect_in "$TMP/r.json" '"profile":	"promptir"' "json profile"
expect_in "$TMP/r.csv" "name,psnr,ssim" "csv header"
[ "$(wc -l < "$TMP/r.csv")" -eq 5 ] && ok || fail "csv has $(wc -l < "$TMP/r.csv") lines, want 5"
ls "$TMP" | grep -q '\.tmp\.' && fail "temp report files left behind" || ok

expect_rc 0 "basicsr Y run" -- "$EVAL" metrics --pred "$FIX/pred_noise" --gt "$FIX/gt" --profile basicsr --y-channel --crop-border 4
compare_rows "$FIX/cli_noise_basicsr_y4.txt" "basicsr Y crop-border 4 rows"

# 2. identical images: PSNR inf, printed and reported as inf
expect_rc 0 "identical" -- "$EVAL" metrics --pred "$FIX/gt" --gt "$FIX/gt" --json "$TMP/same.json"
expect_in "$TMP/out" "inf  1.000000" "identical row"
expect_in "$TMP/same.json" '"psnr":	"inf"' "identical json"

# 3. a missing prediction: named, counted, exit 1, an existing report left untouched
mkdir -p "$TMP/missing"
cp "$FIX/pred_noise/astronaut.png" "$FIX/pred_noise/chelsea.png" "$FIX/pred_noise/rocket.png" "$TMP/missing/"
echo old > "$TMP/keep.json"
expect_rc 1 "missing pair" -- "$EVAL" metrics --pred "$TMP/missing" --gt "$FIX/gt" --json "$TMP/keep.json"
expect_in "$TMP/err" "no prediction for coffee" "missing pair named"
expect_in "$TMP/err" "1 of 4 pairs not scored (1 missing prediction)" "missing pair counted"
expect_in "$TMP/err" "no report file was written" "missing pair: no report"
[ "$(cat "$TMP/keep.json")" = old ] && ok || fail "report overwritten after a failed run"
[ "$(grep -c '^[a-z]' "$TMP/out")" -eq 5 ] && ok || fail "want header, 3 rows and the average"

# 4. size mismatch: both files and both sizes named; crop-multiple 16 reconciles them
mkdir -p "$TMP/mixed"
cp "$FIX/pred_noise/astronaut.png" "$FIX/pred_noise/coffee.png" "$FIX/pred_noise/rocket.png" "$TMP/mixed/"
cp "$FIX/pred_cropped/chelsea.png" "$TMP/mixed/"
expect_rc 1 "size mismatch" -- "$EVAL" metrics --pred "$TMP/mixed" --gt "$FIX/gt" --csv "$TMP/mixed.csv"
expect_in "$TMP/err" "mixed/chelsea.png vs $FIX/gt/chelsea.png: size mismatch: pred 96x80 vs gt 97x81" "mismatch named"
expect_in "$TMP/err" "1 size mismatch" "mismatch counted"
[ -e "$TMP/mixed.csv" ] && fail "csv written after a failed run" || ok
expect_rc 0 "crop-multiple" -- "$EVAL" metrics --pred "$TMP/mixed" --gt "$FIX/gt" --crop-multiple 16

# 5. unreadable image and a prediction without ground truth
mkdir -p "$TMP/broken"
cp "$FIX/pred_noise/"*.png "$TMP/broken/"
echo "not a png" > "$TMP/broken/rocket.png"
cp "$FIX/pred_noise/coffee.png" "$TMP/broken/extra.png"
expect_rc 1 "broken" -- "$EVAL" metrics --pred "$TMP/broken" --gt "$FIX/gt"
expect_in "$TMP/err" "broken/rocket.png: cannot decode image" "unreadable named"
expect_in "$TMP/err" "broken/extra.png: no ground truth" "extra prediction named"
expect_in "$TMP/err" "2 of 5 pairs not scored (1 prediction without ground truth, 1 unreadable)" "problems counted"

# 6. usage errors: exit 2 with a message
expect_rc 2 "bad flag" -- "$EVAL" metrics --pred "$FIX/pred_noise" --gt "$FIX/gt" --frobnicate
expect_in "$TMP/err" "unknown option '--frobnicate'" "bad flag named"
expect_rc 2 "bad profile" -- "$EVAL" metrics --pred "$FIX/pred_noise" --gt "$FIX/gt" --profile matlab
expect_in "$TMP/err" "unknown --profile 'matlab'" "bad profile named"
expect_rc 2 "bad number" -- "$EVAL" metrics --pred "$FIX/pred_noise" --gt "$FIX/gt" --crop-border -3
expect_in "$TMP/err" "--crop-border needs a non-negative integer, got '-3'" "bad number named"
expect_rc 2 "Y with promptir" -- "$EVAL" metrics --pred "$FIX/pred_noise" --gt "$FIX/gt" --y-channel
expect_in "$TMP/err" "--y-channel needs --profile basicsr" "Y with promptir explained"
expect_rc 2 "no dirs" -- "$EVAL" metrics
expect_rc 1 "crop-border too big" -- "$EVAL" metrics --pred "$FIX/pred_noise" --gt "$FIX/gt" --crop-border 45
expect_in "$TMP/err" "minus crop-border 45 leaves" "crop-border too big explained"
expect_rc 1 "no such dir" -- "$EVAL" metrics --pred "$TMP/nope" --gt "$FIX/gt"
expect_in "$TMP/err" "$TMP/nope: cannot read directory" "missing dir named"
expect_rc 0 "help" -- "$EVAL" metrics --help
expect_in "$TMP/out" "--crop-multiple N" "help text"
expect_rc 2 "unknown subcommand" -- "$EVAL" frobnicate
expect_in "$TMP/err" "unknown subcommand 'frobnicate'" "subcommand named"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
