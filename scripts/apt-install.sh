#!/usr/bin/env bash
# Install the given Debian packages with apt-get unless all of them are installed already (as root,
# or through sudo). Shared by scripts/setup.sh and scripts/fixture-env.sh.
# Usage: bash scripts/apt-install.sh WHO PACKAGE...     (WHO prefixes the messages, e.g. "setup")
set -euo pipefail
who="$1"; shift
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
missing=$(dpkg-query -W -f='${Package} ${Status}\n' "$@" 2>/dev/null | grep -vc "install ok installed" || true)
listed=$(dpkg-query -W -f='${Package}\n' "$@" 2>/dev/null | wc -l || true)
if [ "$missing" != 0 ] || [ "$listed" -lt "$#" ]; then
    echo "$who: installing system packages: $*"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
else
    echo "$who: system packages already installed"
fi
