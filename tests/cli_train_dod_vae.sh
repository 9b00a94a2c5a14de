#!/usr/bin/env bash
# dod-train with the DOD model and the `vae` degradation extractor ([modulation] extractor = vae,
# layers/dod_extract_vae.h) on the tiny SD fixture: two steps train and checkpoint, the checkpoint's
# modulation takes the VAE's 16 pooled channels and has no cnn, and an unknown extractor is refused.
# Usage: bash tests/cli_train_dod_vae.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
B=$1 S=$2
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
. "$S/tests/shell_lib.sh"
tiny_dod_data "$B" "$T/syn.h5"
tiny_dod_ini "$T/vae.ini" "$T/syn.h5" "$T/run"
cat >> "$T/vae.ini" <<INI
[model]
prompt_embedding = $S/tests/fixtures/dod/prompt.safetensors
[modulation]
extractor = vae
[train]
steps = 2
[log]
every = 1
INI
rc=0
"$B/bin/dod-train" --config "$T/vae.ini" > "$T/run.log" 2>&1 || rc=$?
check "run exits 0 (log: $(tail -3 "$T/run.log" | tr '\n' ' '))" "[ $rc = 0 ]"
check "two steps done" "grep -q 'done: 2 steps' $T/run.log"
frozen_extractor_checks "$T/run" 16 VAE
rc=0
"$B/bin/dod-train" --config "$T/vae.ini" --set modulation.extractor=guided > "$T/bad.log" 2>&1 || rc=$?
check "unknown extractor refused, naming the key (log: $(tail -2 "$T/bad.log" | tr '\n' ' '))" \
    "[ $rc != 0 ] && grep -q 'extractor' $T/bad.log"
echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
