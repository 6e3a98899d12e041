#!/usr/bin/env bash
# The torch-free half of esft under AddressSanitizer + UndefinedBehaviorSanitizer, built with
# clang into build-asan/ (no LibTorch): the core test suite, then each libFuzzer harness of
# tests/fuzz for FUZZ_SECONDS (default 20) starting from its seed corpus in tests/fuzz/corpus/.
# Inputs the fuzzers find go to a scratch directory, never into the source tree; a crash leaves
# its reproducer in build-asan/fuzz-crashes/ and fails the script.
#   ESFT_ASAN_BUILD  build directory (default build-asan)
#   FUZZ_SECONDS     seconds per harness (0 skips fuzzing)
#   ESFT_SHARED_DIR  shared fixtures (default: the main build's setting, else ../shared)
set -euo pipefail
cd "$(dirname "$0")/.."
B=${ESFT_ASAN_BUILD:-build-asan}
FUZZ_SECONDS=${FUZZ_SECONDS:-20}
export CCACHE_DIR=${CCACHE_DIR:-/opt/esft/ccache}
start=$(date +%s)

# The shared fixtures: ESFT_SHARED_DIR, else what the main build was configured with, else ../shared.
shared=${ESFT_SHARED_DIR:-$(sed -n 's/^ESFT_SHARED_DIR:PATH=//p' "${ESFT_BUILD:-build}/CMakeCache.txt" 2>/dev/null || true)}
shared=${shared:-$PWD/../shared}

if [ ! -f "$B/build.ninja" ]; then
  # fuzzer-no-link: the library carries libFuzzer's coverage counters, so the fuzzers are guided
  # by the code under test; the tests link without the fuzzer runtime.
  flags="-fsanitize=address,undefined,fuzzer-no-link -fno-sanitize-recover=undefined -fno-omit-frame-pointer -O1 -g"
  CC=clang CXX=clang++ cmake -S . -B "$B" -G Ninja -DCMAKE_BUILD_TYPE=Debug -DESFT_CORE_ONLY=ON -DESFT_FUZZ=ON \
    -DCMAKE_CXX_FLAGS="$flags" -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=address,undefined" \
    -DESFT_SHARED_DIR="$shared" -DESFT_PYTHON="${ESFT_PYTHON:-/opt/esft/venv/bin/python}" >/dev/null
fi
cmake --build "$B" -j "$(nproc)"
built=$(date +%s)

export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:strict_string_checks=1:detect_stack_use_after_return=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
echo "sanitizers: core tests under ASan+UBSan"
"$B/esft_core_tests" --gtest_brief=1
tested=$(date +%s)

checks=1
if [ "$FUZZ_SECONDS" -gt 0 ]; then
  mkdir -p "$B/fuzz-crashes"
  for f in safetensors tokenizer_json jsonl config; do
    scratch=$(mktemp -d)
    echo "sanitizers: fuzzing $f for ${FUZZ_SECONDS}s"
    # -rss_limit_mb: a harness must not need more; -timeout: no input may take a second.
    rc=0
    "$B/fuzz_$f" "$scratch" "tests/fuzz/corpus/$f" -max_total_time="$FUZZ_SECONDS" -timeout=5 -rss_limit_mb=2048 \
      -dict="tests/fuzz/json.dict" -artifact_prefix="$B/fuzz-crashes/$f-" -print_final_stats=1 > "$B/fuzz-$f.log" 2>&1 || rc=$?
    grep -E "^(#[0-9]+ +DONE|stat::number_of_executed_units|stat::peak_rss|INFO: Loaded|==[0-9]+==ERROR|SUMMARY)" "$B/fuzz-$f.log" | head -n 8 || true
    rm -rf "$scratch"
    [ "$rc" -eq 0 ] || tail -n 60 "$B/fuzz-$f.log"
    if [ "$rc" -ne 0 ]; then echo "sanitizers: fuzz_$f failed (exit $rc); reproducer in $B/fuzz-crashes/"; exit 1; fi
    checks=$((checks + 1))
  done
fi
end=$(date +%s)
echo "sanitizers: build $((built - start))s, core tests $((tested - built))s, fuzzing $((end - tested))s"
echo "sanitizers: $checks passed, 0 failed"
