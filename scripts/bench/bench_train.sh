#!/usr/bin/env bash
# Side-by-side throughput of esft and HF transformers on one GPU, same random Qwen3-MoE
# (Qwen3-30B-A3B shapes, LAYERS decoder layers), same data, same batch:
#   scoring-style forward (one sample per pass) and ESFT training (bf16, grouped GEMM).
# Run on a CUDA machine after building build/esft:  LAYERS=4 bash scripts/bench/bench_train.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
LAYERS=${LAYERS:-4} SEQ=${SEQ:-2048} BATCH=${BATCH:-4} STEPS=${STEPS:-10}
W=${BENCH_DIR:-/tmp/esft-bench}
rm -rf "$W"; mkdir -p "$W"
python3 scripts/bench/hf_reference.py --out "$W" --layers "$LAYERS" --seq "$SEQ" --batch "$BATCH" --steps "$STEPS"
./build/esft score --model "$W/model" --data "$W/data.jsonl" --output "$W/scores" --device cuda \
  --n-sample-tokens $(( (2 * BATCH + 2) * SEQ )) 2>&1 | tee "$W/score.log" | tail -1
./build/esft train --model "$W/model" --data "$W/data.jsonl" --expert-config "$W/expert_config.json" \
  --output "$W/train" --device cuda --max-steps "$STEPS" --micro-batch-size "$BATCH" --max-length "$SEQ" \
  --packing none --learning-rate 1e-5 2>&1 | tee "$W/train.log" | tail -3
python3 - "$W" <<'PY'
import json, re, statistics, sys
w = sys.argv[1]
hf = json.load(open(f"{w}/hf.json"))
score = float(re.search(r"([\d.]+) tok/s after the first sample", open(f"{w}/score.log").read()).group(1))
steps = [json.loads(l) for l in open(f"{w}/train/metrics.jsonl")]
train = statistics.median(s["tokens_per_s"] for s in steps[2:])
print(f"| GPU forward, one sample per pass (after warm-up) | HF {hf['forward_tok_s']:.0f} tok/s | esft {score:.0f} tok/s | esft/HF {score / hf['forward_tok_s']:.2f} |")
print(f"| ESFT train step, bf16            | HF {hf['train_tok_s']:.0f} tok/s | esft {train:.0f} tok/s | esft/HF {train / hf['train_tok_s']:.2f} |")
mem = re.search(r"peak GPU memory ([\d.]+) GiB", open(f"{w}/train.log").read())
print(f"| ESFT train peak memory            | HF {hf['train_peak_gib']:.1f} GiB | esft {float(mem.group(1)) if mem else float('nan'):.1f} GiB |")
print(f"HF experts implementation: {hf['experts_implementation']}")
PY
