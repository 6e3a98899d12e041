#!/usr/bin/env bash
# esft and transformers side by side on one GPU, same random Qwen3-MoE with Qwen3-30B-A3B
# shapes at several depths, batch 4 x 2048: scoring vs transformers' forward, ESFT training vs
# transformers' ESFT-style step. Both build their model in memory; run after building build/esft:
#   LAYERS="4 24 48" bash scripts/bench/compare.sh
# Env: LAYERS, SEQ (2048), BATCH (4), STEPS (5), ESFT (build/esft), EXPERTS (8 trained per layer),
# PROFILE (a directory: kineto traces of esft's timed steps at the first depth, summarised).
set -euo pipefail
cd "$(dirname "$0")/../.."
LAYERS=${LAYERS:-4 24 48} SEQ=${SEQ:-2048} BATCH=${BATCH:-4} STEPS=${STEPS:-5} EXPERTS=${EXPERTS:-8}
ESFT=${ESFT:-build/esft}
W=${BENCH_DIR:-/tmp/esft-compare}; mkdir -p "$W"; : > "$W/results.jsonl"
first=1
for L in $LAYERS; do
  python3 scripts/bench/hf_reference.py --layers "$L" --seq "$SEQ" --batch "$BATCH" --steps "$STEPS" \
    | tail -1 | sed 's/^/{"side": "hf", "r": /; s/$/}/' >> "$W/results.jsonl" || echo "{\"side\": \"hf\", \"r\": {\"layers\": $L, \"error\": true}}" >> "$W/results.jsonl"
  prof=""; [ -n "${PROFILE:-}" ] && [ $first = 1 ] && prof="--profile ${PROFILE}/esft-L$L"
  for extra in "" "--activation-checkpointing"; do
    tasks=train; [ -z "$extra" ] && tasks=score,train
    $ESFT bench --shape qwen3-30b-a3b --layers "$L" --seq "$SEQ" --batch "$BATCH" --steps "$STEPS" \
      --experts-per-layer "$EXPERTS" --tasks "$tasks" $extra $prof 2> "$W/esft-L$L$extra.log" \
      | sed 's/^/{"side": "esft", "r": /; s/$/}/' >> "$W/results.jsonl" || echo "esft L=$L $extra failed: $(tail -1 "$W/esft-L$L$extra.log")"
  done
  first=0
done
python3 - "$W/results.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
hf = {r["r"]["layers"]: r["r"] for r in rows if r["side"] == "hf"}
es = {}
for r in rows:
    if r["side"] == "esft":
        es[(r["r"]["layers"], r["r"]["task"])] = r["r"]
def f(x, fmt="{:.0f}"):
    return fmt.format(x) if isinstance(x, (int, float)) else str(x)
print("| layers | HF forward b1 / b4 tok/s | esft score tok/s (x HF b4) | HF ESFT train tok/s, GiB | esft train tok/s, TFLOP/s, MFU, GiB | esft train+ckpt tok/s, MFU, GiB |")
print("|---|---|---|---|---|---|")
for L in sorted(hf):
    h = hf[L]; s = es.get((L, "score"), {}); t = es.get((L, "train"), {}); c = es.get((L, "train_ckpt"), {})
    b4 = h.get("forward_b4_tok_s")
    ratio = s["tokens_per_s"] / b4 if s and isinstance(b4, (int, float)) else float("nan")
    tr = t.get("tokens_per_s"); htr = h.get("train_tok_s")
    print(f"| {L} | {f(h.get('forward_b1_tok_s'))} / {f(b4)} | {f(s.get('tokens_per_s','-'))} ({ratio:.2f}x) | "
          f"{f(htr)}, {f(h.get('train_peak_gib'), '{:.1f}')} | "
          f"{f(tr if tr else '-')}, {f(t.get('tflops','-'))}, {f(100*t['mfu'] if t else '-', '{:.0f}')}%, {f(t.get('peak_gib','-'), '{:.1f}')} | "
          f"{f(c.get('tokens_per_s','-'))}, {f(100*c['mfu'] if c else '-', '{:.0f}')}%, {f(c.get('peak_gib','-'), '{:.1f}')} |")
PY
if [ -n "${PROFILE:-}" ]; then for t in "$PROFILE"/*.json; do python3 scripts/bench/trace_summary.py "$t" 12; done; fi
