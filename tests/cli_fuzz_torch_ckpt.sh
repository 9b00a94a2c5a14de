#!/usr/bin/env bash
# A bounded fuzzing run of the PyTorch checkpoint reader (scripts/fuzz_torch_ckpt.sh, 20 s) in the
# test suite: fails when libFuzzer finds a crash, a leak or undefined behaviour. Skipped (and says so)
# where clang with libFuzzer is missing. Usage: bash tests/cli_fuzz_torch_ckpt.sh BUILD_DIR SOURCE_DIR
set -u
B=$1 S=$2
if ! command -v clang >/dev/null || ! echo 'int LLVMFuzzerTestOneInput(const char*d,long n){return 0;}' |
        clang -x c -fsanitize=fuzzer -o /dev/null - 2>/dev/null; then
    echo "SKIP: no clang with libFuzzer (Debian: clang, libclang-rt-14-dev)"; exit 0
fi
bash "$S/scripts/fuzz_torch_ckpt.sh" "${DOD_FUZZ_SECONDS:-20}" "$B/fuzz-torch-ckpt"
