#!/usr/bin/env bash
# Builds the libFuzzer targets of tests/fuzz/ (clang, ASan + UBSan) into build-fuzz/ and runs each
# for SECONDS (default 60) from its committed corpus (tests/fuzz/corpus/NAME, copied: new inputs
# go to build-fuzz/corpus/NAME, the committed seeds stay as they are).
# Usage: bash scripts/fuzz.sh [SECONDS] [TARGET...]     e.g. scripts/fuzz.sh 600 h5ds image
# A crash leaves build-fuzz/crash-* (libFuzzer's reproducer) and makes the script exit 1: copy the
# input into tests/fuzz/corpus/NAME/ (it becomes a regression test: ctest -L fuzz replays it), fix.
# Extra libFuzzer options: FUZZ_ARGS="-max_len=65536". Memory per target: FUZZ_RSS_MB (default 2048).
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH=${1:-60}
shift || true
command -v clang > /dev/null || { echo "fuzz: clang not found (Debian: apt-get install clang libclang-rt-14-dev)"; exit 1; }
mkdir -p build-fuzz
LOG=build-fuzz/build.log
CC=clang cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DDOD_CUDA=OFF -DDOD_FUZZ=ON > $LOG 2>&1 ||
    { cat $LOG; exit 1; }
TARGETS=("$@")
if [ ${#TARGETS[@]} = 0 ]; then
    for f in tests/fuzz/fuzz_*.c; do n=$(basename "$f" .c); TARGETS+=("${n#fuzz_}"); done
fi
cmake --build build-fuzz -j"$(nproc)" --target $(printf 'fuzz_%s ' "${TARGETS[@]}") >> $LOG 2>&1 ||
    { tail -40 $LOG; exit 1; }
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1:suppressions=$PWD/tests/fuzz/ubsan.supp}
failed=0
for t in "${TARGETS[@]}"; do
    mkdir -p "build-fuzz/corpus/$t"
    cp -n tests/fuzz/corpus/"$t"/* "build-fuzz/corpus/$t/" 2> /dev/null || true
    echo "fuzz: $t for ${SECONDS_EACH}s"
    if ! (cd build-fuzz && ./fuzz/fuzz_"$t" -max_total_time="$SECONDS_EACH" -rss_limit_mb="${FUZZ_RSS_MB:-2048}" \
            -malloc_limit_mb="${FUZZ_RSS_MB:-2048}" -timeout=20 -print_final_stats=1 ${FUZZ_ARGS:-} \
            "corpus/$t" > "fuzz_$t.log" 2>&1); then
        echo "fuzz: $t FAILED (build-fuzz/fuzz_$t.log):"
        grep -E "ERROR|SUMMARY|Test unit written|runtime error" "build-fuzz/fuzz_$t.log" | head -10
        failed=1
    else
        grep -E "^stat::number_of_executed_units|^stat::peak_rss_mb" "build-fuzz/fuzz_$t.log" | tr '\n' ' '
        echo
    fi
done
exit $failed
