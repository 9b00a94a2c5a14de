#!/usr/bin/env bash
# Set up (packages + build) and run the whole test suite with ctest, then a short libFuzzer run of
# every fuzz target (scripts/fuzz.sh; DOD_FUZZ_SECONDS per target, default 10, 0 = skip; skipped
# without clang and when ctest arguments pick tests).
# Usage: bash scripts/test.sh [ctest args, e.g. -R op_conv]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh -DDOD_WERROR=ON
(cd build && ctest --output-on-failure -j"$(nproc)" "$@")
if [ $# = 0 ] && [ "${DOD_FUZZ_SECONDS:-10}" != 0 ] && command -v clang > /dev/null; then
    bash scripts/fuzz.sh "${DOD_FUZZ_SECONDS:-10}"
fi
