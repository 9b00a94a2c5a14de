#!/usr/bin/env bash
# The adapter fixture of tests/cli_restore.sh: a short DOD training run on the tiny SD fixture
# (tests/fixtures/sd/sd2_tiny), exported with dod-export, and PyTorch's restoration of two inputs with it
# through scripts/load_adapter.py (diffusers + PEFT), which dod-restore must reproduce.
#
# Writes tests/fixtures/restore/:
#   adapter.safetensors   stage 1, rank 4, 30 steps at lr 5e-3 (so LoRA and modulation are far from their
#                         initial values), cnn extractor, bf16 tensors (a small file)
#   input.png             tests/fixtures/data/chelsea.png (144 x 112)
#   torch_whole.png       load_adapter.py's restoration, latent 36 x 28 on the whole latent (--tile 96)
#   torch_tiled.png       the same in the public code's latent tiles: --tile 16 --overlap 8
# Usage: bash scripts/make_adapter_fixture.sh BUILD_DIR     (Python: $PYTHON, else python3; see fixture-env.sh)
set -euo pipefail
B=$(cd "$1" && pwd)
cd "$(dirname "$0")/.."

OUT=tests/fixtures/restore
PY=${PYTHON:-python3}
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
"$B/bin/dod-data" synth --clean tests/fixtures/data --tasks noise,rain,haze --out "$T/syn.h5" --seed 1 --quiet
cat > "$T/fixture.ini" <<INI
[model]
kind = dod
base = tests/fixtures/sd/sd2_tiny/model
frozen_dtype = f32
[lora]
rank = 4
alpha = 4
[stage]
stage = 1
[data]
train = $T/syn.h5
tasks = dehaze:1,derain:1,denoise:1
crop = 32
threads = 2
[optim]
lr = 5e-3
[loss]
mse = 2
[train]
seed = 11
steps = 30
run_dir = $T/run
[checkpoint]
every = 30
INI
"$B/bin/dod-train" --config "$T/fixture.ini" --quiet
"$B/bin/dod-export" --run "$T/run" --out "$OUT/adapter.safetensors" --dtype bf16
cp tests/fixtures/data/chelsea.png "$OUT/input.png"
BASE=tests/fixtures/sd/sd2_tiny/model
"$PY" scripts/load_adapter.py --base "$BASE" --adapter "$OUT/adapter.safetensors" --in "$OUT/input.png" --out "$OUT/torch_whole.png"
"$PY" scripts/load_adapter.py --base "$BASE" --adapter "$OUT/adapter.safetensors" --in "$OUT/input.png" --out "$OUT/torch_tiled.png" \
    --tile 16 --overlap 8
