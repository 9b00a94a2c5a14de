#!/usr/bin/env bash
# Install the system packages dod needs (Debian/Ubuntu) and build it into build/.
# Usage: bash scripts/setup.sh [extra cmake args]
# Set DOD_SKIP_APT=1 to skip the package step (e.g. no root, packages already present).
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES="build-essential cmake pkg-config libopenblas-dev libhdf5-dev zlib1g-dev libstb-dev libcjson-dev
          libiniparser-dev libopenmpi-dev openmpi-bin libxml2-utils"
if [ "${DOD_SKIP_APT:-0}" != 1 ]; then
    SUDO=""
    [ "$(id -u)" = 0 ] || SUDO="sudo"
    missing=$(dpkg-query -W -f='${Package} ${Status}\n' $PACKAGES 2>/dev/null | grep -vc "install ok installed" || true)
    listed=$(dpkg-query -W -f='${Package}\n' $PACKAGES 2>/dev/null | wc -l || true)
    if [ "$missing" != 0 ] || [ "$listed" -lt "$(echo $PACKAGES | wc -w)" ]; then
        echo "setup: installing system packages: $(echo $PACKAGES)"
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $PACKAGES >/dev/null
    else
        echo "setup: system packages already installed"
    fi
fi

echo "setup: configuring (optional dependencies are reported found / NOT FOUND below)"
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release "$@" | grep -E "^-- dod:|Error" || true
cmake --build build -j"$(nproc)"
echo "setup: built $(ls build/bin | tr '\n' ' ')"
