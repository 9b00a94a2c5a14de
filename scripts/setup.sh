#!/usr/bin/env bash
# Install the system packages dod needs (Debian/Ubuntu) and build it into build/.
# Usage: bash scripts/setup.sh [extra cmake args]
# Set DOD_SKIP_APT=1 to skip the package step (e.g. no root, packages already present), and
# DOD_BUILD_TARGETS to build only the named targets.
set -euo pipefail
cd "$(dirname "$0")/.."

# clang and its runtime: the libFuzzer + sanitizer build of scripts/fuzz.sh (scripts/test.sh runs it).
PACKAGES="build-essential cmake pkg-config libopenblas-dev libhdf5-dev zlib1g-dev libstb-dev libcjson-dev
          libiniparser-dev libopenmpi-dev openmpi-bin libpcre2-dev libunistring-dev libxml2-utils libzip-dev
          clang libclang-rt-14-dev"
# shellcheck disable=SC2086  # the list is split into words on purpose
[ "${DOD_SKIP_APT:-0}" = 1 ] || bash scripts/apt-install.sh setup $PACKAGES

echo "setup: configuring (optional dependencies are reported found / NOT FOUND below)"
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release "$@" | grep -E "^-- dod:|Error" || true
# DOD_BUILD_TARGETS="dod-data dod-train" builds only those (scripts/demo.sh: its two tools, 20 s
# sooner on 2 cores); by default everything, tests included.
targets=()
for t in ${DOD_BUILD_TARGETS:-}; do targets+=(--target "$t"); done
cmake --build build -j"$(nproc)" "${targets[@]}"
echo "setup: built $(ls build/bin | tr '\n' ' ')"
