#!/usr/bin/env bash
# dod-parity on every committed SD fixture (tests/fixtures/sd/*/ with io.safetensors), plus its
# error behaviour. Usage: bash tests/cli_parity.sh BUILD_DIR SOURCE_DIR
set -u
BUILD=${1:?build dir}
SRC=${2:?source dir}
TOOL="$BUILD/bin/dod-parity"
. "$SRC/tests/shell_lib.sh"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

[ -x "$TOOL" ] || { echo "FAIL: $TOOL not built" >&2; echo "0 passed, 1 failed"; exit 1; }

n_fix=0
for fix in "$SRC"/tests/fixtures/sd/*/; do
    fix=${fix%/}
    [ -f "$fix/io.safetensors" ] || continue
    n_fix=$((n_fix + 1))
    if "$TOOL" "$fix" >"$TMP/out" 2>&1; then
        # one OK line per output, nothing else judged
        if [ "$(grep -c ' OK$' "$TMP/out")" -eq 4 ]; then ok; else bad "$fix: expected 4 OK lines"; cat "$TMP/out"; fi
    else
        bad "$fix: dod-parity exited non-zero"
        cat "$TMP/out"
    fi
    cat "$TMP/out"
    # The same weights from the original single-file checkpoint (LDM names), when the fixture has one.
    # It may store them in f16 (then reported as INFO): a wrong name mapping gives O(1) errors, f16
    # rounding about 1e-3 of max|ref|, so max_rel must stay under 1e-2.
    if [ -f "$fix/ldm.safetensors" ]; then
        if "$TOOL" "$fix" --ckpt "$fix/ldm.safetensors" >"$TMP/out" 2>&1 &&
            [ "$(grep -cE ' (OK|INFO)$' "$TMP/out")" -eq 4 ] &&
            awk '/max_rel/ { if ($5 + 0 >= 1e-2) bad = 1 } END { exit bad }' "$TMP/out"; then
            ok
        else
            bad "$fix --ckpt ldm.safetensors"
            cat "$TMP/out"
        fi
    fi
done
[ "$n_fix" -gt 0 ] && ok || bad "no fixtures with io.safetensors under $SRC/tests/fixtures/sd"

# Sizes that do not divide evenly (UNet up sampler resizing 5x4 -> 9x7, VAE 20x28 image) on sd1_tiny.
odd="$SRC/tests/fixtures/sd_forward/sd1_tiny_oddsize.io.safetensors"
if "$TOOL" "$SRC/tests/fixtures/sd/sd1_tiny" --io "$odd" >"$TMP/out" 2>&1 && [ "$(grep -c ' OK$' "$TMP/out")" -eq 4 ]; then
    ok
else
    bad "odd sizes ($odd)"
fi
cat "$TMP/out"

# Half-precision weights: information only, exit 0, INFO lines.
first=$(ls -d "$SRC"/tests/fixtures/sd/*/ | head -1)
first=$(cd "$first" && pwd)
if "$TOOL" "$first" --dtype bf16 >"$TMP/bf16" 2>&1 && [ "$(grep -c ' INFO$' "$TMP/bf16")" -eq 4 ]; then
    ok
else
    bad "--dtype bf16 on $first"
    cat "$TMP/bf16"
fi

# Missing fixture directory: non-zero exit naming the io file.
if "$TOOL" "$TMP/nowhere" >"$TMP/err" 2>&1; then bad "missing fixture accepted"; else
    grep -q "nowhere/io.safetensors" "$TMP/err" && ok || { bad "missing fixture: message does not name the file"; cat "$TMP/err"; }
fi

# An io file without the reference tensors: the error names the file and the tensor.
mkdir -p "$TMP/empty"
ln -s "$first/model" "$TMP/empty/model"
printf '\x08\x00\x00\x00\x00\x00\x00\x00{}      ' >"$TMP/empty/io.safetensors"
if "$TOOL" "$TMP/empty" >"$TMP/err" 2>&1; then bad "io file without tensors accepted"; else
    grep -q "empty/io.safetensors: tensor unet.sample is missing" "$TMP/err" && ok ||
        { bad "missing tensor: message does not name file and tensor"; cat "$TMP/err"; }
fi

# Unknown option: usage and non-zero exit.
if "$TOOL" "$first" --bogus >"$TMP/err" 2>&1; then bad "--bogus accepted"; else ok; fi

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
