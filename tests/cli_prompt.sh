#!/usr/bin/env bash
# Prompts without Python: dod-encode-prompt, and dod-train on the tiny SD fixture with [model] prompt
# and no embedding file (encoded once with the fixture's tokenizer/ and text_encoder/, cached beside the
# run, reused on resume and by dod-eval run, recorded in checkpoints); a prompt embedding file still
# wins; a base without a text encoder fails naming the folder and the keys; a long prompt is truncated
# with a warning.
# Usage: bash tests/cli_prompt.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
B=$1 S=$2
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
. "$S/tests/shell_lib.sh"
FIX="$S/tests/fixtures/sd/sd2_tiny/model"
header() { "$B/bin/dod-sd-inspect" --header "$1"; }
# meta FILE KEY: the metadata value of KEY in a safetensors file (the JSON header, read with python-free tools).
meta() { head -c "$((8 + $(od -An -t u8 -N 8 "$1" | tr -d ' ')))" "$1" | tail -c +9 | grep -o "\"$2\":\"[^\"]*\""; }

# ---- dod-encode-prompt --------------------------------------------------------------------------------
"$B/bin/dod-encode-prompt" --base "$FIX" --prompt "a photo" --negative-prompt "blurry" --dtype bf16 \
    --out "$T/p.safetensors" > "$T/enc.log" 2>&1
check "encode: two bf16 [77, 16] tensors" \
    "[ \"\$(header $T/p.safetensors)\" = \"$(printf 'prompt_embeds BF16 [77, 16]\nnegative_prompt_embeds BF16 [77, 16]')\" ]"
check "encode: prompt recorded" "meta $T/p.safetensors prompt | grep -q '\"a photo\"'"
set +e
"$B/bin/dod-encode-prompt" --base "$S/configs/tiny_base" --prompt x --out "$T/q.safetensors" 2> "$T/e1.log"; rc1=$?
"$B/bin/dod-encode-prompt" --base "$FIX" --out "$T/q.safetensors" 2> "$T/e2.log"; rc2=$?
"$B/bin/dod-encode-prompt" --base "$FIX" --prompt "$(printf 'cat %.0s' $(seq 90))"  --out "$T/long.safetensors" \
    > /dev/null 2> "$T/e3.log"; rc3=$?
set -e
check "encode: a base without tokenizer/ fails (1) naming it" "[ $rc1 = 1 ] && grep -q 'tiny_base/tokenizer: no such folder' $T/e1.log"
check "encode: missing --prompt is a usage error (2)" "[ $rc2 = 2 ] && grep -q 'are required' $T/e2.log"
# (the fixture's small vocabulary, 1500 merges, spells "cat" in two tokens: 90 words, 180 tokens)
check "encode: a long prompt is truncated with a warning" \
    "[ $rc3 = 0 ] && grep -q '180 tokens, the text encoder takes 75: the last 105 were dropped' $T/e3.log"

# ---- dod-train with [model] prompt ------------------------------------------------------------------
tiny_dod_data "$B" "$T/syn.h5"
tiny_dod_ini "$T/tiny.ini" "$T/syn.h5" "$T/run"
cat >> "$T/tiny.ini" <<INI
[model]
frozen_dtype = f32
prompt = "a photo"
[train]
steps = 2
INI
"$B/bin/dod-train" --config "$T/tiny.ini" > "$T/train.log" 2>&1
check "train: ran with prompt = \"a photo\" and no embedding file" "grep -q 'done: 2 steps' $T/train.log"
check "train: the prompt embeddings are cached beside the run" \
    "header $T/run/prompt_embeds.safetensors | grep -q 'prompt_embeds F32 \[77, 16\]'"
check "train: the cache holds what dod-encode-prompt gives" \
    "\"$B/bin/dod-encode-prompt\" --base $FIX --prompt 'a photo' --negative-prompt '' --out $T/ref.safetensors >/dev/null \
     && cmp <(tail -c 9856 $T/run/prompt_embeds.safetensors) <(tail -c 9856 $T/ref.safetensors)"
check "train: the checkpoint records the prompt" \
    "meta $T/run/checkpoints/step_0000002.safetensors prompt | grep -q '\"a photo\"'"
"$B/bin/dod-train" --config "$T/tiny.ini" --set train.steps=3 --resume "$T/run" > "$T/resume.log" 2>&1
check "train: resume reuses the cached embeddings" "grep -q 'prompt embeddings from .*prompt_embeds.safetensors' $T/resume.log"
check "train: resumed to step 3" "grep -q 'done: 3 steps' $T/resume.log"
# dod-eval run on the run dir reads the run's cache too; given a checkpoint file it encodes afresh.
"$B/bin/dod-eval" run --config "$T/tiny.ini" --checkpoint "$T/run" --data "$T/syn.h5" --tasks derain --max-images 1 \
    > "$T/eval.md" 2> "$T/eval.log"
check "eval: dod-eval run on the run dir reuses the cached embeddings" \
    "grep -q '^| derain | 1 |' $T/eval.md && grep -q 'prompt embeddings from $T/run/prompt_embeds.safetensors' $T/eval.log"
"$B/bin/dod-eval" run --config "$T/tiny.ini" --checkpoint "$T/run/checkpoints/step_0000003.safetensors" \
    --data "$T/syn.h5" --tasks derain --max-images 1 > "$T/eval_file.md" 2> "$T/eval_file.log"
check "eval: a checkpoint file encodes the prompt without the cache" \
    "grep -q '^| derain | 1 |' $T/eval_file.md && ! grep -q 'prompt embeddings from' $T/eval_file.log"
# A changed prompt on resume is refused (the configuration must match the checkpoint's).
set +e
"$B/bin/dod-train" --config "$T/tiny.ini" --set model.prompt="a dog" --set train.steps=4 --resume "$T/run" \
    > "$T/changed.log" 2>&1; rc=$?
set -e
check "train: a changed prompt on resume is refused" "[ $rc = 1 ] && grep -q 'prompt' $T/changed.log"
# An embedding file wins over the prompt text: the cache is not made.
"$B/bin/dod-train" --config "$T/tiny.ini" --set model.prompt_embedding="$S/tests/fixtures/dod/prompt.safetensors" \
    --set train.run_dir="$T/run_file" > "$T/file.log" 2>&1
check "train: an embedding file wins (no cache written)" \
    "grep -q 'done: 2 steps' $T/file.log && [ ! -e $T/run_file/prompt_embeds.safetensors ]"
# A base without tokenizer/ and text_encoder/: the error names the folder and the keys.
set +e
"$B/bin/dod-train" --config "$T/tiny.ini" --set model.base="$S/configs/tiny_base" --set train.run_dir="$T/run_nobase" \
    > "$T/nobase.log" 2>&1; rc=$?
set -e
check "train: a base without a text encoder fails naming [model] base, the folder and [model] prompt" \
    "[ $rc = 1 ] && grep -q 'tiny_base has no tokenizer/ folder, needed to encode \[model\] prompt' $T/nobase.log"
set +e
"$B/bin/dod-train" --config "$T/tiny.ini" --set model.prompt=$'caf\xc3' --set train.run_dir="$T/run_utf8" \
    > "$T/utf8.log" 2>&1; rc=$?
set -e
check "train: a prompt that is not UTF-8 is refused naming the key" \
    "[ $rc = 1 ] && grep -q '\[model\] prompt: not valid UTF-8 (byte 3)' $T/utf8.log"
echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
