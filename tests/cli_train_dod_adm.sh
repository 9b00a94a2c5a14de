#!/usr/bin/env bash
# dod-train / dod-eval with the paper's `adm` degradation extractor ([modulation] extractor = adm,
# layers/adm_encoder.h) on the tiny SD fixture and the small guided-diffusion fixture (tests/fixtures/adm,
# whose flags need adm_head_channels = 8, adm_norm_groups = 8): two steps train and checkpoint with
# de_mlp taking the encoder's 32 pooled channels and no cnn; dod-eval run scores the run with the
# posterior mean and with [eval] latent = sample (other numbers, repeatable per seed); configs/aio3.ini
# without the weights file stops naming the key, the file and the configuration line; an adm extractor
# without adm_weights is refused by the configuration check.
# Usage: bash tests/cli_train_dod_adm.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
B=$1 S=$2
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
. "$S/tests/shell_lib.sh"
tiny_dod_data "$B" "$T/syn.h5"
tiny_dod_ini "$T/adm.ini" "$T/syn.h5" "$T/run"
tiny_dod_adm "$T/adm.ini"
cat >> "$T/adm.ini" <<INI
[train]
steps = 2
[log]
every = 1
INI
rc=0
"$B/bin/dod-train" --config "$T/adm.ini" > "$T/run.log" 2>&1 || rc=$?
check "run exits 0 (log: $(tail -3 "$T/run.log" | tr '\n' ' '))" "[ $rc = 0 ]"
frozen_extractor_checks "$T/run" 32 encoder

# dod-eval run: the mean, and a seeded sample (twice: the same numbers; another seed: others).
E=$B/bin/dod-eval
evaluate() {   # OUT [--set ...]
    local out=$1
    shift
    "$E" run --config "$T/adm.ini" --checkpoint "$T/run" --data "$T/syn.h5" --max-images 2 "$@" > "$T/$out.md" \
        2> "$T/$out.err" && grep '^| \*\*average\*\*' "$T/$out.md" | cut -d'|' -f4,5 > "$T/$out.avg"
}
check "eval (mean) exits 0 ($(tail -2 "$T/mean.err" 2>/dev/null | tr '\n' ' '))" "evaluate mean"
check "eval (sample) exits 0" "evaluate s1 --set eval.latent=sample --set eval.seed=5"
check "eval (sample again) exits 0" "evaluate s1b --set eval.latent=sample --set eval.seed=5"
check "eval (sample, another seed) exits 0" "evaluate s2 --set eval.latent=sample --set eval.seed=6"
check "a sample scores differently from the mean" "! cmp -s $T/mean.avg $T/s1.avg"
check "the same seed scores the same" "cmp -s $T/s1.avg $T/s1b.avg"
check "another seed scores differently" "! cmp -s $T/s1.avg $T/s2.avg"

# dod-export: adapters of adm models are not supported yet; refused naming the extractor, nothing written.
rc=0
"$B/bin/dod-export" --run "$T/run" --out "$T/adm_adapter.safetensors" > "$T/export.log" 2>&1 || rc=$?
check "dod-export refuses an adm model (rc $rc: $(tail -1 "$T/export.log"))" \
    "[ $rc = 1 ] && grep -q 'extractor is adm' $T/export.log && [ ! -e $T/adm_adapter.safetensors ]"

# configs/aio3.ini without the weights: the message names the file, the key and the line it is set on.
line=$(grep -n '^adm_weights' "$S/configs/aio3.ini" | cut -d: -f1)
rc=0
(cd "$T" && "$B/bin/dod-train" --config "$S/configs/aio3.ini" --set "model.base=$S/configs/tiny_base" \
    --set "model.prompt_embedding=$S/configs/tiny_base/prompt_embeds_zero.safetensors" --run-dir "$T/aio3") \
    > "$T/aio3.log" 2>&1 || rc=$?
check "aio3.ini without 256x256_diffusion_uncond.pt stops (rc $rc: $(tail -1 "$T/aio3.log"))" \
    "[ $rc = 1 ] && grep -q -F 'configs/aio3.ini:$line: [modulation] adm_weights = models/256x256_diffusion_uncond.pt: No such file' $T/aio3.log"
check "... and says where to get it" "grep -q -F 'openaipublic.blob.core.windows.net/diffusion/jul-2021/256x256_diffusion_uncond.pt' $T/aio3.log"
rc=0
"$B/bin/dod-train" --config "$T/adm.ini" --set modulation.adm_weights= --print-config > "$T/empty.log" 2>&1 || rc=$?
check "extractor = adm without adm_weights refused by the check (log: $(tail -1 "$T/empty.log"))" \
    "[ $rc != 0 ] && grep -q '\[modulation\] adm_weights: required for extractor = adm' $T/empty.log"
echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
