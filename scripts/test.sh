#!/usr/bin/env bash
# Set up (packages + build) and run the whole test suite with ctest.
# Usage: bash scripts/test.sh [ctest args, e.g. -R op_conv]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh -DDOD_WERROR=ON
cd build
ctest --output-on-failure -j"$(nproc)" "$@"
