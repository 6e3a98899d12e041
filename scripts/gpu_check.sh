#!/usr/bin/env bash
# On a CUDA machine with torch 2.11.0+cu130 in the system Python: build against that torch,
# run the Qwen3-MoE parity suite on the GPU in bf16 (grouped GEMM path) and the example
# pipeline in bf16. Logs go to $OUT (if set) as well as stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
LOG=${OUT:-/tmp}/gpu_check.log
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$LOG"
source scripts/gpu/build.sh
build_esft build
ESFT_TEST_DEVICE=cuda ./build/esft_torch_tests --gtest_filter='Table*' 2>&1 | tee -a "$LOG" | tail -25
DEVICE=cuda ESFT_SKIP_SETUP=1 OUT=/tmp/example-out bash scripts/example.sh 2>&1 | tee -a "$LOG" | tail -40
