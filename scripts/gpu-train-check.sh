#!/usr/bin/env bash
# dod-train end to end at SD 2.1-base size on a GPU: random SD 2.1-base weights made by dod-pretrain
# (--steps 0: the initialisation, written as a diffusers directory), a synthetic noise/rain/haze set
# from tests/fixtures/data, then STEPS stage-1 steps of configs/aio3.ini (batch 7 = 3 haze + 2 rain +
# 2 noise, CROP x CROP crops, bf16 frozen weights, recomputation) with [model] device = DEVICE and
# precision = PRECISION (f32 or mixed), a
# checkpoint, --resume for one more step, then 2 stage-2 steps (configs/aio3_stage2.ini: detail module,
# MSE + 0.1 (1 - SSIM)) from that run. Prints dod-train's progress and memory lines.
#
# Usage: bash scripts/gpu-train-check.sh BUILD_DIR [WORK_DIR]
#   env: DEVICE=cuda, PRECISION=f32, CROP=256, STEPS=3
# BUILD_DIR needs dod-pretrain, dod-data and dod-train (cmake --build BUILD_DIR --target dod-pretrain dod-data
# dod-train) and BUILD_DIR/sd21_base, the SD 2.1-base configs scripts/gpu-check.sh writes there.
set -euo pipefail
SRC="$(cd "$(dirname "$0")/.." && pwd)"
B="$1"
W="${2:-$(mktemp -d /tmp/dod-gpu-train.XXXXXX)}"
DEVICE="${DEVICE:-cuda}" PRECISION="${PRECISION:-f32}" CROP="${CROP:-256}" STEPS="${STEPS:-3}"
mkdir -p "$W/base"
# SD 2.1-base configs: the ones gpu-check.sh writes (its write_sd21_configs), epsilon scheduler.
if [ ! -f "$B/sd21_base/unet/config.json" ]; then echo "run scripts/gpu-check.sh $B first (it writes $B/sd21_base)" >&2; exit 1; fi
cp -r "$B/sd21_base/." "$W/base/"
T=$SECONDS
"$B/bin/dod-pretrain" vae --images "$SRC/tests/fixtures/data" --config "$W/base" --out "$W/base" --steps 0 \
  --batch 2 --crop 64 --eval-crops 1 > "$W/pretrain_vae.log" 2>&1
"$B/bin/dod-pretrain" unet --images "$SRC/tests/fixtures/data" --config "$W/base" --vae "$W/base" --out "$W/base" \
  --steps 0 --batch 2 --crop 64 --eval-crops 1 > "$W/pretrain_unet.log" 2>&1
echo "random SD 2.1-base weights in $W/base ($((SECONDS - T)) s)"
"$B/bin/dod-data" synth --clean "$SRC/tests/fixtures/data" --tasks noise,rain,haze --out "$W/train.h5" --seed 1 --quiet
# The random base has no text encoder: a zero [77, 1024] prompt embedding file instead.
python3 -c "import json, struct, sys
h = json.dumps({'prompt_embeds': {'dtype': 'F32', 'shape': [77, 1024], 'data_offsets': [0, 77 * 1024 * 4]}})
h += ' ' * (-len(h) % 8)
open(sys.argv[1], 'wb').write(struct.pack('<Q', len(h)) + h.encode() + bytes(77 * 1024 * 4))" "$W/zero_prompt.safetensors"
sets=(--set model.base="$W/base" --set model.prompt_embedding="$W/zero_prompt.safetensors" --set model.device="$DEVICE"
      --set model.precision="$PRECISION" --set data.train="$W/train.h5"
      --set data.val= --set data.crop="$CROP" --set train.steps="$STEPS" --set train.run_dir="$W/run"
      --set log.every=1 --set checkpoint.every="$STEPS" --set train.recompute=true)
"$B/bin/dod-train" --config "$SRC/configs/aio3.ini" "${sets[@]}" 2>&1 | grep -v "^$"
"$B/bin/dod-train" --config "$SRC/configs/aio3.ini" "${sets[@]}" --set train.steps=$((STEPS + 1)) --resume "$W/run" 2>&1 \
  | grep -v "^$"
# Stage 2 (detail module, MSE + 0.1 (1 - SSIM)) from that stage-1 run: 2 steps.
"$B/bin/dod-train" --config "$SRC/configs/aio3_stage2.ini" "${sets[@]}" --set stage.init_from="$W/run" \
  --set train.run_dir="$W/run2" --set train.steps=2 --set checkpoint.every=2 2>&1 | grep -v "^$"
echo "gpu-train-check: OK ($((SECONDS - T)) s)"
