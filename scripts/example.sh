#!/usr/bin/env bash
# Installs what is missing, builds, and runs the whole ESFT pipeline on the bundled tiny
# Qwen3-MoE and intent dataset: score -> select -> train (adapter + full checkpoint).
#   DEVICE=cuda bash scripts/example.sh    runs it on a GPU in bf16 with grouped GEMM
set -euo pipefail
cd "$(dirname "$0")/.."
[ -n "${ESFT_SKIP_SETUP:-}" ] || bash scripts/setup.sh   # ESFT_SKIP_SETUP=1: already built (GPU machines)
ESFT=${ESFT_BUILD:-build}/esft
OUT=${OUT:-example-out}
DEVICE=${DEVICE:-cpu}
MODEL=tests/data/tiny-qwen3-moe
rm -rf "$OUT"

"$ESFT" score --model "$MODEL" --data tests/data/tiny-intent-train.jsonl --chat-format esft \
  --n-sample-tokens 4096 --device "$DEVICE" --output "$OUT/scores"
"$ESFT" select --scores "$OUT/scores" --score-function token --top-p 0.2 --output "$OUT/expert_config.json"
"$ESFT" train --model "$MODEL" --data tests/data/tiny-intent-train.jsonl --chat-format esft \
  --eval-dataset tests/data/tiny-intent-eval.jsonl \
  --expert-config "$OUT/expert_config.json" --output "$OUT/train" --device "$DEVICE" \
  --learning-rate 1e-3 --max-steps 40 --micro-batch-size 4 --global-batch-size 8 --max-length 256 \
  --eval-steps 20 --save-steps 20 --save-full
echo "example: adapter in $OUT/train/adapter, full checkpoint in $OUT/train/full"
