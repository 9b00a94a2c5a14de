#!/usr/bin/env bash
# dod-train with the VSD regulariser ([loss] vsd > 0, layers/dod_vsd.h) on the tiny SD fixture:
#  - a run trains, logs the VSD terms (metrics.jsonl, progress line, TensorBoard) and checkpoints the
#    regulariser (vsd_reg.* and its moments); its step-memory estimate includes the regulariser's step;
#  - a regulariser parameter that overflows stops the run at that step without saving;
#  - a run interrupted after 2 steps and resumed reproduces the uninterrupted run bit for bit: losses
#    and every checkpoint tensor (model, regulariser, both optimizers); with grad_accum = 2 as well;
#  - the checkpoint restores with dod-eval run (which skips the regulariser) and starts a stage-2 run;
#  - a [model] prompt_embedding file holding negative_prompt_embeds trains exactly as the encoded prompts;
#  - resuming it with vsd = 0, or a vsd = 0 checkpoint with vsd = 1, is refused naming the key /
#    tensor; vsd > 0 with stage 2 or the toy model is refused naming [loss] vsd.
# Usage: bash tests/cli_train_vsd.sh BUILD_DIR SOURCE_DIR
set -uo pipefail
B=$1 S=$2
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
. "$S/tests/shell_lib.sh"
if ! "$B/bin/dod-train" --config-reference > /dev/null 2>&1 || [ ! -x "$B/bin/dod-data" ]; then
    echo "0 passed, 0 failed (dod-train built without iniparser or HDF5: skipped)"; exit 0
fi
tiny_dod_data "$B" "$T/syn.h5"
tiny_dod_ini "$T/vsd.ini" "$T/syn.h5" "$T/full"
cat >> "$T/vsd.ini" <<INI
[model]
frozen_dtype = f32
negative_prompt = "blurry, lowres"
[loss]
vsd = 1
vsd_lora_rank = 2
vsd_lr = 2e-3
[train]
steps = 4
[log]
every = 1
[val]
every = 0
INI
train() { "$B/bin/dod-train" --config "$T/vsd.ini" "$@"; }
losses() { grep -o '"loss": [^,]*\|"vsd": [^,]*\|"vsd_diffusion": [^,]*' "$1/metrics.jsonl"; }
ck() { echo "$1/checkpoints/step_$(printf %07d "$2").safetensors"; }

train > "$T/full.log" 2>&1
check "VSD run finished (log: $(tail -2 "$T/full.log" | tr '\n' ' '))" "grep -q 'done: 4 steps' $T/full.log"
check "the regulariser is announced" "grep -q 'VSD regulariser: weight 1, cfg 7.5, t in \[20, 980), LoRA rank 2' $T/full.log"
check "the VSD terms are logged" "[ \$(grep -c '\"vsd\": [0-9.e-]*, \"vsd_diffusion\": [0-9.e-]*, \"vsd_grad_norm\"' $T/full/metrics.jsonl) = 4 ]"
check "the progress line shows the VSD terms" "grep -q '^step 4/4 | loss [0-9.]* mse [0-9.]* vsd [0-9.]* vsd_diffusion [0-9.]* |' $T/full.log"
check "TensorBoard has the VSD scalars" \
    "grep -aq 'train/vsd_diffusion' $T/full/tb/events.out.tfevents.* && grep -aq 'train/vsd_grad_norm' $T/full/tb/events.out.tfevents.*"
"$B/bin/dod-sd-inspect" --header "$(ck "$T/full" 4)" > "$T/header.txt" 2>&1
check "the checkpoint holds the regulariser and its moments" \
    "grep -q 'vsd_reg.conv_in.lora_A.weight' $T/header.txt && grep -q 'optim.m.vsd_reg.conv_in.lora_B.weight' $T/header.txt && grep -q 'optim.v.vsd_reg.' $T/header.txt"
check "the VSD term moves off 0 once the regulariser trains" \
    "awk -F'\"vsd\": ' 'NR > 1 { split(\$2, a, \",\"); if (a[1] + 0 > 1e-6) found = 1 } END { exit !found }' $T/full/metrics.jsonl"

# interrupted after 2 steps, resumed: bitwise the uninterrupted run
train --set train.steps=2 --set train.run_dir="$T/part" > "$T/part.log" 2>&1
train --set train.run_dir="$T/part" --resume "$T/part" > "$T/resume.log" 2>&1
check "resumed (log: $(tail -2 "$T/resume.log" | tr '\n' ' '))" "grep -q 'resuming from' $T/resume.log && grep -q 'done: 4 steps' $T/resume.log"
check "resumed losses and VSD terms identical to the uninterrupted run" "diff <(losses $T/full) <(losses $T/part)"
check "resumed checkpoint bitwise the uninterrupted one (model, regulariser, both optimizers)" \
    "same_tensors $B $(ck "$T/full" 4) $(ck "$T/part" 4)"
# the same with two micro-batches a step (the regulariser's gradients accumulated like the model's)
acc() { train --set optim.grad_accum=2 --set train.steps=3 "$@"; }
acc --set train.run_dir="$T/acc_full" > "$T/acc_full.log" 2>&1
acc --set train.steps=1 --set train.run_dir="$T/acc_part" > "$T/acc_part.log" 2>&1
acc --set train.run_dir="$T/acc_part" --resume "$T/acc_part" > "$T/acc_resume.log" 2>&1
check "grad_accum 2: resumed bitwise (log: $(tail -1 "$T/acc_resume.log"))" \
    "diff <(losses $T/acc_full) <(losses $T/acc_part) && same_tensors $B $(ck "$T/acc_full" 3) $(ck "$T/acc_part" 3)"

# inference and stage 2 skip the regulariser
rc=0
"$B/bin/dod-eval" run --config "$T/vsd.ini" --checkpoint "$T/full" --data "$T/syn.h5" --tasks derain --max-images 1 \
    > "$T/eval.md" 2> "$T/eval.err" || rc=$?
check "dod-eval run restores from the VSD checkpoint (err: $(tail -1 "$T/eval.err"))" "[ $rc = 0 ] && grep -q '^| derain | 1 |' $T/eval.md"
tiny_dod_ini "$T/s2.ini" "$T/syn.h5" "$T/s2"
cat >> "$T/s2.ini" <<INI
[model]
frozen_dtype = f32
[stage]
stage = 2
init_from = $T/full
[train]
steps = 1
INI
sed -i '/^\[stage\]$/{n;/^stage = 1$/d}' "$T/s2.ini"
rc=0
"$B/bin/dod-train" --config "$T/s2.ini" > "$T/s2.log" 2>&1 || rc=$?
check "stage 2 starts from the VSD run (log: $(tail -1 "$T/s2.log"))" "[ $rc = 0 ] && grep -q 'done: 1 steps' $T/s2.log"

# a prompt file with the negative prompt's embedding (dod-encode-prompt --negative-prompt) feeds the teacher
"$B/bin/dod-encode-prompt" --base "$S/tests/fixtures/sd/sd2_tiny/model" --prompt "" --negative-prompt "blurry, lowres" \
    --out "$T/prompts.safetensors" > /dev/null 2>&1
rc=0
train --set model.prompt_embedding="$T/prompts.safetensors" --set model.negative_prompt= --set train.steps=2 \
    --set train.run_dir="$T/file" > "$T/file.log" 2>&1 || rc=$?
check "a prompt file with negative_prompt_embeds: the same run as the encoded prompts (log: $(tail -1 "$T/file.log"))" \
    "[ $rc = 0 ] && diff <(losses $T/file) <(losses $T/part | head -6)"
"$B/bin/dod-encode-prompt" --base "$S/tests/fixtures/sd/sd2_tiny/model" --prompt "" --out "$T/positive.safetensors" \
    > /dev/null 2>&1
rc=0
train --set model.prompt_embedding="$T/positive.safetensors" --set model.negative_prompt= --set train.run_dir="$T/nonneg" \
    > "$T/nonneg.log" 2>&1 || rc=$?
check "a prompt file without a negative and no negative_prompt refused (log: $(tail -1 "$T/nonneg.log"))" \
    "[ $rc != 0 ] && grep -q 'dod-encode-prompt --negative-prompt' $T/nonneg.log"

# refusals
rc=0
train --set train.run_dir="$T/part" --resume "$T/part" --set loss.vsd=0 --set train.steps=5 > "$T/off.log" 2>&1 || rc=$?
check "resume with vsd = 0 refused (log: $(tail -1 "$T/off.log"))" "[ $rc != 0 ] && grep -q 'vsd_reg\|\[loss\] vsd' $T/off.log"
train --set loss.vsd=0 --set train.steps=2 --set train.run_dir="$T/plain" > "$T/plain.log" 2>&1
need() { sed -n 's/.*a step needs about \([0-9.]*\) MiB.*/\1/p' "$1"; }
check "the step-memory estimate includes the regulariser ($(need "$T/full.log") MiB, without VSD $(need "$T/plain.log") MiB)" \
    "awk -v a=\"\$(need $T/full.log)\" -v b=\"\$(need $T/plain.log)\" 'BEGIN { exit !(a > b && b > 0) }'"
rc=0
train --set train.run_dir="$T/plain" --resume "$T/plain" --set train.steps=3 > "$T/on.log" 2>&1 || rc=$?
check "resume of a vsd = 0 run with vsd = 1 refused (log: $(tail -1 "$T/on.log"))" "[ $rc != 0 ] && grep -q '\[loss\] vsd' $T/on.log"
rc=0
"$B/bin/dod-train" --config "$T/s2.ini" --set loss.vsd=1 --set train.run_dir="$T/s2b" > "$T/s2vsd.log" 2>&1 || rc=$?
check "vsd with stage 2 refused (log: $(tail -1 "$T/s2vsd.log"))" "[ $rc != 0 ] && grep -q '\[loss\] vsd: the VSD regulariser is a stage-1 term' $T/s2vsd.log"
rc=0
train --set model.kind=toy --set train.run_dir="$T/toy" > "$T/toy.log" 2>&1 || rc=$?
check "vsd with the toy model refused (log: $(tail -1 "$T/toy.log"))" "[ $rc != 0 ] && grep -q '\[loss\] vsd' $T/toy.log"
rc=0
train --set loss.vsd_t_max=2000 --set train.run_dir="$T/tmax" > "$T/tmax.log" 2>&1 || rc=$?
check "vsd_t_max past the scheduler refused (log: $(tail -1 "$T/tmax.log"))" "[ $rc != 0 ] && grep -q 'vsd_t_max <= 1000' $T/tmax.log"
rc=0
train --set loss.vsd_t_min=980 --set train.run_dir="$T/tmin" > "$T/tmin.log" 2>&1 || rc=$?
check "vsd_t_min >= vsd_t_max refused (log: $(tail -1 "$T/tmin.log"))" "[ $rc != 0 ] && grep -q '\[loss\] vsd_t_min: must be below \[loss\] vsd_t_max' $T/tmin.log"
# a regulariser parameter overflowing: the step's loss goes non-finite; the run stops there, exit 1, unsaved
cp -r "$T/part" "$T/huge"
"$B/tests/dod-make-hostile" set "$(ck "$T/huge" 4)" vsd_reg.conv_in.lora_A.weight 3e38
rc=0
train --set train.run_dir="$T/huge" --resume "$T/huge" --set train.steps=5 --quiet > "$T/huge.log" 2>&1 || rc=$?
check "a regulariser parameter overflowing stops the run (log: $(tail -1 "$T/huge.log"))" \
    "[ $rc = 1 ] && grep -q 'step 5: the .*loss is nan on micro-batch .*; stopping without saving' $T/huge.log && [ ! -e $(ck "$T/huge" 5) ]"
echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
