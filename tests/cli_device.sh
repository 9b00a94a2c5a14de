#!/usr/bin/env bash
# The --device flags of dod-parity and dod-bench train, and dod-train's [model] device. Without a usable GPU (this machine, or a build
# without nvcc) --device cuda must fail before doing any work, exit non-zero and say
# "no CUDA device: <reason>"; with one, it must run and pass like the CPU path. The CPU side of
# `dod-bench train --base DIR [--random-weights]` runs on the tiny base (configs/tiny_base).
# Usage: bash tests/cli_device.sh BUILD_DIR SOURCE_DIR
set -u
BUILD=${1:?build dir}
SRC=${2:?source dir}
PARITY="$BUILD/bin/dod-parity"
BENCH="$BUILD/bin/dod-bench"
TRAIN="$BUILD/bin/dod-train"
DATA="$BUILD/bin/dod-data"
. "$SRC/tests/shell_lib.sh"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}

for tool in "$PARITY" "$BENCH" "$TRAIN" "$DATA"; do
    [ -x "$tool" ] || { echo "FAIL: $tool not built" >&2; echo "0 passed, 1 failed"; exit 1; }
done
FIX="$SRC/tests/fixtures/sd/sd2_tiny"
BASE="$SRC/configs/tiny_base"

# dod-parity --device cuda: exactly "no CUDA device: <reason>" without a GPU, 4 OK lines with one.
if "$PARITY" "$FIX" --device cuda >"$TMP/out" 2>&1; then
    if [ "$(grep -c ' OK$' "$TMP/out")" -eq 4 ]; then ok; else bad "parity on cuda: expected 4 OK lines"; cat "$TMP/out"; fi
else
    if grep -qE "dod-parity: no CUDA device: .+" "$TMP/out" && ! grep -q "fixture " "$TMP/out"; then ok; else
        bad "dod-parity --device cuda failed without the no-device message (or after starting work)"; cat "$TMP/out"
    fi
fi
cat "$TMP/out"
# --device cpu is the default path; a bad device name is refused naming it.
"$PARITY" "$FIX" --device cpu >"$TMP/out" 2>&1 && [ "$(grep -c ' OK$' "$TMP/out")" -eq 4 ] && ok ||
    { bad "dod-parity --device cpu"; cat "$TMP/out"; }
if "$PARITY" "$FIX" --device tpu >"$TMP/out" 2>&1; then bad "--device tpu accepted"; else
    grep -q -- "--device tpu: expected cpu or cuda" "$TMP/out" && ok || { bad "--device tpu: message"; cat "$TMP/out"; }
fi

# dod-bench train on the CPU with a --base: the spec-sized model on the tiny base, loaded and random.
for extra in "" "--random-weights"; do
    if "$BENCH" train --base "$BASE" $extra --batch 1 --crop 16 --iters 1 --no-torch >"$TMP/out" 2>&1 &&
        grep -qE "^ours: +[0-9.]+ ms +\(loss [0-9.]+\)" "$TMP/out" && grep -q "base $BASE" "$TMP/out" &&
        grep -q "torch:   NOT RUN" "$TMP/out"; then
        ok
    else
        bad "dod-bench train --base $extra on the CPU"; cat "$TMP/out"
    fi
done
# DOD_PROFILE=1: the per-op table at exit, with the convolutions' forward and backward rows and their
# FLOPs and rate (GFLOP, GFLOP/s; no % of peak on the CPU), and the FLOP summary by kind.
if DOD_PROFILE=1 "$BENCH" train --iters 1 --no-torch >"$TMP/out" 2>&1 && grep -q "^dod: op profile (DOD_PROFILE): [0-9.]* ms in ops" "$TMP/out" &&
    grep -qE "^  op_conv2d +fwd +[0-9]+ +[0-9.]+ +[0-9.]+% +-?[0-9.]+ +[0-9.]+ +[0-9.]+$" "$TMP/out" &&
    grep -qE "^  op_conv2d +bwd " "$TMP/out" && grep -qE "^  over the op time: [0-9.]+ GFLOP/s" "$TMP/out" &&
    grep -qE "^    convolution +[0-9.]+% of op time +[0-9.]+ GFLOP/s$" "$TMP/out"; then ok; else
    bad "DOD_PROFILE=1 dod-bench train: no op profile table with FLOPs"; cat "$TMP/out"
fi
# The step's FLOPs and rate (GFLOP/s on the CPU, no MFU without a known peak; with DOD_PEAK_TFLOPS, MFU).
if "$BENCH" train --iters 1 --no-torch >"$TMP/out" 2>&1 &&
    grep -qE "^ours FLOPs per step: [0-9.]+ GFLOP model \(forward [0-9.]+, backward [0-9.]+\)" "$TMP/out" &&
    grep -qE "^ours rate: [0-9.]+ GFLOP/s.*no MFU" "$TMP/out" &&
    DOD_PEAK_TFLOPS=1 "$BENCH" train --iters 1 --no-torch >"$TMP/out" 2>&1 && grep -qE "^ours rate: [0-9.]+ GFLOP/s, MFU [0-9.]+%" "$TMP/out"; then ok; else
    bad "dod-bench train: no FLOP / MFU lines"; cat "$TMP/out"
fi
if "$BENCH" train --iters 1 --no-torch >"$TMP/out" 2>&1 && ! grep -q "op profile" "$TMP/out"; then ok; else
    bad "op profile printed without DOD_PROFILE"; cat "$TMP/out"
fi
if "$BENCH" train --precision mixed >"$TMP/out" 2>&1; then bad "--precision mixed on the CPU accepted"; else
    grep -q -- "--precision mixed: a CUDA mode" "$TMP/out" && ok || { bad "--precision mixed on the CPU: message"; cat "$TMP/out"; }
fi
if "$BENCH" train --random-weights >"$TMP/out" 2>&1; then bad "--random-weights without --base accepted"; else
    grep -q "needs --base" "$TMP/out" && ok || { bad "--random-weights without --base: message"; cat "$TMP/out"; }
fi
# --device cuda: the no-device message before any model is built (or, on a GPU, a finite step).
if "$BENCH" train --device cuda --base "$BASE" --random-weights --batch 1 --crop 16 --iters 1 --no-torch >"$TMP/out" 2>&1; then
    grep -qE "^ours: +[0-9.]+ ms" "$TMP/out" && grep -q "ours peak memory" "$TMP/out" && ok ||
        { bad "dod-bench train --device cuda ran but printed no time/memory"; cat "$TMP/out"; }
else
    if grep -qE "dod-bench train: no CUDA device: .+" "$TMP/out" && ! grep -q "dod train step" "$TMP/out"; then ok; else
        bad "dod-bench train --device cuda failed without the no-device message"; cat "$TMP/out"
    fi
fi
cat "$TMP/out"

# dod-train [model] device (toy model; skipped in a build without iniparser).
if "$TRAIN" --config-reference >/dev/null 2>&1; then
    TOY=(--config "$SRC/configs/toy.ini" --set loss.ssim=0)
    # a bad value names the key and where it came from: the override, or the file and line
    if "$TRAIN" "${TOY[@]}" --set model.device=tpu --print-config >"$TMP/out" 2>&1; then bad "model.device=tpu accepted"; else
        grep -q -- "^--set model.device=tpu: \[model\] device: 'tpu' is not one of cpu|cuda" "$TMP/out" && ok ||
            { bad "model.device=tpu: message"; cat "$TMP/out"; }
    fi
    printf '[model]\nkind = toy\ndevice = tpu\n' >"$TMP/dev.ini"
    if "$TRAIN" --config "$TMP/dev.ini" --print-config >"$TMP/out" 2>&1; then bad "device = tpu in a file accepted"; else
        grep -q "dev.ini:3: \[model\] device: 'tpu' is not one of cpu|cuda" "$TMP/out" && ok ||
            { bad "device = tpu in a file: message"; cat "$TMP/out"; }
    fi
    # cuda with an SSIM loss weight is a valid configuration (op_ssim has a CUDA kernel)
    "$TRAIN" --config "$SRC/configs/toy.ini" --set model.device=cuda --print-config >"$TMP/out" 2>&1 &&
        grep -q "^ssim = " "$TMP/out" && ok || { bad "device = cuda with loss.ssim > 0 refused"; cat "$TMP/out"; }
    "$TRAIN" "${TOY[@]}" --set model.device=cuda --print-config >"$TMP/out" 2>&1 && grep -q "^device = cuda$" "$TMP/out" &&
        ok || { bad "--print-config with device = cuda"; cat "$TMP/out"; }
    if "$TRAIN" "${TOY[@]}" --set model.precision=mixed --print-config >"$TMP/out" 2>&1; then bad "mixed on the CPU accepted"; else
        grep -q "\[model\] precision: mixed precision is a CUDA mode: set \[model\] device = cuda" "$TMP/out" && ok ||
            { bad "model.precision=mixed on the CPU: message"; cat "$TMP/out"; }
    fi
    # a real run: "no CUDA device: <reason>", exit 1, nothing written; with a GPU, 3 steps and a checkpoint
    if "$DATA" synth --clean "$SRC/tests/fixtures/data" --tasks noise,haze --out "$TMP/d.h5" --seed 3 --quiet >"$TMP/out" 2>&1; then
        "$TRAIN" "${TOY[@]}" --set model.device=cuda --set "data.train=$TMP/d.h5" --set "data.val=$TMP/d.h5" \
            --set data.tasks=dehaze:2,denoise:1 --set train.steps=3 --set val.every=3 --run-dir "$TMP/run" >"$TMP/out" 2>&1
        rc=$?
        if [ "$rc" -eq 0 ]; then
            grep -q "step 3/3 | loss [0-9.]* mse" "$TMP/out" && [ -f "$TMP/run/checkpoints/step_0000003.safetensors" ] &&
                grep -q "dod-train: cuda memory peak reserved" "$TMP/out" && grep -q "f32 precision (TF32 off)" "$TMP/out" && ok ||
                { bad "dod-train on cuda ran without its step line, checkpoint or memory report"; cat "$TMP/out"; }
            # the same run in mixed precision (the toy model's weights are f32: TF32 products)
            "$TRAIN" "${TOY[@]}" --set model.device=cuda --set model.precision=mixed --set "data.train=$TMP/d.h5" \
                --set data.tasks=dehaze:2,denoise:1 --set train.steps=3 --run-dir "$TMP/run_mixed" >"$TMP/out" 2>&1 &&
                grep -q "step 3/3 | loss [0-9.]* mse" "$TMP/out" && grep -q ", mixed precision" "$TMP/out" && ok ||
                { bad "dod-train on cuda, mixed precision"; cat "$TMP/out"; }
        elif [ "$rc" -eq 1 ] && grep -qE "^dod-train: no CUDA device: .+ \(\[model\] device = cuda, --set model.device=cuda\)$" "$TMP/out" &&
            [ ! -e "$TMP/run" ]; then
            ok
        else
            bad "dod-train model.device=cuda: exit $rc without the no-device message (or after writing $TMP/run)"; cat "$TMP/out"
        fi
        cat "$TMP/out"
    else
        bad "dod-data synth"; cat "$TMP/out"
    fi
fi

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
