#!/usr/bin/env bash
# Malformed inputs of every kind a user hands the tools, made at test time (tests/hostile/ writes
# the HDF5 files and images; model folders and checkpoints are copies of good ones, edited): each
# must be refused with exit 1 or 2 and a message naming the file, within 60 s and 4 GB of address
# space (ulimit -v), never by a crash or a hang. Usage: cli_hostile_inputs.sh BUILD_DIR SOURCE_DIR
B=$1
S=$2
. "$S/tests/shell_lib.sh"
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
G="$B/tests/dod-make-hostile"
DATA="$B/bin/dod-data"
TRAIN="$B/bin/dod-train"
EVAL="$B/bin/dod-eval"
INSPECT="$B/bin/dod-sd-inspect"
slowest=0
# A sanitizer build reserves terabytes of address space for its shadow memory: there the address
# space is not limited (the time still is).
VLIMIT=4000000
( ulimit -v $VLIMIT; exec "$DATA" --help ) > /dev/null 2>&1 ||
    { echo "note: this build cannot start under ulimit -v $VLIMIT (a sanitizer build?): no address-space limit"; VLIMIT=unlimited; }

# bounded CMD...: runs CMD with 4 GB of address space and at most 60 s; output in $T/out.txt, exit
# status in $rc (137 when killed at 60 s).
bounded() {
    local t0 t1
    t0=$(date +%s%N)
    ( ulimit -v $VLIMIT; exec timeout -s KILL 60 "$@" ) > "$T/out.txt" 2>&1
    rc=$?
    t1=$(date +%s%N)
    local ms=$(((t1 - t0) / 1000000))
    [ $ms -gt $slowest ] && slowest=$ms
    return 0
}

# refused WHAT NAME CMD...: CMD exits 1 or 2 and its output contains NAME (the file at fault, or
# the file and key).
refused() {
    local what=$1 name=$2
    shift 2
    bounded "$@"
    if { [ $rc = 1 ] || [ $rc = 2 ]; } && grep -qF -- "$name" "$T/out.txt"; then ok; else
        bad "$what: exit $rc (want 1 or 2 naming $name): $(tail -2 "$T/out.txt")"
    fi
}

# survives WHAT CMD...: CMD ends by itself (no crash, no kill at 60 s) with exit 0, 1 or 2.
survives() {
    local what=$1
    shift
    bounded "$@"
    if [ $rc -le 2 ]; then ok; else bad "$what: exit $rc: $(tail -2 "$T/out.txt")"; fi
}

# ---- dataset files ------------------------------------------------------------------------------
"$G" h5 "$T/h5" || { echo "FAIL: dod-make-hostile h5"; exit 1; }
# a toy run on the good file: the model for dod-eval, the checkpoint to damage below
"$TRAIN" --config "$S/configs/toy.ini" --set "data.train=$T/h5/base.h5" --set data.val= --set data.tasks=dehaze:1,denoise:1 \
    --set train.steps=10 --set data.crop=16 --set checkpoint.every=10 --run-dir "$T/run" --quiet > "$T/train.log" 2>&1 ||
    { cat "$T/train.log"; echo "FAIL: the toy run on the good file"; exit 1; }
# the files refused when opened (every tool), and those with one damaged sample (found by reading it)
at_open="str_array_fixed str_array_vlen count_2p62 count_1e15 nan_sigma external_link truncated garbage empty directory"
in_sample="hq_source_array hq_source_vlen_array sample_noise_sigma_inf dims_2p32 declared_30gb unwritten_8000
           fletcher32 signed_int8 chunk_size_60000 chunk_short_unfiltered soft_link_sample"
for n in $at_open $in_sample; do
    f="$T/h5/$n.h5"
    refused "verify $n" "$f" "$DATA" verify "$f"
    survives "info $n" "$DATA" info "$f"
done
for n in $at_open; do
    f="$T/h5/$n.h5"
    refused "info $n" "$f" "$DATA" info "$f"
    refused "train on $n" "$f" "$TRAIN" --config "$T/run/config.ini" --set "data.train=$f" --set train.steps=2 \
        --set train.run_dir="$T/run_$n" --quiet
done
# images the loader reads (the damage is in an image dataset, not in a provenance attribute)
for n in dims_2p32 declared_30gb unwritten_8000 fletcher32 signed_int8 chunk_size_60000 chunk_short_unfiltered soft_link_sample; do
    f="$T/h5/$n.h5"
    refused "train on $n" "$f" "$TRAIN" --config "$T/run/config.ini" --set "data.train=$f" --set train.steps=2 \
        --set data.threads=0 --set train.run_dir="$T/run_$n" --quiet
done
# evaluation reads every image and the provenance attributes it names outputs by
for n in $at_open $in_sample; do
    f="$T/h5/$n.h5"
    [ "$n" = sample_noise_sigma_inf ] && continue   # read only when a benchmark states a sigma
    refused "eval on $n" "$f" "$EVAL" run --config "$T/run/config.ini" --checkpoint "$T/run" --data "$f" --no-progress
done

# ---- images ---------------------------------------------------------------------------------------
"$G" images "$T/img" || { echo "FAIL: dod-make-hostile images"; exit 1; }
for d in "$T"/img/*; do
    f=$(ls "$d"/*)
    refused "pack $(basename "$f")" "$f" "$DATA" pack --task denoise --clean "$d" --sigma 25 --out "$T/img.h5"
done
[ ! -e "$T/img.h5" ] && ok || bad "a refused pack left $T/img.h5"
refused "pack dims_overflow_pnm.png" "corrupt PNM header: a number of 20 digits" "$DATA" pack --task d \
    --clean "$T/img/dims_overflow_pnm_png" --sigma 25 --out "$T/img.h5"
# the two JPEGs that would overflow stb_image's Huffman table are caught before it decodes them
for n in dht_272_symbols dht_after_fill_byte; do
    refused "pack $n.jpg" "Huffman table declares 272 symbols" "$DATA" pack --task d --clean "$T/img/${n}_jpg" --sigma 25 \
        --out "$T/img.h5"
done

# a PNG chunk longer than the file is refused before stb_image allocates for it
refused "pack idat_beyond_file.png" "corrupt PNG: chunk 'IDAT' at byte 33 declares 1073741808 bytes, the file has 16" \
    "$DATA" pack --task d --clean "$T/img/idat_beyond_file_png" --sigma 25 --out "$T/img.h5"

# ---- model folders (copies of configs/tiny_base, one thing broken in each) -----------------------
model() {   # model NAME: a fresh copy in $T/m_NAME, its path in $M
    M="$T/m_$1"
    cp -r "$S/configs/tiny_base" "$M"
}
json_set() {   # json_set FILE KEY VALUE: the line `"KEY": ...` of FILE becomes `"KEY": VALUE,`
    sed -i "s|^\( *\)\"$2\": .*|\1\"$2\": $3,|" "$1"
}
for kv in "layers_per_block 1000000000" "downsample_padding 1000000" "norm_eps -1" "block_out_channels [1000000000, 48]" \
          "in_channels 100000" "transformer_layers_per_block 100000" "conv_in_kernel 1000001" "norm_eps NaN"; do
    set -- $kv
    key=$1
    shift
    model "unet_$key"
    json_set "$M/unet/config.json" "$key" "$*"
    refused "unet $key = $*" "$M/unet/config.json" "$INSPECT" "$M"
    grep -qF "$key" "$T/out.txt" && ok || bad "unet $key: the key is not named: $(tail -1 "$T/out.txt")"
done
model sched_timesteps
json_set "$M/scheduler/scheduler_config.json" num_train_timesteps 1000000000
refused "num_train_timesteps 1e9" "scheduler_config.json: num_train_timesteps" "$INSPECT" "$M"
model sched_beta
json_set "$M/scheduler/scheduler_config.json" beta_end -5
refused "beta_end -5" "scheduler_config.json: beta_end" "$INSPECT" "$M"
model vae_latent
sed -i 's/"latent_channels":\t4/"latent_channels":\t100000/' "$M/vae/config.json"
refused "vae latent_channels 1e5" "vae/config.json: latent_channels" "$INSPECT" "$M"
model not_json
echo "{ this is not json" > "$M/unet/config.json"
refused "config not JSON" "$M/unet/config.json" "$INSPECT" "$M"
model config_dir
rm "$M/unet/config.json" && mkdir "$M/unet/config.json"
refused "config.json a directory" "$M/unet/config.json" "$INSPECT" "$M"
model nan_weight
"$G" nan "$M/unet/diffusion_pytorch_model.safetensors" conv_in.weight
refused "NaN weight" "tensor conv_in.weight holds a non-finite value" "$INSPECT" "$M"
grep -qF "$M/unet/diffusion_pytorch_model.safetensors" "$T/out.txt" && ok || bad "NaN weight: the file is not named"
model truncated_weights
truncate -s 5000 "$M/vae/diffusion_pytorch_model.safetensors"
refused "truncated weights" "$M/vae/diffusion_pytorch_model.safetensors" "$INSPECT" "$M"
model no_vae
rm -r "$M/vae"
refused "no vae" "$M/vae" "$INSPECT" "$M"

# ---- checkpoints and configurations ----------------------------------------------------------------
ck="$T/run/checkpoints/step_0000010.safetensors"
cp -r "$T/run" "$T/run_neg" && "$G" patch "$T/run_neg/checkpoints/step_0000010.safetensors" '"step":"10"' '"step":"-1"'
refused "checkpoint step -1" "metadata step is -1" "$TRAIN" --resume "$T/run_neg" --set train.steps=12 --quiet
grep -qF "$T/run_neg/checkpoints/step_0000010.safetensors" "$T/out.txt" && ok || bad "step -1: the file is not named"
cp -r "$T/run" "$T/run_past" && "$G" patch "$T/run_past/checkpoints/step_0000010.safetensors" '"step":"10"' '"step":"99"'
refused "checkpoint past the run" "is past [train] steps = 12" "$TRAIN" --resume "$T/run_past" --set train.steps=12 --quiet
cp -r "$T/run" "$T/run_nan" && "$G" nan "$T/run_nan/checkpoints/step_0000010.safetensors" optim.v.conv_out.bias
refused "checkpoint NaN moment" "optim.v.conv_out.bias holds a non-finite value" "$TRAIN" --resume "$T/run_nan" \
    --set train.steps=12 --quiet
cp -r "$T/run" "$T/run_trunc" && truncate -s 300 "$T/run_trunc/checkpoints/step_0000010.safetensors"
refused "checkpoint truncated" "$T/run_trunc/checkpoints/step_0000010.safetensors" "$TRAIN" --resume "$T/run_trunc" \
    --set train.steps=12 --quiet
[ -f "$ck" ] && ok || bad "the good checkpoint is missing"
# finite but huge: loads, and the first step's loss overflows: the run stops naming the step, exit 1
cp -r "$T/run" "$T/run_huge" && "$G" set "$T/run_huge/checkpoints/step_0000010.safetensors" conv_out.bias 3e38
refused "a step going non-finite" "step 11: the loss is inf" "$TRAIN" --resume "$T/run_huge" --set train.steps=12 --quiet
grep -q "every gradient and parameter is finite (the forward overflowed); stopping without saving" "$T/out.txt" && ok ||
    bad "a step going non-finite: $(tail -1 "$T/out.txt")"
# a huge bias of the first layer: the gradients overflow too; the first one that does is named
cp -r "$T/run" "$T/run_huge_grad" && "$G" set "$T/run_huge_grad/checkpoints/step_0000010.safetensors" conv_in.bias 3e38
refused "a gradient going non-finite" "the gradient of conv_out.weight holds" "$TRAIN" --resume "$T/run_huge_grad" \
    --set train.steps=12 --quiet
grep -Eq "holds -?(inf|nan) at element 0; stopping without saving" "$T/out.txt" && ok || bad "a gradient going non-finite: $(tail -1 "$T/out.txt")"
[ ! -e "$T/run_huge_grad/checkpoints/step_0000011.safetensors" ] && ok || bad "a non-finite step was saved"
# the step memory estimate: a crop the machine (here: 4 GB of address space) cannot hold
cap=()
[ $VLIMIT = unlimited ] && cap=(--set train.max_memory=4000)
refused "crop 8192" "Lower [data] crop" "$TRAIN" --config "$T/run/config.ini" --set data.crop=8192 --set train.run_dir="$T/run_big" \
    "${cap[@]}"
[ $VLIMIT = unlimited ] || grep -q "needs about .* MiB .*available (the address-space limit" "$T/out.txt" && ok ||
    bad "crop 8192: $(tail -1 "$T/out.txt")"
refused "max_memory 20" "[train] max_memory" "$TRAIN" --config "$T/run/config.ini" --set data.crop=512 --set train.max_memory=20 \
    --set train.run_dir="$T/run_max"
refused "--config DIR" "$T: is a directory" "$TRAIN" --config "$T"
printf '[data]\ncrop = 1e9\n' > "$T/bad.ini"
refused "INI crop 1e9" "$T/bad.ini:2: [data] crop" "$TRAIN" --config "$T/bad.ini"

# ---- a stop inside a long step (4096 micro-batches): honoured at the next micro-batch ---------------
"$TRAIN" --config "$T/run/config.ini" --set optim.grad_accum=4096 --set train.steps=3 --set train.run_dir="$T/run_int" \
    > "$T/int.txt" 2>&1 &
pid=$!
for _ in $(seq 1 100); do grep -q "memory: a step" "$T/int.txt" 2> /dev/null && break; sleep 0.1; done
sleep 0.5
t0=$(date +%s)
kill -INT $pid
wait $pid
rc=$?
if [ $rc = 130 ] && [ $(($(date +%s) - t0)) -le 10 ] && grep -q "interrupted during step 1 (dropped); nothing new to save" "$T/int.txt"
then ok; else bad "SIGINT inside a step: exit $rc after $(($(date +%s) - t0)) s: $(tail -2 "$T/int.txt")"; fi

# ---- leftovers of killed processes: removed at start-up when their process is gone ----------------
true & dead=$!
wait $dead
cp -r "$T/run" "$T/run_left"
for f in checkpoints/step_0000011.safetensors checkpoints/latest config.ini metrics.jsonl samples/step_0000010.png; do
    echo partial > "$T/run_left/$f.tmp.$dead"
done
echo partial > "$T/run_left/checkpoints/latest.tmp.$$"          # a live process's: kept
echo mine > "$T/run_left/notes.txt.tmp.$dead"                      # not this program's name: kept
bounded "$TRAIN" --resume "$T/run_left" --set train.steps=11 --quiet
left=$(find "$T/run_left" -name "*.tmp.$dead" | wc -l)
if [ $rc = 0 ] && [ "$left" = 1 ] && [ -e "$T/run_left/notes.txt.tmp.$dead" ] && [ -e "$T/run_left/checkpoints/latest.tmp.$$" ] &&
    grep -q "removed stale temporary file $T/run_left/checkpoints/step_0000011.safetensors.tmp.$dead" "$T/out.txt"; then ok; else
    bad "stale temporary files of the run: exit $rc, $left left: $(tail -2 "$T/out.txt")"
fi
mkdir -p "$T/clean" && cp "$S/tests/fixtures/data/coffee.png" "$T/clean/"
echo partial > "$T/packed.h5.tmp.$dead"
bounded "$DATA" pack --task denoise --clean "$T/clean" --sigma 25 --out "$T/packed.h5" --quiet
[ $rc = 0 ] && [ ! -e "$T/packed.h5.tmp.$dead" ] && grep -q "removed stale temporary file" "$T/out.txt" && ok ||
    bad "stale temporary file of dod-data pack: exit $rc: $(tail -2 "$T/out.txt")"

# ---- a disk that fills up (a file size limit: writes fail with EFBIG as with ENOSPC) ---------------
# Two limits: the copy of the existing file fails, or libhdf5's writes and close do (after which
# libhdf5's exit handler used to crash).
cp "$T/packed.h5" "$T/full.h5"
before=$(md5sum < "$T/full.h5")
for kib in 4 $(( $(stat -c %s "$T/full.h5") / 1024 + 16 )); do
    ( trap '' XFSZ; ulimit -f $kib; exec "$DATA" pack --task more --clean "$S/tests/fixtures/data" --sigma 25 \
        --out "$T/full.h5" --append ) > "$T/out.txt" 2>&1
    rc=$?
    if [ $rc = 1 ] && grep -q "full.h5.*File too large" "$T/out.txt" && [ "$(md5sum < "$T/full.h5")" = "$before" ] &&
        [ -z "$(ls "$T" | grep 'full.h5.tmp')" ]; then ok; else
        bad "pack --append on a full disk ($kib KiB): exit $rc: $(tail -2 "$T/out.txt")"
    fi
done

echo "slowest command: $slowest ms (limit 60000)"
echo "$pass passed, $fail failed"
[ $fail = 0 ]
