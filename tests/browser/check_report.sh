#!/usr/bin/env bash
# The HTML report of `dod-eval run --html` in a real browser (headless Chromium, Debian's `chromium`):
# a report of the tiny fixture model (2 DOD steps on tests/fixtures/sd/sd2_tiny, three tasks of the
# photo fixtures) is loaded, its DOM after the scripts ran is checked (summary rows per set and the
# average, 5 image rows per set, every slider), a harness page drives it (sorting by PSNR both ways,
# moving a slider, switching the compared pair, images decoded), and a screenshot is taken.
# Not part of ctest (installing a browser in CI costs minutes); tests/cli_eval_run.sh checks the
# page's structure without one.
# Usage: bash tests/browser/check_report.sh [BUILD_DIR] [OUT_DIR]    (OUT_DIR keeps report + screenshot)
set -uo pipefail
S=$(cd "$(dirname "$0")/../.." && pwd)
B=${1:-$S/build}
OUT=${2:-$(mktemp -d /tmp/dod_report_check_XXXXXX)}
mkdir -p "$OUT"
. "$S/tests/shell_lib.sh"
BROWSER=$(command -v chromium || command -v chromium-browser || true)
[ -n "$BROWSER" ] || { echo "check_report.sh: no chromium (Debian: apt-get install chromium)"; exit 1; }
run_browser() { "$BROWSER" --headless --no-sandbox --disable-gpu --hide-scrollbars --allow-file-access-from-files \
    --virtual-time-budget=8000 "$@" 2> "$OUT/browser.err"; }

# ---- a report of the fixture model ------------------------------------------------------------------
rm -rf "$OUT/syn.h5" "$OUT/run" "$OUT/report"   # OUT may hold an earlier check's
tiny_dod_data "$B" "$OUT/syn.h5" || { echo "FAIL: dod-data synth"; exit 1; }
tiny_dod_ini "$OUT/tiny.ini" "$OUT/syn.h5" "$OUT/run"
printf '[model]\nfrozen_dtype = f32\n[train]\nsteps = 2\n' >> "$OUT/tiny.ini"
"$B/bin/dod-train" --config "$OUT/tiny.ini" --quiet > "$OUT/train.log" 2>&1 || { cat "$OUT/train.log"; echo "FAIL: dod-train"; exit 1; }
"$B/bin/dod-eval" run --config "$OUT/tiny.ini" --checkpoint "$OUT/run" --data "$OUT/syn.h5" --tasks denoise,derain,dehaze \
    --html "$OUT/report" > "$OUT/report.md" 2> "$OUT/eval.err"
check "dod-eval run --html exits 0" "[ $? = 0 ]"

# ---- the page as the browser built it --------------------------------------------------------------
run_browser --dump-dom "file://$OUT/report/index.html" > "$OUT/dom.html"
check "the DOM has a summary row per set" "grep -c '<tr data-set=\"' '$OUT/dom.html' | grep -qx 3"
check "the DOM has the average row" "grep -q '<tr class=\"average\"><td>average</td><td class=\"num\">15</td>' '$OUT/dom.html'"
check "the DOM has 15 image rows with a slider each" "[ \$(grep -o '<tr data-image=' '$OUT/dom.html' | wc -l) = 15 ] && [ \$(grep -o 'type=\"range\"' '$OUT/dom.html' | wc -l) = 15 ]"

# ---- driven by a harness page (same file origin: --allow-file-access-from-files) --------------------
cat > "$OUT/harness.html" <<'HTML'
<!DOCTYPE html><html><body><pre id="out">not run</pre>
<iframe id="f" src="report/index.html" width="1280" height="900"></iframe>
<script>
document.getElementById('f').addEventListener('load', function () {
  var d = this.contentDocument, out = [];
  var table = d.querySelectorAll('table.images')[0], th = table.tHead.rows[0].cells[4];
  function column() { return Array.prototype.map.call(table.tBodies[0].rows, function (r) { return parseFloat(r.cells[4].getAttribute('data-v')); }); }
  function ordered(v, sign) { for (var i = 1; i < v.length; i++) if (sign * (v[i] - v[i - 1]) < 0) return false; return true; }
  th.click();
  out.push('psnr ascending ' + ordered(column(), 1) + ' ' + th.getAttribute('aria-sort'));
  th.click();
  out.push('psnr descending ' + ordered(column(), -1) + ' ' + th.getAttribute('aria-sort'));
  var slider = d.querySelector('.cmp input');
  slider.value = 20;
  slider.dispatchEvent(new Event('input'));
  out.push('slider ' + slider.parentNode.style.getPropertyValue('--pos'));
  var select = d.getElementById('pair');
  select.value = 'restored-gt';
  select.dispatchEvent(new Event('change'));
  var cmp = d.querySelector('.cmp');
  out.push('pair ' + cmp.querySelector('img.left').getAttribute('src') + ' | ' + cmp.querySelector('img.right').getAttribute('src') + ' | ' + cmp.querySelector('.lab-right').textContent);
  var imgs = d.querySelectorAll('#summary ~ section img'), loaded = 0;
  setTimeout(function () {
    Array.prototype.forEach.call(d.querySelectorAll('img'), function (im) { if (im.complete && im.naturalWidth > 0) loaded++; });
    out.push('images decoded ' + loaded + ' of ' + imgs.length);
    document.getElementById('out').textContent = out.join('\n');
  }, 2000);
});
</script></body></html>
HTML
run_browser --dump-dom "file://$OUT/harness.html" > "$OUT/harness_dom.html"
sed -n '/<pre id="out">/,/<\/pre>/p' "$OUT/harness_dom.html" | sed 's/<[^>]*>//g' > "$OUT/harness.txt"
check "sorting by PSNR, ascending" "grep -q '^psnr ascending true ascending$' '$OUT/harness.txt'"
check "sorting by PSNR again, descending" "grep -q '^psnr descending true descending$' '$OUT/harness.txt'"
check "the slider moves the split" "grep -q '^slider 20%$' '$OUT/harness.txt'"
check "the pair selector switches both images" "grep -Eq '^pair [a-z]+/restored/[a-z]+\.png \| [a-z]+/gt/[a-z]+\.png \| ground truth$' '$OUT/harness.txt'"
check "the images decode (lazy ones included once scrolled: at least the first rows)" "grep -Eq '^images decoded ([6-9]|[1-9][0-9]) of 30$' '$OUT/harness.txt'"

# ---- a screenshot to look at ------------------------------------------------------------------------
run_browser --window-size=1280,1400 --screenshot="$OUT/report.png" "file://$OUT/report/index.html" > /dev/null
check "screenshot written" "[ -s '$OUT/report.png' ]"
[ "$fail" = 0 ] || { echo "harness said:"; cat "$OUT/harness.txt"; }
echo "check_report.sh: report $OUT/report/index.html, screenshot $OUT/report.png"
echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
