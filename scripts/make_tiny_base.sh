#!/usr/bin/env bash
# Reproducible recipe for the tiny pretrained SD-shaped base in configs/tiny_base (docs/tiny-base.md).
#
#   bash scripts/make_tiny_base.sh [BUILD_DIR] [OUT_DIR]
#
# Needs: a build of dod-pretrain (BUILD_DIR, default build), scikit-image's sample photos
# (/usr/lib/python3/dist-packages/skimage/data, Debian's python3-skimage), 2 CPU cores, ~20 minutes
# on a quiet machine (0.26 s/step VAE, 0.15 s/step UNet).
# Trains the VAE, then the UNet (v-prediction, as configs/tiny_base/scheduler says) on the frozen VAE's latents, into
# OUT_DIR (default a temp dir), and copies the result into configs/tiny_base (weights + vae/config.json with the
# measured scaling_factor).
# Set STEPS_VAE / STEPS_UNET to change the lengths (the committed base used the defaults below).
set -euo pipefail
SRC="$(cd "$(dirname "$0")/.." && pwd)"
BUILD="${1:-$SRC/build}"
OUT="${2:-$(mktemp -d /tmp/tiny_base.XXXXXX)}"
SK=/usr/lib/python3/dist-packages/skimage/data
STEPS_VAE="${STEPS_VAE:-3600}"
STEPS_UNET="${STEPS_UNET:-1500}"
SEED=123
[ -d "$SK" ] || { echo "make_tiny_base.sh: $SK not found (install python3-skimage)" >&2; exit 1; }
[ -x "$BUILD/bin/dod-pretrain" ] || { echo "make_tiny_base.sh: $BUILD/bin/dod-pretrain not built" >&2; exit 1; }

# Training photos: scikit-image's (colour and grey textures) and the fourteen nature / city photos of
# tests/fixtures/photos (their colours: greens, yellows, skies, wood; without them the VAE shifted the
# held-out coffee by 9 levels, docs/tiny-base.md); chelsea and coffee are held out for evaluation.
TRAIN=()
for f in astronaut.png rocket.jpg motorcycle_left.png motorcycle_right.png hubble_deep_field.jpg retina.jpg \
         ihc.png camera.png brick.png grass.png gravel.png; do
  TRAIN+=(--images "$SK/$f")
done
TRAIN+=(--images "$SRC/tests/fixtures/photos")
VAL=(--val-images "$SK/chelsea.png" --val-images "$SK/coffee.png")

"$BUILD/bin/dod-pretrain" vae "${TRAIN[@]}" "${VAL[@]}" --config "$SRC/configs/tiny_base" --out "$OUT" \
  --steps "$STEPS_VAE" --batch 8 --crop 64 --seed $SEED --lr 1e-3 --l1 1 --kl 1e-6 --eval-every 600
"$BUILD/bin/dod-pretrain" unet "${TRAIN[@]}" "${VAL[@]}" --config "$SRC/configs/tiny_base" --vae "$OUT" \
  --out "$OUT" --steps "$STEPS_UNET" --batch 8 --crop 64 --seed $SEED --lr 5e-4 --high-t-frac 0.5 \
  --high-t-from 900 --eval-every 300

for part in unet vae; do
  cp "$OUT/$part/diffusion_pytorch_model.safetensors" "$SRC/configs/tiny_base/$part/"
done
cp "$OUT/vae/config.json" "$SRC/configs/tiny_base/vae/config.json"
echo "make_tiny_base.sh: trained base in $OUT, copied into $SRC/configs/tiny_base"
