#!/usr/bin/env bash
# Interruptions on GPUs (one command): the tiny Qwen3-MoE trained for STEPS steps on 1 GPU and on
# N GPUs (--nproc-per-node N --expert-parallel N, NCCL), each once uninterrupted and once stopped
# by SIGTERM after a few steps (expected: exit 75, a checkpoint at the step reached) and resumed;
# then a run whose learning rate makes the loss overflow (expected: exit 1 naming the step, no
# adapter). Prints a table: exit statuses, the step stopped at, and the largest difference between
# the resumed and the uninterrupted adapter (0 on 1 GPU; bf16 rounding only on N GPUs).
#   bash scripts/gpu/interrupt_check.sh          N=4 STEPS=40 bash scripts/gpu/interrupt_check.sh
# Without GPUs (a smoke test of the script): DEVICE=cpu N=2 ESFT=build/esft bash scripts/gpu/interrupt_check.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
export NCCL_NVLS_ENABLE=0
PY=${PYTHON:-python3}
OUT=${OUT:-/tmp/esft-interrupt}
DEVICE=${DEVICE:-cuda}
STEPS=${STEPS:-30}
N=${N:-$( [ "$DEVICE" = cuda ] && nvidia-smi -L | wc -l || echo 2)}
rm -rf "$OUT"; mkdir -p "$OUT"
if [ -z "${ESFT:-}" ]; then
  source scripts/gpu/build.sh
  build_esft build-gpu -DESFT_BUILD_TESTS=OFF -DESFT_REQUIRE_NCCL=ON || exit 1
  ESFT=$PWD/build-gpu/esft
fi
ESFT=$(realpath "$ESFT")
echo '{"experts": {"1": [4, 11, 0, 7], "2": [3], "3": [6, 9]}}' > "$OUT/cfg.json"
train() {  # out extra...
  local out=$1; shift
  ${EXEC:-} "$ESFT" train --model tests/data/tiny-qwen3-moe --data tests/data/tiny-intent-train.tokens.jsonl --device "$DEVICE" \
    --expert-config "$OUT/cfg.json" --output "$OUT/$out" --max-steps "$STEPS" --micro-batch-size 2 --global-batch-size 8 \
    --max-length 128 --learning-rate 1e-3 "$@"
}
maxdiff() {
  $PY - "$1" "$2" <<'PY'
import sys
from safetensors.torch import load_file
a, b = load_file(sys.argv[1]), load_file(sys.argv[2])
assert a.keys() == b.keys(), "different tensors"
print(max((a[k].float() - b[k].float()).abs().max().item() for k in a))
PY
}
rows=()
for gpus in $(printf "1\n%s\n" "$N" | sort -un); do  # N=1: once
  par=(); [ "$gpus" -gt 1 ] && par=(--nproc-per-node "$gpus" --expert-parallel "$gpus")
  train "whole$gpus" "${par[@]}" > "$OUT/whole$gpus.log" 2>&1
  # exec: the background job is esft itself, so that the signal reaches it and not a subshell
  EXEC=exec train "term$gpus" "${par[@]}" > "$OUT/term$gpus.log" 2>&1 & pid=$!
  for _ in $(seq 600); do [ "$(wc -l < "$OUT/term$gpus/metrics.jsonl" 2>/dev/null || echo 0)" -ge 3 ] && break; sleep 0.1; done
  kill -TERM "$pid"; rc=0; wait "$pid" || rc=$?
  stopped=$(wc -l < "$OUT/term$gpus/metrics.jsonl")
  ckpt=$([ -f "$OUT/term$gpus/checkpoints/step-$stopped/train_state.safetensors" ] && echo yes || echo NO)
  rc2=0; train "term$gpus" "${par[@]}" --resume "$OUT/term$gpus" > "$OUT/resume$gpus.log" 2>&1 || rc2=$?
  diff=$(maxdiff "$OUT/whole$gpus/adapter/model.safetensors" "$OUT/term$gpus/adapter/model.safetensors" 2>&1 | tail -1)
  rows+=("$gpus GPU(s) | SIGTERM exit $rc (want 75) | stopped after step $stopped, checkpoint $ckpt | resume exit $rc2 | max |resumed - uninterrupted| $diff")
done
rc3=0; train diverge --learning-rate 1e30 --save-steps 1 > "$OUT/diverge.log" 2>&1 || rc3=$?
named=$(grep -c "step 2: the loss" "$OUT/diverge.log" || true)
rows+=("lr 1e30 | exit $rc3 (want 1) | error names step 2: $([ "$named" -gt 0 ] && echo yes || echo NO) | adapter written: $([ -d "$OUT/diverge/adapter" ] && echo YES || echo no)")
echo; echo "interrupt_check ($DEVICE, STEPS=$STEPS, logs in $OUT):"
printf '  %s\n' "${rows[@]}"
