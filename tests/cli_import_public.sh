#!/usr/bin/env bash
# dod-import-public (train/tool_import_public.c) on the public-layout fixture (tests/fixtures/dod_import,
# scripts/make_dod_import_fixture.py; the values are checked tensor by tensor in tests/test_dod_import.c):
# a stage-1 .pkl and prompt_embeds.pt become a run dir at step 0 that dod-eval evaluates and dod-train
# --resume fine-tunes; a stage-2 configuration reads its stage-1 tensors from that run and names the
# detail tensors that do not fit; configurations the public code cannot have made are refused naming
# the key and its line.
# Usage: bash tests/cli_import_public.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
B=$1 S=$2
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
. "$S/tests/shell_lib.sh"
I=$B/bin/dod-import-public
F=$S/tests/fixtures/dod_import
tiny_dod_data "$B" "$T/syn.h5"
tiny_dod_ini "$T/s1.ini" "$T/syn.h5" "$T/unused"
tiny_dod_adm "$T/s1.ini"
cat >> "$T/s1.ini" <<INI
[lora]
rank = 4
alpha = 8
INI

rc=0
"$I" --config "$T/s1.ini" --stage1 "$F/stage1.pkl" --prompt-embeds "$F/prompt_embeds.pt" --out "$T/imp" > "$T/imp.log" 2>&1 || rc=$?
check "stage 1 imports (rc $rc: $(tail -2 "$T/imp.log" | tr '\n' ' '))" "[ $rc = 0 ]"
check "it reports 191 tensors" "grep -q 'stage 1: 191 tensors from' $T/imp.log"
CK=$T/imp/checkpoints/step_0000000.safetensors
"$B/bin/dod-sd-inspect" --header "$CK" > "$T/header.txt" 2>&1 || true
check "a step-0 checkpoint with the 191 trainables and their zero moments" \
    "[ \$(grep -c -v 'optim\.' $T/header.txt | tr -d ' ') -ge 191 ] && [ \$(grep -c 'optim\.m\.' $T/header.txt) = 191 ]"
check "the prompt embedding is copied and configured" \
    "[ -f $T/imp/public_prompt_embeds.safetensors ] && grep -q 'prompt_embedding = \"$T/imp/public_prompt_embeds.safetensors\"' $T/imp/config.ini"
rc=0
"$B/bin/dod-eval" run --config "$T/imp/config.ini" --checkpoint "$T/imp" --data "$T/syn.h5" --max-images 1 \
    > "$T/eval.md" 2> "$T/eval.err" || rc=$?
check "dod-eval run evaluates the imported run (rc $rc: $(tail -1 "$T/eval.err"))" \
    "[ $rc = 0 ] && grep -q '^| dod (step 0) |' $T/eval.md"
rc=0
"$B/bin/dod-train" --resume "$T/imp" --set train.steps=1 --quiet > "$T/tune.log" 2>&1 || rc=$?
check "dod-train --resume fine-tunes it (rc $rc: $(tail -1 "$T/tune.log"))" \
    "[ $rc = 0 ] && [ -f $T/imp/checkpoints/step_0000001.safetensors ]"

rc=0
"$I" --config "$T/s1.ini" --stage1 "$F/stage1.pkl" --lora-gamma plain --out "$T/plain" > "$T/plain.log" 2>&1 || rc=$?
check "--lora-gamma plain converts (rc $rc)" "[ $rc = 0 ] && grep -q 'gamma converted from the plain form' $T/plain.log"
rc=0
"$I" --config "$T/s1.ini" --stage1 "$F/stage1.pkl" --lora-gamma half --out "$T/x0" > "$T/half.log" 2>&1 || rc=$?
check "--lora-gamma takes one-plus or plain (rc $rc)" "[ $rc = 2 ] && grep -q 'expected one-plus or plain' $T/half.log"

# stage 2: the stage-1 tensors from the imported run; the fixture's detail module has RRDB growth 2,
# a configuration builds growth 32: every RRDB tensor is named as not fitting.
cp "$T/s1.ini" "$T/s2.ini"
cat >> "$T/s2.ini" <<INI
[stage]
stage = 2
init_from = $T/imp
INI
sed -i '0,/^stage = 1$/{/^stage = 1$/d}' "$T/s2.ini"
rc=0
"$I" --config "$T/s2.ini" --stage2 "$F/stage2.pkl" --out "$T/imp2" > "$T/imp2.log" 2>&1 || rc=$?
check "stage 2 reads init_from and names the misfits (rc $rc: $(head -c 300 "$T/imp2.log" | tr '\n' ' '))" \
    "[ $rc = 1 ] && grep -q 'shapes differ' $T/imp2.log && grep -q 'decoder.sft_blocks_1.encode_enc_2.0.rdb1.conv1.weight is \[2, 16, 3, 3\], our detail.fuse.0.rrdb.rdb1.conv1.weight is \[32, 16, 3, 3\]' $T/imp2.log"

# refusals, each naming the key (and where it is set) or the file
sed 's/^alpha = 8$/alpha = 6/' "$T/s1.ini" > "$T/alpha6.ini"
line=$(grep -n '^alpha = 6' "$T/alpha6.ini" | cut -d: -f1)
expect_refusal() {   # NAME PATTERN ARGS...
    local name=$1 pat=$2
    shift 2
    local rc=0
    "$I" "$@" > "$T/r.log" 2>&1 || rc=$?
    check "$name (rc $rc: $(tail -1 "$T/r.log"))" "[ $rc != 0 ] && grep -q -F \"$pat\" $T/r.log"
}
expect_refusal "alpha other than PEFT's default 8" "alpha6.ini:$line: [lora] alpha = 6" \
    --config "$T/alpha6.ini" --stage1 "$F/stage1.pkl" --out "$T/x1"
expect_refusal "an extractor other than adm" "[modulation] extractor must be adm" \
    --config "$T/s1.ini" --set modulation.extractor=cnn --stage1 "$F/stage1.pkl" --out "$T/x2"
expect_refusal "a stage-2 file with a stage-1 configuration" "give --stage1 FILE only" \
    --config "$T/s1.ini" --stage2 "$F/stage2.pkl" --out "$T/x3"
expect_refusal "a run dir that already has checkpoints" "already holds checkpoints" \
    --config "$T/s1.ini" --stage1 "$F/stage1.pkl" --out "$T/imp"
expect_refusal "a stage-2 file given as stage 1" "tensors of the model missing from the file" \
    --config "$T/s1.ini" --stage1 "$F/stage2.pkl" --out "$T/x4"
expect_refusal "a missing file" "no_such.pkl" --config "$T/s1.ini" --stage1 "$F/no_such.pkl" --out "$T/x5"
head -c 100000 "$F/stage1.pkl" > "$T/cut.pkl"
expect_refusal "a truncated file" "$T/cut.pkl" --config "$T/s1.ini" --stage1 "$T/cut.pkl" --out "$T/x6"
check "nothing written for a refused import" "[ ! -e $T/x6/checkpoints ]"
echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
