#!/usr/bin/env bash
# dod-sd-inspect on the committed SD fixtures: loads succeed with a summary; a model whose UNet lacks a
# tensor fails with exit 1 and names the file and the tensor. Usage: cli_sd_inspect.sh BUILD_DIR SOURCE_DIR
set -u
BUILD=$1 SRC=$2
BIN=$BUILD/bin/dod-sd-inspect
FIX=$SRC/tests/fixtures/sd
fails=0 passes=0
check() { if eval "$2"; then passes=$((passes + 1)); else fails=$((fails + 1)); echo "FAIL: $1"; fi; }
tmp=$(mktemp -d /tmp/dod_cli_sd.XXXXXX)
trap 'rm -rf "$tmp"' EXIT

out=$("$BIN" "$FIX/sd2_tiny/model" --dtype bf16 2>&1); rc=$?
check "sd2 loads" '[ $rc -eq 0 ] && grep -q "unet: 52004 params, vae: 48479 params, prediction_type v_prediction" <<<"$out"'
out=$("$BIN" --single-file "$FIX/sd1_tiny/ldm.safetensors" "$FIX/sd1_tiny/model" 2>&1); rc=$?
check "sd1 single file loads" '[ $rc -eq 0 ] && grep -q "3 tensors of other components" <<<"$out"'
out=$("$BIN" --table "$FIX/sd1_tiny/model"); rc=$?
check "table" '[ $rc -eq 0 ] && grep -q "^unet conv_in.weight model.diffusion_model.input_blocks.0.0.weight \[8, 4, 3, 3\]$" <<<"$out"'

# A UNet file whose header lacks conv_out.bias: rename the key in place (same length, so offsets hold).
mkdir -p "$tmp/m"
cp -r "$FIX/sd1_tiny/model/"* "$tmp/m/"
sed -i 's/"conv_out.bias"/"conv_out.bia_"/' "$tmp/m/unet/diffusion_pytorch_model.safetensors"
out=$("$BIN" "$tmp/m" 2>&1); rc=$?
check "missing tensor fails" '[ $rc -eq 1 ] && grep -q "unet/diffusion_pytorch_model.safetensors: weights do not match" <<<"$out" && grep -q "^    conv_out.bias$" <<<"$out"'
# Truncated file: named, exit 1.
head -c 1000 "$FIX/sd1_tiny/model/vae/diffusion_pytorch_model.safetensors" > "$tmp/m/vae/diffusion_pytorch_model.safetensors"
out=$("$BIN" "$tmp/m" 2>&1); rc=$?
check "truncated vae fails" '[ $rc -eq 1 ] && grep -q "vae/diffusion_pytorch_model.safetensors: header length .* runs past the end of the file" <<<"$out"'
# PyTorch checkpoints: a diffusers VAE given only as diffusion_pytorch_model.bin (zip format, f16), a
# pickle's tensors listed by --header, and a pickle naming os.system refused by name.
TFIX=$SRC/tests/fixtures/torch_ckpt
mkdir -p "$tmp/bin"
cp -r "$FIX/sd1_tiny/model/"* "$tmp/bin/"
rm "$tmp/bin/vae/diffusion_pytorch_model.safetensors"
cp "$TFIX/sd1_tiny_vae_f16.bin" "$tmp/bin/vae/diffusion_pytorch_model.bin"
out=$("$BIN" "$tmp/bin" --dtype f16 2>&1); rc=$?
check "vae from a .bin loads" '[ $rc -eq 0 ] && grep -q "unet: 71948 params, vae: 48479 params" <<<"$out"'
out=$("$BIN" --header "$TFIX/state_legacy.pt" 2>&1); rc=$?
check "header of a pickle" '[ $rc -eq 0 ] && grep -q "^state_dict_unet/proj.weight F32 \[8, 8\]$" <<<"$out" && grep -q "^dtypes/f64 F64 \[5, 3\]$" <<<"$out"'
out=$("$BIN" --header "$TFIX/evil_global.pt" 2>&1); rc=$?
check "os.system refused" '[ $rc -eq 1 ] && grep -q "evil_global.pt: .*global os.system is not allowed" <<<"$out"'
echo "$passes passed, $fails failed"
[ $fails -eq 0 ]
