#!/usr/bin/env bash
# Multi-GPU check on a machine with N >= 2 GPUs and torch 2.11 (CUDA) in the system Python:
#   1. builds esft against that torch with NCCL required;
#   2. correctness: the tiny Qwen3-MoE trained on 1 GPU vs 2 (and 4) GPUs, pure expert parallel,
#      data x expert parallel and pure data parallel, launched by --nproc-per-node and by torchrun,
#      in fp32 (per-expert path: tight tolerance) and bf16 (grouped GEMM: loose), plus scoring with
#      expert parallelism; every run is compared with the 1-GPU run (loss, grad norm, adapter);
#   3. throughput: a random model with Qwen3-30B-A3B shapes (LAYERS layers) on 1 GPU vs all N GPUs
#      with expert parallelism over N, same global batch: tok/s, tok/s per GPU, all-to-all time.
# Prints a table at the end; logs and outputs stay in $OUT (default /tmp/esft-multi-gpu).
#   bash scripts/gpu/multi_gpu.sh            LAYERS=4 SEQ=4096 STEPS=6 bash scripts/gpu/multi_gpu.sh
# Smoke test of the script itself without GPUs: DEVICE=cpu N=4 ESFT=build/esft SKIP_BIG=1 bash scripts/gpu/multi_gpu.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
export NCCL_NVLS_ENABLE=0   # NVLink SHARP multicast stays off on the lent machines
export ESFT_COLLECTIVE_TIMEOUT_S=${ESFT_COLLECTIVE_TIMEOUT_S:-600}
PY=${PYTHON:-python3}
OUT=${OUT:-/tmp/esft-multi-gpu}
LAYERS=${LAYERS:-4} SEQ=${SEQ:-4096} STEPS=${STEPS:-6}
DEVICE=${DEVICE:-cuda}
N=${N:-$(nvidia-smi -L | wc -l)}
[ "$N" -ge 2 ] || { echo "multi_gpu.sh: needs at least 2 GPUs, found $N"; exit 1; }
rm -rf "$OUT"; mkdir -p "$OUT"
[ "$DEVICE" = cuda ] && nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | head -1 | sed "s/^/GPUs: ${N} x /"

# ---- 1. build ----
if [ -z "${ESFT:-}" ]; then
  source scripts/gpu/build.sh
  build_esft build-gpu -DESFT_BUILD_TESTS=OFF -DESFT_REQUIRE_NCCL=ON || exit 1
  ESFT=$PWD/build-gpu/esft
fi
ESFT=$(realpath "$ESFT")
TORCHRUN="$PY -m torch.distributed.run --standalone"

# ---- 2. correctness on the tiny model ----
# Layer 3 trains one expert: with 2+ expert-parallel ranks some rank holds none of that layer.
echo '{"experts": {"1": [4, 11, 0, 7, 2], "3": [6]}}' > "$OUT/cfg.json"
tiny() {  # name dtype launcher-prefix extra-args...
  local name=$1 dtype=$2 pre=$3; shift 3
  $pre "$ESFT" train --model tests/data/tiny-qwen3-moe --data tests/data/tiny-intent-train.tokens.jsonl \
    --expert-config "$OUT/cfg.json" --device "$DEVICE" --dtype "$dtype" --max-steps 3 --global-batch-size 8 \
    --micro-batch-size 2 --max-length 96 --learning-rate 1e-2 --max-grad-norm 0.5 --router-aux-loss \
    --output "$OUT/tiny/$name" "$@" > "$OUT/tiny/$name.log" 2>&1 || echo "FAILED: $name (see $OUT/tiny/$name.log)"
}
mkdir -p "$OUT/tiny"
runs=()
for dtype in fp32 bf16; do
  tiny "$dtype-1gpu" $dtype ""
  tiny "$dtype-nproc1" $dtype "" --nproc-per-node 1 --expert-parallel 1
  tiny "$dtype-ep2" $dtype "" --nproc-per-node 2 --expert-parallel 2
  tiny "$dtype-dp2" $dtype "" --nproc-per-node 2 --expert-parallel 1
  tiny "$dtype-torchrun-ep2" $dtype "$TORCHRUN --nproc-per-node 2 --no-python" --expert-parallel 2
  tiny "$dtype-ep2-ckpt" $dtype "" --nproc-per-node 2 --expert-parallel 2 --activation-checkpointing
  runs+=("$dtype-nproc1" "$dtype-ep2" "$dtype-dp2" "$dtype-torchrun-ep2" "$dtype-ep2-ckpt")
  if [ "$N" -ge 4 ]; then
    tiny "$dtype-ep4" $dtype "" --nproc-per-node 4 --expert-parallel 4
    tiny "$dtype-dp2xep2" $dtype "" --nproc-per-node 4 --expert-parallel 2
    tiny "$dtype-torchrun-dp2xep2" $dtype "$TORCHRUN --nproc-per-node 4 --no-python" --expert-parallel 2
    runs+=("$dtype-ep4" "$dtype-dp2xep2" "$dtype-torchrun-dp2xep2")
  fi
done
score() {  # name extra-args...
  local name=$1; shift
  "$ESFT" score --model tests/data/tiny-qwen3-moe --data tests/data/tiny-intent-train.tokens.jsonl --device "$DEVICE" \
    --dtype fp32 --n-sample-tokens 3000 --output "$OUT/score/$name" "$@" > "$OUT/score/$name.log" 2>&1 \
    || echo "FAILED: score $name (see $OUT/score/$name.log)"
}
mkdir -p "$OUT/score"
score ref-rank0 --rank 0 --world-size 2; score ref-rank0 --rank 1 --world-size 2; score ref-rank0 --rank 0 --world-size 2
score ep2 --nproc-per-node 2 --expert-parallel 2

# ---- 3. throughput on Qwen3-30B-A3B shapes ----
[ -n "${SKIP_BIG:-}" ] || $PY - "$OUT/big" "$LAYERS" "$SEQ" "$(( 2 * N * (STEPS + 1) ))" <<'PY' > "$OUT/big.log" 2>&1
import json, os, sys, torch
from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM
out, layers, seq, rows = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
os.makedirs(out, exist_ok=True)
torch.manual_seed(0)
cfg = Qwen3MoeConfig(vocab_size=151936, hidden_size=2048, intermediate_size=6144, moe_intermediate_size=768,
                     num_hidden_layers=layers, num_attention_heads=32, num_key_value_heads=4, head_dim=128,
                     num_experts=128, num_experts_per_tok=8, norm_topk_prob=True, rope_theta=1e6,
                     max_position_embeddings=40960, tie_word_embeddings=False)
with torch.device("cuda"):
    Qwen3MoeForCausalLM(cfg).to(torch.bfloat16).save_pretrained(os.path.join(out, "model"))
g = torch.Generator().manual_seed(1)
with open(os.path.join(out, "data.jsonl"), "w") as f:
    for r in torch.randint(0, cfg.vocab_size, (rows, seq), generator=g).tolist():
        f.write(json.dumps({"input_ids": r, "labels": r}) + "\n")
# the busiest-expert style selection: 8 experts per layer, low ids (contiguous placement would pile them up)
json.dump({"experts": {str(l): list(range(8)) for l in range(layers)}}, open(os.path.join(out, "expert_config.json"), "w"))
PY
big() {  # name nproc ep
  local name=$1 nproc=$2 ep=$3
  "$ESFT" train --model "$OUT/big/model" --data "$OUT/big/data.jsonl" --expert-config "$OUT/big/expert_config.json" \
    --device cuda --max-steps "$STEPS" --global-batch-size $(( 2 * N )) --micro-batch-size 1 --max-length "$SEQ" \
    --packing none --learning-rate 1e-5 --nproc-per-node "$nproc" --expert-parallel "$ep" \
    --output "$OUT/big/$name" > "$OUT/big/$name.log" 2>&1 || echo "FAILED: big $name (see $OUT/big/$name.log)"
}
if [ -z "${SKIP_BIG:-}" ]; then
  big 1gpu 1 1
  big "ep$N" "$N" "$N"
  big "dp$N" "$N" 1
fi

# ---- table ----
$PY - "$OUT" "$N" "${runs[@]}" <<'PY'
import json, os, re, statistics, sys
from safetensors.torch import load_file
out, n, runs = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
def metrics(d):
    p = os.path.join(d, "metrics.jsonl")
    return [json.loads(l) for l in open(p)] if os.path.exists(p) else None
# fp32: the runs differ only in the order of float additions; the adapter is saved in the
# checkpoint's bf16, so one rounding step. bf16: expert parallelism groups other ranks' rows into
# the expert matmuls, so bf16 rounding differs; AdamW (lr 1e-2, 3 steps) turns a flipped sign of
# a near-zero gradient into up to 2 * lr per step, which bounds the adapter difference.
LR, STEPS = 1e-2, 3
print("\n| run (vs 1 GPU, same dtype) | max rel diff loss | max rel diff grad_norm | adapter: max rel diff / max abs diff | verdict |")
print("|---|---|---|---|---|")
for r in runs:
    dtype = r.split("-")[0]
    ref, got = os.path.join(out, "tiny", f"{dtype}-1gpu"), os.path.join(out, "tiny", r)
    ma, mb = metrics(ref), metrics(got)
    if not ma or not mb or len(ma) != len(mb):
        print(f"| {r} | - | - | - | FAILED |"); continue
    dl = max(abs(a["loss"] - b["loss"]) / abs(a["loss"]) for a, b in zip(ma, mb))
    dg = max(abs(a["grad_norm"] - b["grad_norm"]) / abs(a["grad_norm"]) for a, b in zip(ma, mb))
    A, B = load_file(f"{ref}/adapter/model.safetensors"), load_file(f"{got}/adapter/model.safetensors")
    same = set(A) == set(B)
    da = max(((A[k].float() - B[k].float()).abs().max() / A[k].float().abs().max()).item() for k in A) if same else float("inf")
    dabs = max((A[k].float() - B[k].float()).abs().max().item() for k in A) if same else float("inf")
    if dtype == "fp32":
        ok = dl < 1e-4 and dg < 1e-4 and da < 2e-2
    else:
        ok = dl < 1e-3 and dg < 2e-2 and dabs <= 2 * LR * STEPS
    if r.split("-", 1)[1] == "nproc1":  # the same code path on one process: bit for bit
        ok = dl == 0 and dg == 0 and da == 0
    print(f"| {r} | {dl:.2e} | {dg:.2e} | {da:.2e} / {dabs:.2e} | {'ok' if ok else 'MISMATCH'} |")
try:
    sa = json.load(open(f"{out}/score/ref-rank0/summary.json"))["token_scores"]
    sb = json.load(open(f"{out}/score/ep2/summary.json"))["token_scores"]
    d = max(abs(sa[l][e] - sb[l][e]) for l in sa for e in sa[l])
    print(f"| score, EP 2 vs 2 single processes | token score max abs diff {d:.1e} | | | {'ok' if d < 2e-3 else 'MISMATCH'} |")
except Exception as e:
    print(f"| score, EP 2 | FAILED ({e}) | | | |")
if not os.path.isdir(os.path.join(out, "big")):
    sys.exit(0)
print(f"\n| throughput, Qwen3-30B-A3B shapes | tok/s (all GPUs) | tok/s per GPU | all-to-all s/step | peak GiB |")
print("|---|---|---|---|---|")
for name in ["1gpu", f"ep{n}", f"dp{n}"]:
    m = metrics(os.path.join(out, "big", name))
    log = open(os.path.join(out, "big", name + ".log")).read() if os.path.exists(os.path.join(out, "big", name + ".log")) else ""
    if not m:
        print(f"| {name} | FAILED | | | |"); continue
    tail = m[1:] or m
    tps = statistics.median(s["tokens_per_s"] for s in tail)
    per = statistics.median(s.get("tokens_per_s_per_gpu", s["tokens_per_s"]) for s in tail)
    a2a = statistics.median(s.get("all_to_all_s", 0.0) for s in tail)
    mem = re.search(r"peak GPU memory ([\d.]+) GiB", log)
    print(f"| {name} | {tps:.0f} | {per:.0f} | {a2a:.3f} | {mem.group(1) if mem else '-'} |")
PY
