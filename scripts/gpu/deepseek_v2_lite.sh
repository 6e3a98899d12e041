#!/usr/bin/env bash
# The ESFT paper's model at its real shape on one GPU: a random DeepSeek-V2-Lite (27 layers, 64
# routed + 2 shared experts, top-6, MLA with kv_lora_rank 512 and a plain q_proj, YaRN), bf16,
# sharded on disk (scripts/gpu/random_checkpoint.py, about 31 GB). Then
#   esft score   on the bundled intent data: expert_weights_1..26.txt as the official fixtures
#                (layer 0 is dense: no log), each line top-6 ids and their weights;
#   esft train   --max-steps 2 with each of the four official expert_config.json files.
# Prints a summary table at the end. One command on the GPU machine:
#   bash scripts/gpu/deepseek_v2_lite.sh
# The official configs must be in .carry/esft-official/{intent,law,summary,translation}/
# (git-ignored: carry ".carry"; fill it with `bash scripts/gpu/deepseek_v2_lite.sh --prepare`
# where ../shared/fixtures exists). Set V2LITE_DIR for the checkpoint (default /tmp/esft-v2lite).
set -euo pipefail
cd "$(dirname "$0")/../.."
OFFICIAL=.carry/esft-official
TASKS="intent law summary translation"
if [ "${1:-}" = "--prepare" ]; then
  for t in $TASKS; do
    mkdir -p "$OFFICIAL/$t"
    cp "${ESFT_SHARED_DIR:-../shared}/fixtures/esft-official/$t/expert_config.json" "$OFFICIAL/$t/"
  done
  echo "copied the official expert configs to $OFFICIAL (pass carry [\".carry\"])"
  exit 0
fi
for t in $TASKS; do
  [ -f "$OFFICIAL/$t/expert_config.json" ] || { echo "missing $OFFICIAL/$t/expert_config.json (carry .carry)"; exit 1; }
done
PY=${PYTHON:-python3}
W=${V2LITE_DIR:-/tmp/esft-v2lite}
LOG=${OUT:-/tmp}/deepseek_v2_lite.log
DATA=tests/data/tiny-intent-train.tokens.jsonl
mkdir -p "$W" "$(dirname "$LOG")"
: > "$LOG"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$LOG"

t=$(date +%s)
source scripts/gpu/build.sh
build_esft build
echo "build: $(( $(date +%s) - t )) s" | tee -a "$LOG"

t=$(date +%s)
$PY scripts/gpu/random_checkpoint.py --out "$W/model" 2>&1 | tail -2 | tee -a "$LOG"
echo "checkpoint: $(( $(date +%s) - t )) s" | tee -a "$LOG"

t=$(date +%s)
rm -rf "$W/scores"
./build/esft score --model "$W/model" --data "$DATA" --output "$W/scores" --device cuda 2>&1 | tee -a "$LOG" | tail -3
echo "score: $(( $(date +%s) - t )) s" | tee -a "$LOG"

for task in $TASKS; do
  t=$(date +%s)
  rm -rf "$W/train-$task"
  set +e
  ./build/esft train --model "$W/model" --data "$DATA" --expert-config "$OFFICIAL/$task/expert_config.json" \
    --output "$W/train-$task" --device cuda --max-steps 2 --learning-rate 1e-5 2>&1 | tee -a "$LOG" | tail -3
  echo "train $task: rc ${PIPESTATUS[0]}, $(( $(date +%s) - t )) s" | tee -a "$LOG"
  set -e
done

$PY - "$W" "$OFFICIAL" <<'PY' | tee -a "$LOG"
import json, os, sys
w, official = sys.argv[1], sys.argv[2]
ok = True
logs = os.path.join(w, "scores", "rank_0")
present = sorted(int(f[len("expert_weights_"):-4]) for f in os.listdir(logs) if f.startswith("expert_weights_"))
lines_ok = True
for layer in present:
    for line in open(os.path.join(logs, f"expert_weights_{layer}.txt")):
        ids, weights = line.rstrip("\n").split("\t\t")
        ids, weights = ids.split("\t"), weights.split("\t")
        lines_ok &= len(ids) == len(weights) and len(ids) % 6 == 0 and all(0 <= int(i) < 64 for i in ids)
layers_ok = present == list(range(1, 27))
ok &= layers_ok and lines_ok
print("| step | result |")
print("|---|---|")
print(f"| esft score: expert_weights_L.txt for L = {present[0]}..{present[-1]} ({len(present)} files) | "
      f"{'ok' if layers_ok else 'WRONG (want 1..26)'}; lines top-6 ids < 64 with one weight each: {'ok' if lines_ok else 'WRONG'} |")
for task in ["intent", "law", "summary", "translation"]:
    run = os.path.join(w, f"train-{task}")
    cfg = json.load(open(os.path.join(official, task, "expert_config.json")))
    n_sel = sum(len(v) for v in cfg["experts"].values())
    m = [json.loads(l) for l in open(os.path.join(run, "metrics.jsonl"))] if os.path.exists(os.path.join(run, "metrics.jsonl")) else []
    adapter = os.path.join(run, "adapter", "model.safetensors")
    n_adapter = None
    if os.path.exists(adapter):
        from safetensors import safe_open
        with safe_open(adapter, "pt") as f:
            n_adapter = len(list(f.keys()))
    good = len(m) == 2 and n_adapter == 3 * n_sel
    ok &= good
    loss = ", ".join(f"{r['loss']:.3f}" for r in m)
    print(f"| esft train {task} ({n_sel} experts in {len(cfg['experts'])} layers), 2 steps | "
          f"{'ok' if good else 'FAILED'}: losses {loss or '-'}, adapter {n_adapter} tensors (want {3 * n_sel}) |")
print("ALL OK" if ok else "SOME CHECKS FAILED")
PY
