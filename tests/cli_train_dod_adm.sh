#!/usr/bin/env bash
# dod-train / dod-eval with the paper's `adm` degradation extractor ([modulation] extractor = adm,
# layers/adm_encoder.h) on the tiny SD fixture and the small guided-diffusion fixture (tests/fixtures/adm,
# whose flags need adm_head_channels = 8, adm_norm_groups = 8): two steps train and checkpoint with
# de_mlp taking the encoder's 32 pooled channels and no cnn; dod-eval run scores the run with the
# posterior mean and with [eval] latent = sample (other numbers, repeatable per seed); dod-export ->
# dod-restore --adm-weights (and dod-eval run --adapter) restore exactly as dod-eval run --checkpoint,
# without --adm-weights or with other weights they are refused naming both; configs/aio3.ini
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

# dod-export -> dod-restore --adm-weights restores byte for byte as dod-eval run with the checkpoint, and
# dod-eval run --adapter scores alike; without --adm-weights, or with other weights, refused naming both.
X=$B/bin/dod-export R=$B/bin/dod-restore BASE=$S/tests/fixtures/sd/sd2_tiny/model ADM=$S/tests/fixtures/adm/adm_tiny.pt
rc=0
"$X" --run "$T/run" --out "$T/a.safetensors" > "$T/export.log" 2>&1 || rc=$?
check "dod-export writes an adm adapter (rc $rc: $(tail -1 "$T/export.log"))" \
    "[ $rc = 0 ] && grep -q 'adm extractor' $T/export.log && grep -a -q '\"extractor\":\"adm\"' $T/a.safetensors"
bytes=$(stat -c %s "$ADM")
check "... recording the encoder's flags and its weights file" \
    "grep -a -q '\"adm_head_channels\":\"8\"' $T/a.safetensors && grep -a -q '\"adm_norm_groups\":\"8\"' $T/a.safetensors && grep -a -q '\"adm_weights_file\":\"adm_tiny.pt\"' $T/a.safetensors && grep -a -q '\"adm_weights_bytes\":\"$bytes\"' $T/a.safetensors"
rc=0
"$E" run --config "$T/adm.ini" --checkpoint "$T/run" --data "$T/syn.h5" --tasks derain --max-images 2 \
    --save-images "$T/ev" --save-inputs --csv "$T/ev.csv" > /dev/null 2> "$T/ev.err" || rc=$?
check "dod-eval run --checkpoint saves 2 restored images (rc $rc)" "[ $rc = 0 ] && [ \$(ls $T/ev/derain/restored | wc -l) = 2 ]"
rc=0
"$R" --base "$BASE" --adapter "$T/a.safetensors" --adm-weights "$ADM" --in "$T/ev/derain/input" --out "$T/dr" --quiet \
    > "$T/dr.log" 2>&1 || rc=$?
check "dod-restore --adm-weights exits 0 (rc $rc: $(tail -1 "$T/dr.log"))" "[ $rc = 0 ]"
same=0
for f in "$T/ev/derain/restored/"*.png; do cmp -s "$f" "$T/dr/$(basename "$f")" && same=$((same + 1)); done
check "dod-restore's PNGs are dod-eval run's, byte for byte ($same of 2)" "[ $same = 2 ]"
rc=0
"$E" run --adapter "$T/a.safetensors" --base "$BASE" --adm-weights "$ADM" --data "$T/syn.h5" --tasks derain --max-images 2 \
    --csv "$T/ea.csv" > /dev/null 2> "$T/ea.err" || rc=$?
check "dod-eval run --adapter --adm-weights scores exactly as the checkpoint (rc $rc: $(tail -1 "$T/ea.err"))" \
    "[ $rc = 0 ] && cmp -s <(cut -d, -f1-6 $T/ev.csv) <(cut -d, -f1-6 $T/ea.csv)"
rc=0
"$R" --base "$BASE" --adapter "$T/a.safetensors" --in "$T/ev/derain/input" --out "$T/no_adm" > /dev/null 2> "$T/e.txt" || rc=$?
check "dod-restore without --adm-weights: refused naming the adapter and the option (rc $rc: $(tail -1 "$T/e.txt"))" \
    "[ $rc = 1 ] && grep -q -F '$T/a.safetensors: an adapter of a model with the adm extractor' $T/e.txt && grep -q -F 'adm_tiny.pt' $T/e.txt && grep -q -F -- '--adm-weights FILE' $T/e.txt && [ -z \"\$(ls $T/no_adm 2> /dev/null)\" ]"
rc=0
"$E" run --adapter "$T/a.safetensors" --base "$BASE" --data "$T/syn.h5" --max-images 1 > /dev/null 2> "$T/e2.txt" || rc=$?
check "dod-eval run --adapter without --adm-weights: refused likewise (rc $rc)" \
    "[ $rc = 1 ] && grep -q -F -- '--adm-weights FILE' $T/e2.txt"
# Other weights: the adapter's recorded tensors hash replaced (same length: the file still reads).
h=$(grep -a -o '"adm_weights_hash":"[0-9a-f]*"' "$T/a.safetensors" | cut -d'"' -f4)
perl -pe "s/\"adm_weights_hash\":\"$h\"/\"adm_weights_hash\":\"0123456789abcdef\"/" "$T/a.safetensors" \
    > "$T/other.safetensors"
rc=0
"$R" --base "$BASE" --adapter "$T/other.safetensors" --adm-weights "$ADM" --in "$T/ev/derain/input" --out "$T/other" \
    > /dev/null 2> "$T/e3.txt" || rc=$?
check "adm weights other than the adapter's are refused naming both (rc $rc: $(tail -1 "$T/e3.txt"))" \
    "[ $rc = 1 ] && grep -q -F 'other adm extractor weights: exported with adm_tiny.pt' $T/e3.txt && grep -q -F 'tensors hash 0123456789abcdef' $T/e3.txt && grep -q -F 'tensors hash $h' $T/e3.txt"

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
