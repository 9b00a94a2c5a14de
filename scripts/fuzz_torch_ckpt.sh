#!/usr/bin/env bash
# Fuzzes the PyTorch checkpoint reader with libFuzzer (ASan + UBSan) for a bounded time.
# Usage: bash scripts/fuzz_torch_ckpt.sh [SECONDS=60] [BUILD_DIR=build-fuzz]
# Starts from the committed seeds (tests/fuzz/corpus_torch_ckpt: small real torch files of both
# formats); inputs the fuzzer finds go to BUILD_DIR/fuzz/corpus_torch_ckpt, crashes to
# BUILD_DIR/fuzz/crashes_torch_ckpt (exit status non-zero); make each one a case of
# tests/test_torch_ckpt.c. tests/cli_fuzz_torch_ckpt.sh runs this for 20 s in the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-60}
BUILD=${2:-build-fuzz}
CC=${CC:-clang} cmake -S . -B "$BUILD" -DDOD_FUZZ=ON -DDOD_CUDA=OFF -DCMAKE_BUILD_TYPE=Debug >/dev/null
cmake --build "$BUILD" --target fuzz_torch_ckpt -j"$(nproc)" >/dev/null
OUT=$BUILD/fuzz
mkdir -p "$OUT/corpus_torch_ckpt" "$OUT/crashes_torch_ckpt"
"$OUT/fuzz_torch_ckpt" "$OUT/corpus_torch_ckpt" tests/fuzz/corpus_torch_ckpt \
    -max_total_time="$SECS" -max_len=65536 -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
    -artifact_prefix="$OUT/crashes_torch_ckpt/" 2>&1 | grep -E "(INITED|DONE) cov|stat::number_of_executed_units|ERROR|SUMMARY|Test unit written" || true
if ls "$OUT/crashes_torch_ckpt"/* >/dev/null 2>&1; then
    echo "fuzz_torch_ckpt: crashes in $OUT/crashes_torch_ckpt:"; ls "$OUT/crashes_torch_ckpt"
    exit 1
fi
echo "fuzz_torch_ckpt: no crash in ${SECS}s"
