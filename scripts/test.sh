#!/usr/bin/env bash
# Installs what is missing, builds, and runs the whole test suite (CPU, a few minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
(cd "${ESFT_BUILD:-build}" && ctest --output-on-failure --timeout 1800 "$@")
# The torch-free half under ASan + UBSan, and each fuzzer for a bounded time (a few minutes in all).
bash scripts/sanitizers.sh
