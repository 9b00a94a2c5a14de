#!/usr/bin/env bash
# Device audit of the model code: every function in layers/*.c that touches tensor storage on the host
# (tensor_data_f32(, tensor_f32(, ->data, ->grad) must be on the list below, with the reason it is safe
# for a model whose tensors are on CUDA (docs/cuda.md, "Host accesses left in layers/"): host-only work
# (creation, loading, file I/O, export, a tool's host-side comparison), never a per-step loop, which
# belongs in an engine op (autograd/ops.h) instead. A new host
# access fails this test until it is made device-clean or listed (here and in docs/cuda.md); a listed
# function that no longer touches storage fails too (stale entry). There is no GPU here, so this is what
# keeps host loops from creeping back into the CUDA path silently.
# Usage: bash tests/cli_device_audit.sh BUILD_DIR SOURCE_DIR
set -u
SRC=${2:?source dir}
. "$SRC/tests/shell_lib.sh"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

# file:function  reason (one line each; the reason is for readers, the key is what is checked)
cat >"$TMP/allowed" <<'LIST'
layers/adm_encoder.c:add_derived             loading: new host tensors, moved with adm_encoder_to_device
layers/adm_encoder.c:add_random              creation of random host tensors (benchmarks, tests)
layers/adm_encoder.c:build_attention         loading: splits the file's host qkv weights
layers/adm_encoder.c:build_resblock          loading: folds the host emb projection into the norm
layers/adm_encoder.c:keep                    loading: copies a host file tensor
layers/adm_encoder.c:run_units               device_copy of a block's output on its own device (no dereference)
layers/adapter.c:adapter_export              export: the model is built on the CPU (host f32 tensors, checked)
layers/adapter.c:tensor_hash                 the base's weights are hashed on the host, before any move (checked)
layers/clip_text.c:clip_text_forward         device_copy between tensors on the model's device (no dereference)
layers/dod_import.c:dod_import_gamma_plain  device_copy through a host buffer (no dereference of the tensor)
layers/dod_model.c:trainable_copy            creation: models are built on the CPU, then dod_model_to_device
layers/dod_modulation.c:default_init         initialisation of new (host) parameters at creation
layers/dod_vsd.c:draw                        VSD timesteps are host ints by the UNet's contract (read from a host tensor)
layers/dod_vsd.c:keep_latent                 device_copy between tensors on the model's device (no dereference)
layers/dod_vsd.c:per_sample                  N host floats (per-sample coefficients) written, then tensor_to_device
layers/lpips.c:channel_constant              device_copy from a host array into a tensor on the weights' device
layers/lpips.c:lpips_from_vgg                creation: host tensors, moved with lpips_to_device
layers/lora.c:host_f32                       copies a CUDA tensor to the host (merge/export, not per step)
layers/lora.c:lora_merge                     reads host views made by host_f32, writes host tensors
layers/model_weights.c:checkpoint_copy_entry source is a host file view; the destination is written with device_copy
layers/safetensors.c:safetensors_drop_pages  file mapping, no tensors
layers/safetensors.c:safetensors_load_store  loading: host tensors
layers/safetensors.c:safetensors_open        file mapping, no tensors
layers/safetensors.c:safetensors_save        CUDA tensors are written through a host copy (device_copy)
layers/safetensors.c:read_tensor             loading: host tensors
layers/safetensors.c:torch_tensor            loading a PyTorch checkpoint's tensor: host tensors
layers/sd_load.c:sd_tensor_make_owned        loading: host tensors (before any move)
layers/sd_prompt.c:encode_one                device_copy of the encoder's output into a host tensor
layers/sd_prompt.c:sd_prompt_save            prompt embeddings are host tensors by contract (sd_prompt.h)
layers/tool_parity.c:main                    timesteps are host floats by the UNet's contract (never moved)
layers/tool_parity.c:report                  compares host copies (to_host) of the outputs
LIST

# Prints "file:function" for every line of the given C files that touches tensor storage.
scan() {
    awk '
    FNR == 1 { fn = "(file scope)" }
    /^[A-Za-z_][A-Za-z0-9_ \*]*\(/ && !/;[ \t]*$/ {
        line = $0; sub(/\(.*/, "", line); n = split(line, w, /[ \*]+/); fn = w[n]
    }
    /^[ \t]/ && (/tensor_data_f32\(/ || /tensor_f32\(/ || /->data([^A-Za-z0-9_]|$)/ || /->grad([^A-Za-z0-9_]|$)/) {
        f = FILENAME; sub(/.*\/layers\//, "layers/", f); print f ":" fn
    }' "$@" | sort -u
}

# Compares a scan with the list: prints unexpected (not listed) and stale (listed, not found) keys.
compare() {
    awk '{print $1}' "$TMP/allowed" | sort -u >"$TMP/keys"
    comm -23 "$1" "$TMP/keys" | sed 's/^/unexpected host access in /'
    comm -13 "$1" "$TMP/keys" | sed 's/^/stale allow-list entry /'
}

scan "$SRC"/layers/*.c >"$TMP/found"
compare "$TMP/found" >"$TMP/diff"
if [ -s "$TMP/diff" ]; then
    bad "layers/ host accesses differ from the audited list:"
    cat "$TMP/diff" >&2
else
    ok
fi
[ "$(wc -l <"$TMP/found")" -ge 10 ] && ok || bad "the scan found only $(wc -l <"$TMP/found") functions: is the pattern broken?"

# The audit must catch a new host loop: a copy of layers/ with one added to a device-clean function's file.
mkdir -p "$TMP/copy/layers"
cp "$SRC"/layers/*.c "$TMP/copy/layers/"
cat >>"$TMP/copy/layers/unet.c" <<'C'
static float first_value(const Tensor *t) {
    return tensor_data_f32(t)[0];
}
C
scan "$TMP"/copy/layers/*.c >"$TMP/found2"
compare "$TMP/found2" >"$TMP/diff2"
if grep -q "unexpected host access in layers/unet.c:first_value" "$TMP/diff2"; then ok; else
    bad "an added host access in unet.c was not reported"; cat "$TMP/diff2" >&2
fi

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
