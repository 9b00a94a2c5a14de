#!/usr/bin/env bash
# `--version` on every tool: "dod-X VERSION (git REVISION), TYPE build, COMPILER", the project version
# of CMakeLists.txt, the revision of the source checkout (`git describe`, without the -dirty mark, which
# may change after the build), and the configure step's dependency lines; exit 0.
# Usage: bash tests/cli_version.sh BUILD_DIR SOURCE_DIR
set -u
B=$1 S=$2
. "$S/tests/shell_lib.sh"
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT

version=$(sed -n 's/^project(dod VERSION \([0-9.]*\).*/\1/p' "$S/CMakeLists.txt")
check "CMakeLists.txt declares a project version" "[ -n '$version' ]"
revision=unknown
if command -v git > /dev/null && [ "$(cd "$S" && git rev-parse --show-toplevel 2> /dev/null)" = "$(cd "$S" && pwd -P)" ]; then
    revision=$(cd "$S" && git describe --always)
fi
for tool in dod-train dod-eval dod-pretrain dod-parity dod-sd-inspect dod-bench; do   # dod-data needs HDF5
    [ -x "$B/bin/$tool" ] || bad "$tool not built"
done
for path in "$B"/bin/dod-*; do   # every tool the build made, so a new one cannot miss --version
    tool=$(basename "$path")
    "$B/bin/$tool" --version > "$T/v.txt" 2>&1
    check "$tool --version exits 0" "[ $? = 0 ]"
    check "$tool: first line names the tool, version $version and git $revision" \
        "head -1 '$T/v.txt' | grep -Eq '^$tool $version \\(git $revision(-dirty)?\\), [A-Za-z]+ build, '"
    check "$tool: the dependency lines configure printed" \
        "grep -q '^dependencies:$' '$T/v.txt' && grep -Eq '^  stb_image \\.\\.\\. found' '$T/v.txt' && grep -Eq '^  cJSON \\.\\.\\. found' '$T/v.txt' && grep -Eq '^  CUDA \\(nvcc\\) \\.\\.\\. (found|NOT FOUND)' '$T/v.txt'"
done
echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
