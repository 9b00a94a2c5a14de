#!/usr/bin/env bash
# dod-train from the command line with the toy model: help, the generated config reference being
# current, a short run and its run dir, resume with more steps, Ctrl-C (SIGINT) saving a checkpoint
# and exiting 130, and the error messages (bad keys/values with file:line, bad overrides, resume
# without checkpoints, the dod kind before it is wired).
# Usage: bash tests/cli_train.sh BUILD_DIR SOURCE_DIR
set -u
B=$1; S=$2
TRAIN=$B/bin/dod-train; DATA=$B/bin/dod-data
T=$(mktemp -d /tmp/dod_cli_train_XXXXXX); trap 'rm -rf "$T"' EXIT
pass=0; fail=0
ok()   { pass=$((pass + 1)); }
bad()  { fail=$((fail + 1)); echo "FAIL: $*" >&2; }
# expect NAME RC PATTERN -- command...: exit status RC and stderr+stdout matching PATTERN (grep -E)
expect() {
  local name=$1 want=$2 pat=$3; shift 4
  "$@" > "$T/out.txt" 2>&1; local rc=$?
  if [ "$rc" != "$want" ]; then bad "$name: exit $rc, expected $want"; sed 's/^/    /' "$T/out.txt" | tail -8 >&2; return; fi
  if [ -n "$pat" ] && ! grep -qE -- "$pat" "$T/out.txt"; then bad "$name: output lacks /$pat/"; sed 's/^/    /' "$T/out.txt" | tail -8 >&2; return; fi
  ok
}

if [ ! -x "$TRAIN" ]; then echo "dod-train not built"; exit 1; fi
if ! "$TRAIN" --config-reference > /dev/null 2>&1; then
  echo "0 passed, 0 failed (dod-train built without iniparser: skipped)"; exit 0
fi
expect help 0 "--resume RUN_DIR" -- "$TRAIN" --help
"$TRAIN" --config-reference > "$T/ref.md"
if cmp -s "$T/ref.md" "$S/docs/config-reference.md"; then ok; else bad "docs/config-reference.md is stale: regenerate with dod-train --config-reference > docs/config-reference.md"; fi
expect no-config 2 "give --config" -- "$TRAIN"
expect unknown-flag 2 "unknown argument" -- "$TRAIN" --frobnicate
printf '[model]\nkind = toy\n[optim]\nlr = 1e-4\nlearning_rate = 1\n' > "$T/bad.ini"
expect bad-key 1 "bad.ini:5: \[optim\] learning_rate: unknown key" -- "$TRAIN" --config "$T/bad.ini" --print-config
printf '[data]\ncrop = big\n' > "$T/bad2.ini"
expect bad-value 1 "bad2.ini:2: \[data\] crop: expected an integer, got 'big'" -- "$TRAIN" --config "$T/bad2.ini"
expect bad-set 1 "^--set optim.beta1=2: \[optim\] beta1: 2 is out of range" -- "$TRAIN" --config "$S/configs/toy.ini" --set optim.beta1=2
expect lpips 1 "lpips: a non-zero LPIPS weight needs \[loss\] lpips_vgg" -- "$TRAIN" --config "$S/configs/toy.ini" --set loss.lpips=5
expect print-config 0 "^lr = 5e-05$" -- "$TRAIN" --config "$S/configs/aio3.ini" --print-config
expect print-set 0 "^steps = 77$" -- "$TRAIN" --config "$S/configs/aio5.ini" --set train.steps=77 --print-config

# data: three tasks synthesised from the real-photo fixtures
if [ -x "$DATA" ] && "$DATA" synth --clean "$S/tests/fixtures/data" --tasks noise,rain,haze --out "$T/d.h5" --seed 3 --quiet > "$T/synth.txt" 2>&1; then
  ok
  COMMON=(--config "$S/configs/toy.ini" --set "data.train=$T/d.h5" --set "data.val=$T/d.h5"
          --set data.tasks=dehaze:2,derain:1,denoise:1)
  expect train 0 "step 6/6 \| loss [0-9.]+ mse" -- "$TRAIN" "${COMMON[@]}" --set train.steps=6 --run-dir "$T/run"
  for f in config.ini metrics.jsonl checkpoints/step_0000006.safetensors samples/step_0000006.png; do
    if [ -f "$T/run/$f" ]; then ok; else bad "run dir lacks $f"; fi
  done
  if ls "$T"/run/tb/events.out.tfevents.* > /dev/null 2>&1; then ok; else bad "run dir lacks tb/events.out.tfevents.*"; fi
  # the progress line names only the loss terms that are on; [log] tensorboard = false writes no tb/
  expect terms-on 0 "step 2/2 \| loss [0-9.]+ mse [0-9.]+ \| lr" -- "$TRAIN" "${COMMON[@]}" --set train.steps=2 \
      --set loss.ssim=0 --set log.tensorboard=false --run-dir "$T/run_mse"
  if grep -q "1-ssim" "$T/out.txt" || [ -e "$T/run_mse/tb" ]; then bad "1-ssim printed with loss.ssim = 0, or tb/ written"; else ok; fi
  if [ "$(cat "$T/run/checkpoints/latest")" = "step_0000006.safetensors" ]; then ok; else bad "latest: $(cat "$T/run/checkpoints/latest")"; fi
  if [ "$(grep -c '"loss"' "$T/run/metrics.jsonl")" = 6 ]; then ok; else bad "metrics.jsonl lines"; fi
  expect again 1 "already holds checkpoints" -- "$TRAIN" "${COMMON[@]}" --set train.steps=6 --run-dir "$T/run"
  expect resume-more 0 "resuming from .*step_0000006" -- "$TRAIN" --resume "$T/run" --set train.steps=8
  if [ "$(cat "$T/run/checkpoints/latest")" = "step_0000008.safetensors" ]; then ok; else bad "latest after resume"; fi
  expect resume-changed 1 "\[optim\] lr = 0.5 \(checkpoint: 0.001\)" -- "$TRAIN" --resume "$T/run" --set optim.lr=0.5 --set train.steps=9
  expect resume-none 1 "no checkpoint to resume from" -- "$TRAIN" "${COMMON[@]}" --resume "$T/empty_run"

  # Ctrl-C: a long run, interrupted, saves a checkpoint and exits 130; resume continues from it
  "$TRAIN" "${COMMON[@]}" --set train.steps=1000000 --set data.crop=48 --run-dir "$T/long" > "$T/long.txt" 2>&1 &
  pid=$!
  for _ in $(seq 1 100); do grep -q "^step" "$T/long.txt" 2>/dev/null && break; sleep 0.1; done
  kill -INT $pid; wait $pid; rc=$?
  if [ $rc = 130 ] && grep -qE "interrupted (after|during) step" "$T/long.txt"; then ok; else bad "SIGINT: exit $rc"; tail -3 "$T/long.txt" >&2; fi
  step=$(sed -n 's/^step_0*\([0-9]*\)\.safetensors$/\1/p' "$T/long/checkpoints/latest" 2>/dev/null)
  if [ -n "$step" ] && [ -f "$T/long/checkpoints/step_$(printf %07d "$step").safetensors" ]; then ok; else bad "no checkpoint after SIGINT"; fi
  expect resume-after-int 0 "resuming from" -- "$TRAIN" --resume "$T/long" --set train.steps=$((step + 2))
  # a truncated latest checkpoint is reported by name
  ck="$T/long/checkpoints/step_$(printf %07d $((step + 2))).safetensors"
  truncate -s 100 "$ck"
  expect resume-corrupt 1 "step_$(printf %07d $((step + 2))).safetensors" -- "$TRAIN" --resume "$T/long" --set train.steps=$((step + 5))
else
  bad "dod-data synth failed: $(tail -2 "$T/synth.txt")"
fi

# the dod kind with the default (absent) SD 2.1-base path: the missing model directory is named
expect dod-kind 1 "stable-diffusion-2-1-base" -- "$TRAIN" --config "$S/configs/aio3.ini" \
  --set "data.train=$T/d.h5" --run-dir "$T/dodrun"

echo "$pass passed, $fail failed"
[ $fail = 0 ]
