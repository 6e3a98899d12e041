#!/usr/bin/env bash
# DeepSeek-V2-Lite at its real shape, built in memory, side by side with transformers on one GPU:
# rows of 4096 (the paper's), batch 2. Prints transformers' forward / ESFT-step rates, then esft's
# score and train rates without checkpointing, with 14 of 27 layers checkpointed, and with all.
# Needs an H200 for the runs without checkpointing (80 GB is too little for either tool).
#   bash scripts/gpu/deepseek_v2_lite_bench.sh          (ESFT=path/to/esft skips the build)
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/esft-v2lite-bench}; mkdir -p "$OUT"
if [ -z "${ESFT:-}" ]; then
  source scripts/gpu/build.sh
  build_esft build || exit 1
  ESFT=build/esft
fi
SHAPE=(--shape deepseek-v2-lite --seq 4096 --batch 2)
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/bench.log"
timeout 300 "${PYTHON:-python3}" scripts/bench/hf_reference.py "${SHAPE[@]}" --layers 27 --steps 3 2>&1 | grep -v Warning |
  tail -3 | tee -a "$OUT/bench.log"
bench() { timeout 300 "$ESFT" bench "${SHAPE[@]}" --steps 4 "$@" 2>&1 | grep -E '^\{|rror' | tee -a "$OUT/bench.log"; }
bench --tasks score,train
bench --tasks train --checkpoint-layers 14
bench --tasks train --activation-checkpointing
