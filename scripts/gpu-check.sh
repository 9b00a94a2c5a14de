#!/usr/bin/env bash
# One-command GPU check for the CUDA backend, for a machine with an NVIDIA GPU (H100/H200: sm_90).
# Stages (each independent: a failure is recorded and the script goes on; the exit status says whether
# any stage failed):
#   1. configure + build (build-gpu/, CMAKE_CUDA_ARCHITECTURES=90 unless CUDA_ARCH is set)
#   2. the GPU parity suite (tests/test_cuda_ops.c, every CUDA op vs the CPU op; a SKIP fails here),
#      (and again on bf16 activations), then the DOD gradient fixture on CUDA (tests/test_dod_model.c:
#      f32 mode, mixed precision with f32 and with bf16 activations), then the CLIP text encoder on CUDA
#      against transformers (tests/test_clip_text.c)
#   3. dod-parity --device cuda on every SD fixture (UNet + VAE forwards on the GPU vs diffusers);
#      then the NCCL path with one process: dod-train on the tiny DOD fixture, [model] device = cuda,
#      3 steps with [dist] backend = nccl (world 1: the bucketed gradients through NCCL on a side
#      stream) against the plain path: the same losses and parameters (bitwise when two plain runs
#      agree bitwise; otherwise within 1e-5 relative, CUDA kernels not being deterministic)
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
#      --activations f32 (what bf16 activation storage buys).
#      and (when time is left) the all-reduce cost of that stage-1 gradient set: dod-bench train --dist
#      --backend nccl, one process (the bucket copies and NCCL's world-1 all-reduce; the cost on 8 GPUs
#      needs mpirun -np 8 on such a node, docs/training.md)
#   5. (when time is left) dod-bench cuda_block: the one-block-pair micro benchmark, f32 and mixed;
#      then dod-bench cuda_attention: op_attention's chunked-GEMM and fused kernels against PyTorch's
#      scaled_dot_product_attention, SD 2.x level-1 shapes up to 1024x1024.
# Budget: under 8 minutes on an H100 with 16 cores; a stage that would start after BUDGET_S seconds
# (the micro benchmarks of 5.: that would not also end by then) is reported NOT RUN (out of time),
# and every stage runs under a timeout.
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

stage "GPU"
if command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; then
    :
else
    echo "no GPU: nvidia-smi is missing or failed (every GPU stage below will fail and say why)"
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
    cmake --build "$BUILD" -j"$JOBS" --target dod test_cuda_ops test_dod_model test_clip_text dod-bench dod-parity \
        dod-train dod-data dod-sd-inspect >"$BUILD/build.log" 2>&1
    local rc=$?
    grep -E "warning|error|Error" "$BUILD/build.log" | head -40
    [ "$rc" -eq 0 ] || { tail -20 "$BUILD/build.log"; return 1; }
    grep -q "CUDA (nvcc) ... found" "$BUILD/cmake.log" || { echo "nvcc not found: this build has no CUDA backend"; return 1; }
}
run_stage build build
have() { [ -x "$BUILD/$1" ]; }

# ---- 2. GPU parity suite ---------------------------------------------------------------------------
stage "GPU parity suite (tests/test_cuda_ops)"
parity_suite() {  # on this machine a SKIP (no GPU visible) is a failure
    local log="$BUILD/test_cuda_ops.log"
    (cd "$BUILD" && timeout 300 ./tests/test_cuda_ops) >"$log" 2>&1
    local rc=$?
    tail -40 "$log"
    if grep -q '^SKIP' "$log"; then echo "no GPU visible to the suite"; return 1; fi
    return "$rc"
}
if ! have tests/test_cuda_ops; then skip_stage parity-suite "not built"
elif ! time_left; then skip_stage parity-suite "out of time budget"
else run_stage parity-suite parity_suite; fi

stage "DOD gradient fixture on CUDA (tests/test_dod_model)"
dod_fixture() {  # the CPU checks run too (seconds); a SKIP of the CUDA part is a failure here
    local log="$BUILD/test_dod_model.log"
    (cd "$BUILD" && timeout 180 ./tests/test_dod_model) >"$log" 2>&1
    local rc=$?
    grep -E "CUDA|FAIL|passed" "$log" | head -40
    if grep -q '^SKIP' "$log"; then echo "no GPU visible to the test"; return 1; fi
    return "$rc"
}
if ! have tests/test_dod_model; then skip_stage dod-fixture-cuda "not built"
elif ! time_left; then skip_stage dod-fixture-cuda "out of time budget"
else run_stage dod-fixture-cuda dod_fixture; fi

stage "CLIP text encoder on CUDA (tests/test_clip_text)"
clip_text_cuda() {  # transformers' hidden states with the encoder on the GPU (causal attention, quick-GELU)
    local log="$BUILD/test_clip_text.log"
    (cd "$BUILD" && timeout 120 ./tests/test_clip_text) >"$log" 2>&1
    local rc=$?
    grep -E "CUDA|FAIL|passed" "$log" | head -20
    if grep -q 'skipping the CUDA cases' "$log"; then echo "no GPU visible to the test"; return 1; fi
    return "$rc"
}
if ! have tests/test_clip_text; then skip_stage clip-text-cuda "not built"
elif ! time_left; then skip_stage clip-text-cuda "out of time budget"
else run_stage clip-text-cuda clip_text_cuda; fi

# ---- 3. dod-parity --device cuda -------------------------------------------------------------------
stage "dod-parity --device cuda"
for fix in "$SRC"/tests/fixtures/sd/*/; do
    name="dod-parity-$(basename "$fix")"
    if ! have bin/dod-parity; then skip_stage "$name" "not built"
    elif ! time_left; then skip_stage "$name" "out of time budget"
    else run_stage "$name" timeout 120 "$BUILD/bin/dod-parity" "$fix" --device cuda; fi
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
        timeout 120 "$BUILD/bin/dod-train" --config "$D/tiny.ini" --set dist.backend=$backend --run-dir "$D/$run" \
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
if ! have bin/dod-train || ! have bin/dod-data || ! have bin/dod-sd-inspect; then skip_stage nccl-one-process "not built"
elif ! grep -q "NCCL ... found" "$BUILD/cmake.log"; then skip_stage nccl-one-process "NCCL not found at configure time"
elif ! time_left; then skip_stage nccl-one-process "out of time budget"
else run_stage nccl-one-process nccl_one_process; fi

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

declare -A OURS_MS OURS_MEM TORCH_MS TORCH_MEM TORCH_RES
ours_step() {  # ours_step f32|mixed [FLAGS]; results under "f32", "f32 --recompute", "mixed --activations f32", ...
    local key="$*" log="$BUILD/bench_full_ours_$(echo "$*" | tr -s ' -' '_').log"
    timeout 240 "$BUILD/bin/dod-bench" train --device cuda --base "$SD21" --random-weights --stage 1 --batch 7 \
        --crop 256 --iters "$ITERS" --precision "$@" --no-torch >"$log" 2>&1
    local rc=$?
    cat "$log"
    OURS_MS[$key]=$(awk '/^ours: / {print $2}' "$log")
    OURS_MEM[$key]=$(awk '/^ours peak memory:/ {print $4}' "$log")
    [ "$rc" -eq 0 ] && [ -n "${OURS_MS[$key]}" ]
}
torch_step() {  # torch_step f32|mixed
    local log="$BUILD/bench_full_torch_$1.log"
    timeout 240 "$PYTHON" "$SRC/scripts/bench_train_torch.py" --device cuda --base "$SD21" --stage 1 --batch 7 \
        --crop 256 --iters "$ITERS" --precision "$1" >"$log" 2>&1
    local rc=$?
    cat "$log"
    TORCH_MS[$1]=$(awk '/^torch_ms / {print $2}' "$log")
    TORCH_MEM[$1]=$(awk '/^torch_peak_gib / {print $2}' "$log")
    TORCH_RES[$1]=$(awk '/^torch_reserved_gib / {print $2}' "$log")
    [ "$rc" -eq 0 ] && [ -n "${TORCH_MS[$1]}" ]
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
        if ! have bin/dod-bench; then skip_stage "$name" "not built"
        elif ! time_left; then skip_stage "$name" "out of time budget"
        else run_stage "$name" ours_step "$prec" $flags; fi
    done < <(variants "$prec")
    if ! command -v "$PYTHON" >/dev/null; then skip_stage "full-step-torch-$prec" "no $PYTHON"
    elif [ -n "$torch_missing" ]; then skip_stage "full-step-torch-$prec" "$torch_missing"
    elif ! time_left; then skip_stage "full-step-torch-$prec" "out of time budget"
    else run_stage "full-step-torch-$prec" torch_step "$prec"; fi
done

echo
echo "full DOD training step (SD 2.1-base shapes, batch 7, 256x256, stage 1):"
for prec in f32 mixed; do
    t="${TORCH_MS[$prec]:-}"
    if [ -n "$t" ]; then echo "  $prec PyTorch: $t ms, peak ${TORCH_MEM[$prec]:-?} GiB allocated, ${TORCH_RES[$prec]:-?} GiB reserved"; else echo "  $prec PyTorch: NOT RUN"; fi
    while IFS= read -r flags; do
        key="$prec${flags:+ $flags}"
        o="${OURS_MS[$key]:-}"
        if [ -z "$o" ]; then echo "  $key ours: NOT RUN"; continue; fi
        echo "  $key ours: $o ms, peak ${OURS_MEM[$key]:-?} GiB reserved"
        # memory: our reserved peak against PyTorch's reserved peak (its allocated one when not printed)
        [ -n "$t" ] && awk -v a="$o" -v b="$t" -v k="$key" -v ma="${OURS_MEM[$key]:-0}" \
            -v mb="${TORCH_RES[$prec]:-${TORCH_MEM[$prec]:-0}}" -v what="${TORCH_RES[$prec]:+reserved}" \
            'BEGIN { printf "  %s ratio ours/torch: time %.2f, memory %.2f (reserved / %s)\n", k, a / b,
                     (mb > 0 ? ma / mb : 0), (what == "" ? "allocated" : what) }'
    done < <(variants "$prec")
done

stage "gradient all-reduce cost of the stage-1 set at SD 2.1-base size (dod-bench train --dist, nccl, one process)"
allreduce_cost() {
    timeout 240 "$BUILD/bin/dod-bench" train --dist --backend nccl --device cuda --base "$SD21" --random-weights --stage 1 \
        --batch 7 --crop 256 --iters "$ITERS" --precision mixed --recompute
}
if ! have bin/dod-bench; then skip_stage allreduce-cost "not built"
elif ! grep -q "NCCL ... found" "$BUILD/cmake.log"; then skip_stage allreduce-cost "NCCL not found at configure time"
elif ! time_left 90; then skip_stage allreduce-cost "out of time budget"
else run_stage allreduce-cost allreduce_cost; fi

# ---- 5. block-pair micro benchmark (when time is left) ----------------------------------------------
cuda_block() {  # a SKIP (no GPU visible) is a failure here
    local log="$BUILD/bench_cuda_block.log"
    timeout 90 "$BUILD/bin/dod-bench" cuda_block --batch 7 --size 32 --iters 5 "$@" >"$log" 2>&1
    local rc=$?
    cat "$log"
    ! grep -q '^SKIP' "$log" && [ "$rc" -eq 0 ]
}
stage "micro benchmark: SD 2.1 level-1 block pair (dod-bench cuda_block)"
for mode in f32 mixed; do
    flag=""; [ "$mode" = mixed ] && flag="--mixed"
    if ! have bin/dod-bench; then skip_stage "cuda-block-$mode" "not built"
    elif ! time_left 90; then skip_stage "cuda-block-$mode" "out of time budget"
    else run_stage "cuda-block-$mode" cuda_block $flag; fi
done

attention_kernels() {  # a SKIP (no GPU visible) is a failure here
    local log="$BUILD/bench_cuda_attention.log"
    timeout 120 "$BUILD/bin/dod-bench" cuda_attention --iters 3 >"$log" 2>&1
    local rc=$?
    cat "$log"
    ! grep -q '^SKIP' "$log" && [ "$rc" -eq 0 ]
}
stage "micro benchmark: attention kernels (dod-bench cuda_attention)"
if ! have bin/dod-bench; then skip_stage "cuda-attention" "not built"
elif ! time_left 120; then skip_stage "cuda-attention" "out of time budget"
else run_stage "cuda-attention" attention_kernels; fi

echo
echo "gpu-check: ${SECONDS}s"
((${#not_run[@]})) && echo "gpu-check: NOT RUN: ${not_run[*]}"
if ((${#failed[@]})); then echo "gpu-check: FAILED stages: ${failed[*]}"; exit 1; fi
echo "gpu-check: all stages that ran passed"
