#!/usr/bin/env bash
# One-command GPU check for the CUDA backend, for a machine with an NVIDIA GPU (H100/H200: sm_90).
# Stages (each independent: a failure is recorded and the script goes on; the exit status says whether
# any stage failed):
#   1. configure + build (build-gpu/, CMAKE_CUDA_ARCHITECTURES=90 unless CUDA_ARCH is set)
#   2. the GPU parity suite (tests/test_cuda_ops.c, every CUDA op vs the CPU op; a SKIP fails here),
#      (and again on bf16 activations), then the DOD gradient fixture on CUDA (tests/test_dod_model.c:
#      f32 mode, mixed precision with f32 and with bf16 activations), then the CLIP text encoder on CUDA
#      against transformers (tests/test_clip_text.c), then the device training tests
#      (tests/test_train_device.c: CUDA vs CPU steps, resume, validation; tests/test_checkpoint.c: device
#      checkpoints) -- they run the host pipeline: staged host-to-device copies, the step's scalars read
#      once per step, gradient clipping without a host sync
#   3. dod-parity --device cuda on every SD fixture (UNet + VAE forwards on the GPU vs diffusers);
#      then the NCCL path with one process: dod-train on the tiny DOD fixture, [model] device = cuda,
#      3 steps with [dist] backend = nccl (world 1: the bucketed gradients through NCCL on a side
#      stream) against the plain path: the same losses and parameters (bitwise when two plain runs
#      agree bitwise; otherwise within 1e-5 relative, CUDA kernels not being deterministic)
#      then the paths added since the last GPU run, each against the CPU: dod-train on CUDA with VSD +
#      LPIPS and with the ADM extractor (3 steps of the tiny fixture, losses within 2e-2 relative), and
#      dod-restore --device cuda on the adapter fixture against PyTorch + PEFT (>= 35 dB)
#   4. ONE TRAINING STEP OF THE FULL DOD MODEL at SD 2.1-base size (865M-parameter UNet shape, random
#      frozen weights built from the SD 2.1-base configs written below; spec-sized LoRA rank 8,
#      modulation, stage 1), 256x256 crops, batch 7, in f32 mode and in mixed precision:
#        ours:    dod-bench train --device cuda --base DIR --random-weights --precision P (weights made in C;
#                 mixed stores activations in bf16, dod-train's default for precision = mixed)
#        PyTorch: scripts/bench_train_torch.py --device cuda --base DIR --precision P (diffusers eager,
#                 weights made directly on the GPU; mixed = bf16 frozen weights + bf16 autocast; NOT RUN
#                 when torch / diffusers / a CUDA torch is missing)
#      step time (median of BENCH_ITERS after one warm-up), peak device memory, the ratio, per precision;
#      ours also with --recompute (activation recomputation, the configs' default), and mixed with
#      --activations f32 (what bf16 activation storage buys); our FLOPs, TFLOP/s and MFU per step; PyTorch
#      as its variant "eager" (diffusers' defaults) and, in mixed precision, also "best" (channels_last,
#      scaled_dot_product_attention, cudnn.benchmark), and its own FLOP count (torch.utils.flop_counter,
#      forward + backward); then the mixed step once more
#      under DOD_PROFILE=1: time, TFLOP/s and % of the bf16 peak per op and per op kind;
#      and (when time is left) the all-reduce cost of that stage-1 gradient set: dod-bench train --dist
#      --backend nccl, one process (the bucket copies and NCCL's world-1 all-reduce; the cost on 8 GPUs
#      needs mpirun -np 8 on such a node, docs/training.md)
#   5. (when time is left) dod-bench cuda_block: the one-block-pair micro benchmark, f32 and mixed;
#      then dod-bench cuda_attention: op_attention's chunked-GEMM and fused kernels against PyTorch's
#      scaled_dot_product_attention, SD 2.x level-1 shapes up to 1024x1024; then PyTorch's mixed step
#      with torch.compile (variant "compile", minutes of compilation: last).
#   6. the results as Markdown rows for docs/benchmarks.md (date, device, command, result, PyTorch,
#      ratios, peak memory; MFU per op kind).
# Budget: under 8 minutes on an H100 with 16 cores; a stage that would start after BUDGET_S seconds
# (the benchmarks of 4. and 5.: that would not also end by then) is reported NOT RUN (out of time),
# and every stage runs under a timeout cut to end by BUDGET_S + 30 s. Without a GPU (nvidia-smi missing
# or listing none) it builds, reports every GPU stage NOT RUN and exits 1, in seconds.
#
# Usage: bash scripts/gpu-check.sh [BUILD_DIR]
#   env: CUDA_ARCH=90, JOBS=$(nproc), PYTHON=python3, BENCH_ITERS=3, BUDGET_S=420
set -u
SRC="$(cd "$(dirname "$0")/.." && pwd)"
BUILD="${1:-$SRC/build-gpu}"
ARCH="${CUDA_ARCH:-90}"
JOBS="${JOBS:-$(nproc)}"
ITERS="${BENCH_ITERS:-3}"
BUDGET="${BUDGET_S:-420}"
export PYTHON="${PYTHON:-python3}"
failed=()
not_run=()
stage() { echo; echo "==== $1 ($(date +%T), ${SECONDS}s)"; }
run_stage() {  # run_stage NAME CMD...: runs CMD, records NAME on failure, never aborts the script
    local name="$1"; shift
    "$@"
    local rc=$?
    if [ "$rc" -eq 0 ]; then echo "---- $name: OK"; else echo "---- $name: FAILED (exit $rc)"; failed+=("$name"); fi
    return 0
}
skip_stage() { echo "---- $1: NOT RUN ($2)"; not_run+=("$1"); }
time_left() { [ $((SECONDS + ${1:-0})) -lt "$BUDGET" ]; }  # time_left [N]: N more seconds still fit
# limit N: a stage's timeout, N seconds but never past BUDGET_S + 30 (at least 10): the script ends on time.
limit() { local left=$((BUDGET + 30 - SECONDS)); ((left < 10)) && left=10; echo $(($1 < left ? $1 : left)); }
no_gpu=""  # set below when no GPU is visible: every GPU stage is then NOT RUN (the build still runs)
# can_start NAME FILE [N]: true when stage NAME may start: FILE (under the build dir; "" for none) was
# built, a GPU is visible and N more seconds fit the budget; otherwise it is recorded NOT RUN with why.
can_start() {
    if [ -n "$2" ] && [ ! -x "$BUILD/$2" ]; then skip_stage "$1" "not built"
    elif [ -n "$no_gpu" ]; then skip_stage "$1" "$no_gpu"
    elif ! time_left "${3:-0}"; then skip_stage "$1" "out of time budget"
    else return 0; fi
    return 1
}

stage "GPU"
if command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; then
    :
else
    no_gpu="no GPU: nvidia-smi is missing or lists none"
    echo "$no_gpu (the build still runs; every GPU stage is NOT RUN)"
fi
echo "cpu cores: $(nproc)"

# ---- 1. build --------------------------------------------------------------------------------------
stage "build ($BUILD, sm_$ARCH)"
build() {
    mkdir -p "$BUILD" || return 1
    # A GPU machine without Debian's libstb-dev / libcjson-dev / libiniparser-dev / libpcre2-dev /
    # libunistring-dev / zlib1g-dev / libzip-dev: the headers and
    # libraries copied into $SRC/.gpudeps by scripts/gpu-deps.sh on a machine that has them.
    local deps=()
    if [ -d "$SRC/.gpudeps" ] && [ ! -f /usr/include/stb/stb_image.h ]; then
        local D="$SRC/.gpudeps"
        deps=(-DSTB_INCLUDE_DIR="$D/include/stb" -DCJSON_INCLUDE_DIR="$D/include" -DCJSON_LIB="$D/lib/libcjson.so"
              -DINIPARSER_INCLUDE_DIR="$D/include/iniparser" -DINIPARSER_LIB="$D/lib/libiniparser.a"
              -DPCRE2_INCLUDE_DIR="$D/include" -DPCRE2_LIB="$D/lib/libpcre2-8.a"
              -DUNISTRING_INCLUDE_DIR="$D/include" -DUNISTRING_LIB="$D/lib/libunistring.a"
              -DZLIB_INCLUDE_DIR="$D/include" -DZLIB_LIBRARY="$D/lib/libz.a")
        # libzip is optional (zip-format PyTorch checkpoints) and shared: only where its own
        # dependencies are on the image, else the build reads legacy-format checkpoints only.
        if [ -f "$D/lib/libzip.so" ] && ldconfig -p 2>/dev/null | grep -q 'libcrypto\.so\.3 ' &&
           ldconfig -p 2>/dev/null | grep -q 'libbz2\.so\.1\.0 '; then
            deps+=(-DLIBZIP_INCLUDE_DIR="$D/include" -DLIBZIP_LIB="$D/lib/libzip.so")
        else
            echo "libzip not used: no $D/lib/libzip.so, or the image lacks libcrypto.so.3 / libbz2.so.1.0"
        fi
        export LD_LIBRARY_PATH="$D/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
        echo "using the dependencies in $D"
    fi
    cmake -S "$SRC" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES="$ARCH" "${deps[@]}" >"$BUILD/cmake.log" 2>&1 \
        || { tail -30 "$BUILD/cmake.log"; return 1; }
    grep -E "dod: (CUDA|cuBLAS|cuDNN|NCCL)" "$BUILD/cmake.log"
    cmake --build "$BUILD" -j"$JOBS" --target dod test_cuda_ops test_dod_model test_clip_text test_train_device \
        test_checkpoint dod-bench dod-parity dod-train dod-data dod-sd-inspect >"$BUILD/build.log" 2>&1
    local rc=$?
    grep -E "warning|error|Error" "$BUILD/build.log" | head -40
    [ "$rc" -eq 0 ] || { tail -20 "$BUILD/build.log"; return 1; }
    grep -q "CUDA (nvcc) ... found" "$BUILD/cmake.log" || { echo "nvcc not found: this build has no CUDA backend"; return 1; }
}
run_stage build build

# ---- 2. GPU parity suite ---------------------------------------------------------------------------
stage "GPU parity suite (tests/test_cuda_ops)"
parity_suite() {  # on this machine a SKIP (no GPU visible) is a failure
    local log="$BUILD/test_cuda_ops.log"
    (cd "$BUILD" && timeout "$(limit 300)" ./tests/test_cuda_ops) >"$log" 2>&1
    local rc=$?
    tail -40 "$log"
    if grep -q '^SKIP' "$log"; then echo "no GPU visible to the suite"; return 1; fi
    return "$rc"
}
can_start parity-suite tests/test_cuda_ops && run_stage parity-suite parity_suite

stage "DOD gradient fixture on CUDA (tests/test_dod_model)"
dod_fixture() {  # the CPU checks run too (seconds); a SKIP of the CUDA part is a failure here
    local log="$BUILD/test_dod_model.log"
    (cd "$BUILD" && timeout "$(limit 180)" ./tests/test_dod_model) >"$log" 2>&1
    local rc=$?
    grep -E "CUDA|FAIL|passed" "$log" | head -40
    if grep -q '^SKIP' "$log"; then echo "no GPU visible to the test"; return 1; fi
    return "$rc"
}
can_start dod-fixture-cuda tests/test_dod_model && run_stage dod-fixture-cuda dod_fixture

stage "device training tests (tests/test_train_device, tests/test_checkpoint)"
device_test() {  # device_test NAME: the CPU checks run too; a SKIP of the CUDA part is a failure here
    local log="$BUILD/$1.log"
    (cd "$BUILD" && timeout "$(limit 180)" "./tests/$1") >"$log" 2>&1
    local rc=$?
    grep -E "SKIP|FAIL|passed" "$log" | head -20
    if grep -q '^SKIP' "$log"; then echo "no GPU visible to $1"; return 1; fi
    return "$rc"
}
for t in test_train_device test_checkpoint; do
    can_start "$t" "tests/$t" && run_stage "$t" device_test "$t"
done

stage "CLIP text encoder on CUDA (tests/test_clip_text)"
clip_text_cuda() {  # transformers' hidden states with the encoder on the GPU (causal attention, quick-GELU)
    local log="$BUILD/test_clip_text.log"
    (cd "$BUILD" && timeout "$(limit 120)" ./tests/test_clip_text) >"$log" 2>&1
    local rc=$?
    grep -E "CUDA|FAIL|passed" "$log" | head -20
    if grep -q 'skipping the CUDA cases' "$log"; then echo "no GPU visible to the test"; return 1; fi
    return "$rc"
}
can_start clip-text-cuda tests/test_clip_text && run_stage clip-text-cuda clip_text_cuda

# ---- 3. dod-parity --device cuda -------------------------------------------------------------------
stage "dod-parity --device cuda"
for fix in "$SRC"/tests/fixtures/sd/*/; do
    name="dod-parity-$(basename "$fix")"
    can_start "$name" bin/dod-parity && run_stage "$name" timeout "$(limit 120)" "$BUILD/bin/dod-parity" "$fix" --device cuda
done

stage "NCCL path, one process: dod-train [dist] backend = nccl vs none (tiny DOD fixture, cuda, 3 steps)"
nccl_one_process() {
    . "$SRC/tests/shell_lib.sh"
    local D="$BUILD/nccl_check" run
    rm -rf "$D" && mkdir -p "$D" && tiny_dod_data "$BUILD" "$D/syn.h5" || return 1
    tiny_dod_ini "$D/tiny.ini" "$D/syn.h5" "$D/unused"
    printf '[model]\ndevice = cuda\nfrozen_dtype = f32\n[train]\nsteps = 3\n[log]\nevery = 1\n[dist]\nbucket_mb = 0.01\n' >> "$D/tiny.ini"
    for run in plain plain2 nccl; do
        local backend=none; [ "$run" = nccl ] && backend=nccl
        timeout "$(limit 120)" "$BUILD/bin/dod-train" --config "$D/tiny.ini" --set dist.backend=$backend --run-dir "$D/$run" \
            >"$D/$run.log" 2>&1 || { echo "$run:"; tail -5 "$D/$run.log"; return 1; }
    done
    grep -E "data parallel|gradient all-reduce" "$D/nccl.log"
    local ck=checkpoints/step_0000003.safetensors
    losses() { grep -o '"loss": [^,]*' "$D/$1/metrics.jsonl" | cut -d' ' -f2; }
    paste <(losses plain) <(losses nccl) | sed 's/^/  loss plain | nccl: /'
    if same_tensors "$BUILD" "$D/plain/$ck" "$D/plain2/$ck"; then   # the plain path repeats itself: demand bits
        same_tensors "$BUILD" "$D/plain/$ck" "$D/nccl/$ck" && diff -q <(losses plain) <(losses nccl) >/dev/null &&
            echo "nccl = plain bit for bit (losses, parameters, moments)" && return 0
        echo "nccl differs from the plain path, which repeats itself bit for bit"; return 1
    fi
    echo "two plain CUDA runs differ (nondeterministic kernels): losses compared within 1e-5 relative"
    paste <(losses plain) <(losses nccl) |
        awk '{ d = ($1 - $2) / $1; if (d < 0) d = -d; if (d > 1e-5) bad = 1 } END { exit bad }'
}
if [ ! -x "$BUILD/bin/dod-data" ] || [ ! -x "$BUILD/bin/dod-sd-inspect" ]; then skip_stage nccl-one-process "not built"
elif ! grep -q "NCCL ... found" "$BUILD/cmake.log"; then skip_stage nccl-one-process "NCCL not found at configure time"
elif can_start nccl-one-process bin/dod-train; then run_stage nccl-one-process nccl_one_process; fi

stage "paths added since the last GPU run: VSD + LPIPS and the ADM extractor in dod-train, dod-restore (cuda vs cpu)"
# dod-train on the tiny DOD fixture, 3 steps, [model] device = cuda vs cpu (frozen_dtype f32): each
# step's loss within 2e-2 relative (frozen weights f32; CUDA's f32 GEMMs and reductions differ in rounding, and the runs
# drift apart through AdamW). VSD (teacher, regulariser and its AdamW; op_div), LPIPS (max-pool,
# channel normalisation) and the guided-diffusion encoder (tests/fixtures/adm) run on the GPU here.
new_paths_train() {  # new_paths_train NAME: "vsd-lpips" or "adm"
    . "$SRC/tests/shell_lib.sh"
    local D="$BUILD/new_paths_$1" dev
    rm -rf "$D" && mkdir -p "$D" && tiny_dod_data "$BUILD" "$D/syn.h5" || return 1
    tiny_dod_ini "$D/run.ini" "$D/syn.h5" "$D/unused"
    if [ "$1" = adm ]; then tiny_dod_adm "$D/run.ini"
    else
        "$BUILD/bin/dod-bench" lpips_random_vgg "$D/vgg.safetensors" > /dev/null || return 1
        printf '[model]\nfrozen_dtype = f32\nnegative_prompt = "blurry, lowres"\n[loss]\nvsd = 1\nvsd_lora_rank = 2\nlpips = 5\nlpips_vgg = %s\nlpips_lin = %s\n' \
            "$D/vgg.safetensors" "$SRC/tests/fixtures/lpips/vgg_lin_v0.1.pth" >> "$D/run.ini"
    fi
    printf '[train]\nsteps = 3\n[log]\nevery = 1\n[val]\nevery = 0\n' >> "$D/run.ini"
    for dev in cpu cuda; do
        timeout "$(limit 150)" "$BUILD/bin/dod-train" --config "$D/run.ini" --set model.device=$dev --run-dir "$D/$dev" \
            >"$D/$dev.log" 2>&1 || { echo "$dev:"; tail -5 "$D/$dev.log"; return 1; }
    done
    losses() { grep -o '"loss": [^,]*' "$D/$1/metrics.jsonl" | cut -d' ' -f2; }
    paste <(losses cpu) <(losses cuda) | sed 's/^/  loss cpu | cuda: /'
    paste <(losses cpu) <(losses cuda) |
        awk '{ n++; d = ($1 - $2) / $1; if (d < 0) d = -d; if (d > 2e-2 || $2 != $2 + 0) bad = 1 } END { exit bad || n != 3 }'
}
for v in vsd-lpips adm; do
    can_start "train-cuda-$v" bin/dod-train 120 && run_stage "train-cuda-$v" new_paths_train "$v"
done
# dod-restore --device cuda (bf16 frozen weights, mixed precision) on the committed adapter fixture
# against PyTorch + PEFT's outputs (tests/cli_restore.sh holds the CPU to 75 dB): PSNR >= 35 dB, whole
# and in latent tiles.
restore_cuda() {
    local D="$BUILD/restore_cuda" FIX="$SRC/tests/fixtures/restore" m args p
    rm -rf "$D" && mkdir -p "$D"
    for m in whole tiled; do
        args="--tile 96 --overlap 32"; [ $m = tiled ] && args="--tile 16 --overlap 8"
        # shellcheck disable=SC2086
        timeout "$(limit 120)" "$BUILD/bin/dod-restore" --device cuda --base "$SRC/tests/fixtures/sd/sd2_tiny/model" \
            --adapter "$FIX/adapter.safetensors" --in "$FIX/input.png" --out "$D/c_$m" $args > "$D/$m.log" 2>&1 ||
            { tail -5 "$D/$m.log"; return 1; }
        mkdir -p "$D/t_$m" && cp "$FIX/torch_$m.png" "$D/t_$m/input.png"
        p=$("$BUILD/bin/dod-eval" metrics --profile basicsr --pred "$D/c_$m" --gt "$D/t_$m" | awk '$1 == "average" { print $2 }')
        echo "  dod-restore --device cuda vs PyTorch ($m): PSNR $p dB"
        awk -v p="$p" 'BEGIN { exit !(p == "inf" || p >= 35) }' || return 1
    done
}
can_start restore-cuda bin/dod-restore 60 && run_stage restore-cuda restore_cuda

# ---- 4. full DOD training step at SD 2.1-base size -------------------------------------------------
stage "full DOD training step, SD 2.1-base shapes (random weights), batch 7, 256x256, stage 1"
SD21="$BUILD/sd21_base"
write_sd21_configs() {  # the SD 2.1-base configs (scripts/make_sd_fullsize_fixture.py: SD21_UNET, SD_VAE)
    mkdir -p "$SD21/unet" "$SD21/vae" "$SD21/scheduler" || return 1
    cat >"$SD21/unet/config.json" <<'JSON'
{
  "_class_name": "UNet2DConditionModel", "_diffusers_version": "0.21.4",
  "act_fn": "silu", "attention_head_dim": [5, 10, 20, 20], "block_out_channels": [320, 640, 1280, 1280],
  "center_input_sample": false, "cross_attention_dim": 1024,
  "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
  "downsample_padding": 1, "flip_sin_to_cos": true, "freq_shift": 0, "in_channels": 4, "layers_per_block": 2,
  "mid_block_scale_factor": 1, "norm_eps": 1e-05, "norm_num_groups": 32, "out_channels": 4, "sample_size": 96,
  "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
  "upcast_attention": false, "use_linear_projection": true
}
JSON
    cat >"$SD21/vae/config.json" <<'JSON'
{
  "_class_name": "AutoencoderKL", "_diffusers_version": "0.21.4",
  "act_fn": "silu", "block_out_channels": [128, 256, 512, 512],
  "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"],
  "in_channels": 3, "latent_channels": 4, "layers_per_block": 2, "norm_num_groups": 32, "out_channels": 3,
  "sample_size": 768, "scaling_factor": 0.18215,
  "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"]
}
JSON
    cat >"$SD21/scheduler/scheduler_config.json" <<'JSON'
{
  "_class_name": "DDIMScheduler", "_diffusers_version": "0.21.4",
  "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085, "clip_sample": false,
  "num_train_timesteps": 1000, "prediction_type": "epsilon", "set_alpha_to_one": false, "steps_offset": 1,
  "trained_betas": null
}
JSON
}
run_stage sd21-configs write_sd21_configs

declare -A OURS_MS OURS_MEM OURS_RATE OURS_FLOPS TORCH_MS TORCH_MEM TORCH_RES TORCH_FLOPS
ours_step() {  # ours_step f32|mixed [FLAGS]; results under "f32", "f32 --recompute", "mixed --activations f32", ...
    local key="$*" log="$BUILD/bench_full_ours_$(echo "$*" | tr -s ' -' '_').log"
    timeout "$(limit 240)" "$BUILD/bin/dod-bench" train --device cuda --base "$SD21" --random-weights --stage 1 --batch 7 \
        --crop 256 --iters "$ITERS" --precision "$@" --no-torch >"$log" 2>&1
    local rc=$?
    cat "$log"
    OURS_MS[$key]=$(awk '/^ours: / {print $2}' "$log")
    OURS_MEM[$key]=$(awk '/^ours peak memory:/ {print $4}' "$log")
    OURS_RATE[$key]=$(sed -n 's/^ours rate: \([0-9.]* TFLOP\/s\(, MFU [0-9.]*%\)\?\).*/\1/p' "$log")
    OURS_FLOPS[$key]=$(sed -n 's/^ours FLOPs per step: \([0-9.]*\) TFLOP model.*/\1/p' "$log")
    [ "$rc" -eq 0 ] && [ -n "${OURS_MS[$key]}" ]
}
torch_step() {  # torch_step f32|mixed VARIANTS [TIMEOUT]: results under "$1 <variant>"
    local log="$BUILD/bench_full_torch_$1_$(echo "$2" | tr , _).log" v ms peak res count=--count-flops
    [ "$2" = compile ] && count=""  # counted with the eager run already
    timeout "$(limit "${3:-300}")" "$PYTHON" "$SRC/scripts/bench_train_torch.py" --device cuda --base "$SD21" --stage 1 --batch 7 \
        --crop 256 --iters "$ITERS" --precision "$1" --variants "$2" $count >"$log" 2>&1
    local rc=$?
    cat "$log"
    while read -r v ms peak res; do
        TORCH_MS["$1 $v"]=$ms; TORCH_MEM["$1 $v"]=$peak; TORCH_RES["$1 $v"]=$res
    done < <(awk '/^torch_variant / {print $2, $3, $4, $5}' "$log")
    [ -n "$(awk '/^torch_flops / {print $2}' "$log")" ] && TORCH_FLOPS[$1]=$(awk '/^torch_flops / {print $2}' "$log")
    [ "$rc" -eq 0 ] && [ -n "${TORCH_MS[$1 eager]:-}${TORCH_MS[$1 compile]:-}" ]
}
profile_step() {  # the mixed step under DOD_PROFILE=1: time, TFLOP/s and % of peak per op and op kind
    local log="$BUILD/bench_full_profile_mixed.log"
    DOD_PROFILE=1 timeout "$(limit 240)" "$BUILD/bin/dod-bench" train --device cuda --base "$SD21" --random-weights --stage 1 \
        --batch 7 --crop 256 --iters 2 --precision mixed --no-torch >"$log" 2>&1
    local rc=$?
    sed -n '/^dod: op profile/,$p' "$log" | head -60
    sed -n '/^  by kind/,/ops without FLOPs/p' "$log" >"$BUILD/profile_kinds.txt"
    [ "$rc" -eq 0 ] && [ -s "$BUILD/profile_kinds.txt" ]
}
# Python packages the GPU machine lacks (diffusers) travel as wheels in $SRC/.whl (scripts/gpu-deps.sh).
if [ -d "$SRC/.whl" ] && ! "$PYTHON" -c 'import diffusers' 2>/dev/null; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/dod-site \
        "$SRC"/.whl/*.whl && export PYTHONPATH="/tmp/dod-site${PYTHONPATH:+:$PYTHONPATH}"
fi
torch_missing=$("$PYTHON" -c 'import torch, diffusers, safetensors, numpy
print("" if torch.cuda.is_available() else "torch " + torch.__version__ + " sees no CUDA device")' 2>&1 | tail -1)
variants() {  # the flag sets ours runs with, per precision
    echo ""
    echo "--recompute"
    [ "$1" = mixed ] && echo "--activations f32"
}
for prec in f32 mixed; do
    while IFS= read -r flags; do
        name="full-step-ours-$prec$(echo "$flags" | sed 's/--/-/g; s/ /-/g')"
        can_start "$name" bin/dod-bench && run_stage "$name" ours_step "$prec" $flags
    done < <(variants "$prec")
    if ! command -v "$PYTHON" >/dev/null; then skip_stage "full-step-torch-$prec" "no $PYTHON"
    elif [ -n "$torch_missing" ]; then skip_stage "full-step-torch-$prec" "$torch_missing"
    elif ! can_start "full-step-torch-$prec" ""; then :
    elif [ "$prec" = f32 ]; then run_stage "full-step-torch-$prec" torch_step "$prec" eager  # the goals are mixed
    else run_stage "full-step-torch-$prec" torch_step "$prec" eager,best; fi
done
can_start full-step-profile-mixed bin/dod-bench 60 && run_stage full-step-profile-mixed profile_step

echo
echo "full DOD training step (SD 2.1-base shapes, batch 7, 256x256, stage 1):"
torch_variants() { echo eager; [ "$1" = mixed ] && echo best; }  # the PyTorch variants run per precision
for prec in f32 mixed; do
    for v in $(torch_variants "$prec"); do
        t="${TORCH_MS[$prec $v]:-}"
        if [ -n "$t" ]; then echo "  $prec PyTorch $v: $t ms, peak ${TORCH_MEM[$prec $v]:-?} GiB allocated, ${TORCH_RES[$prec $v]:-?} GiB reserved"
        else echo "  $prec PyTorch $v: NOT RUN"; fi
    done
    while IFS= read -r flags; do
        key="$prec${flags:+ $flags}"
        o="${OURS_MS[$key]:-}"
        if [ -z "$o" ]; then echo "  $key ours: NOT RUN"; continue; fi
        echo "  $key ours: $o ms, peak ${OURS_MEM[$key]:-?} GiB reserved, ${OURS_RATE[$key]:-rate not printed}"
        for v in $(torch_variants "$prec"); do  # memory: our reserved peak against PyTorch's reserved peak
            t="${TORCH_MS[$prec $v]:-}"
            [ -n "$t" ] && awk -v a="$o" -v b="$t" -v k="$key" -v v="$v" -v ma="${OURS_MEM[$key]:-0}" -v mb="${TORCH_RES[$prec $v]:-0}" \
                'BEGIN { printf "  %s ratio ours/torch %s: time %.2f, memory %.2f (reserved / reserved)\n", k, v, a / b, (mb > 0 ? ma / mb : 0) }'
        done
    done < <(variants "$prec")
    [ -n "${TORCH_FLOPS[$prec]:-}" ] && awk -v t="${TORCH_FLOPS[$prec]}" -v o="${OURS_FLOPS[$prec]:-0}" -v p="$prec" \
        'BEGIN { printf "  %s FLOPs per step, forward + backward: ours %.3f TFLOP (model), PyTorch'"'"'s torch.utils.flop_counter %.3f TFLOP (its SDPA backward counts the remade Q K^T)\n", p, o, t / 1e12 }' 
done

stage "gradient all-reduce cost of the stage-1 set at SD 2.1-base size (dod-bench train --dist, nccl, one process)"
allreduce_cost() {
    timeout "$(limit 240)" "$BUILD/bin/dod-bench" train --dist --backend nccl --device cuda --base "$SD21" --random-weights --stage 1 \
        --batch 7 --crop 256 --iters "$ITERS" --precision mixed --recompute
}
if ! grep -q "NCCL ... found" "$BUILD/cmake.log"; then skip_stage allreduce-cost "NCCL not found at configure time"
elif can_start allreduce-cost bin/dod-bench 90; then run_stage allreduce-cost allreduce_cost; fi

# ---- 5. block-pair micro benchmark (when time is left) ----------------------------------------------
cuda_block() {  # a SKIP (no GPU visible) is a failure here
    local log="$BUILD/bench_cuda_block.log"
    timeout "$(limit 90)" "$BUILD/bin/dod-bench" cuda_block --batch 7 --size 32 --iters 5 "$@" >"$log" 2>&1
    local rc=$?
    cat "$log"
    ! grep -q '^SKIP' "$log" && [ "$rc" -eq 0 ]
}
stage "micro benchmark: SD 2.1 level-1 block pair (dod-bench cuda_block)"
for mode in f32 mixed; do
    flag=""; [ "$mode" = mixed ] && flag="--mixed"
    can_start "cuda-block-$mode" bin/dod-bench 90 && run_stage "cuda-block-$mode" cuda_block $flag
done

attention_kernels() {  # a SKIP (no GPU visible) is a failure here
    local log="$BUILD/bench_cuda_attention.log"
    timeout "$(limit 120)" "$BUILD/bin/dod-bench" cuda_attention --iters 3 >"$log" 2>&1
    local rc=$?
    cat "$log"
    ! grep -q '^SKIP' "$log" && [ "$rc" -eq 0 ]
}
stage "micro benchmark: attention kernels (dod-bench cuda_attention)"
can_start cuda-attention bin/dod-bench 120 && run_stage cuda-attention attention_kernels

stage "PyTorch's mixed step with torch.compile (variant compile)"
if ! command -v "$PYTHON" >/dev/null; then skip_stage full-step-torch-compile "no $PYTHON"
elif [ -n "$torch_missing" ]; then skip_stage full-step-torch-compile "$torch_missing"
elif ! can_start full-step-torch-compile "" 150; then :
else
    # PyTorch's compiler failing is reported, not counted as a failure of this check
    torch_step mixed compile $((BUDGET - SECONDS))
    if [ -n "${TORCH_MS[mixed compile]:-}" ]; then echo "---- full-step-torch-compile: OK"
    else
        why=$(sed -n 's/^torch_variant_missing compile | //p' "$BUILD/bench_full_torch_mixed_compile.log" | head -1)
        skip_stage full-step-torch-compile "${why:-no result within the time left: $BUILD/bench_full_torch_mixed_compile.log}"
    fi
fi

# ---- 6. Markdown rows for docs/benchmarks.md ---------------------------------------------------------
stage "Markdown rows for docs/benchmarks.md"
commit=$(git -C "$SRC" rev-parse --short HEAD 2>/dev/null || echo "(no git)")
gpu_name=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
today=$(date +%F)
if [ -z "${OURS_MS[*]:-}" ]; then echo "(no step was measured: nothing to record)"; else
    echo "| recorded | machine | command | ours | PyTorch (same run) | time ours / PyTorch | peak memory ours / PyTorch (reserved) |"
    echo "|---|---|---|---|---|---|---|"
fi
for prec in f32 mixed; do
    while IFS= read -r flags; do
        key="$prec${flags:+ $flags}"
        [ -n "${OURS_MS[$key]:-}" ] || continue
        ref=""; ratio=""; mem="${OURS_MEM[$key]:-?} GiB"
        for v in eager best compile; do
            t="${TORCH_MS[$prec $v]:-}"
            [ -n "$t" ] || continue
            ref+="${ref:+; }$v ${t} ms"
            ratio+="${ratio:+; }$v $(awk -v a="${OURS_MS[$key]}" -v b="$t" 'BEGIN { printf "%.2f", a / b }')"
            mem+="; $v $(awk -v a="${OURS_MEM[$key]:-0}" -v b="${TORCH_RES[$prec $v]:-0}" 'BEGIN { if (b > 0) printf "%.2f (%.1f GiB)", a / b, b; else printf "?" }')"
        done
        echo "| $commit, $today | ${gpu_name:-no GPU} | \`dod-bench train --device cuda --base BUILD/sd21_base --random-weights --stage 1 --batch 7 --crop 256 --iters $ITERS --precision $prec${flags:+ $flags}\` | ${OURS_MS[$key]} ms, ${OURS_RATE[$key]:-?} | ${ref:-NOT RUN} | ${ratio:-} | $mem |"
    done < <(variants "$prec")
done
if [ -s "$BUILD/profile_kinds.txt" ]; then
    echo
    echo "| recorded | machine | command | op kind | share of op time | TFLOP/s | of the bf16 peak |"
    echo "|---|---|---|---|---|---|---|"
    sed -n 's/^    \(.*[^ ]\) \{2,\}\([0-9.]*%\) of op time \{1,\}\([0-9.]*\) TFLOP\/s \{1,\}\([0-9.]*%\) of peak$/\1|\2|\3|\4/p; s/^    \(ops without FLOPs counted\) \{2,\}\([0-9.]*%\) of op time$/\1|\2||/p' \
        "$BUILD/profile_kinds.txt" | while IFS='|' read -r kind share rate peak; do
        echo "| $commit, $today | ${gpu_name:-no GPU} | \`DOD_PROFILE=1 dod-bench train ... --precision mixed\` (synchronised per op) | $kind | $share | $rate | $peak |"
    done
fi

echo
echo "gpu-check: ${SECONDS}s"
((${#not_run[@]})) && echo "gpu-check: NOT RUN: ${not_run[*]}"
if ((${#failed[@]})); then echo "gpu-check: FAILED stages: ${failed[*]}"; exit 1; fi
if [ -n "$no_gpu" ]; then echo "gpu-check: $no_gpu: built, nothing checked on a GPU"; exit 1; fi
echo "gpu-check: all stages that ran passed"
