#!/usr/bin/env bash
# GPT-OSS on one GPU (an H200 for the 120b part), one command:
#   bash scripts/gpu/gpt_oss.sh                 # build parity 20b 120b
#   bash scripts/gpu/gpt_oss.sh parity 20b      # some stages (a warm machine keeps ./build)
#   bash scripts/gpu/gpt_oss.sh 120b-disk       # the optional stage
# Stages:
#   build   esft and its tests against the machine's python3 torch (cmake + ninja)
#   parity  the GPT-OSS rows of the family parity table in bf16 on the GPU against transformers
#           on the GPU, MXFP4 dequantisation on the GPU, packed banks (grouped GEMM), fused
#           sink attention (flash, sliding window, documents) against the eager one
#   20b     random gpt-oss-20b-shaped MXFP4 checkpoint (24 layers, real dims), ESFT training at
#           4 x 2048 tokens per step: esft, then transformers' ESFT-style step on the same GPU
#   120b    gpt-oss-120b, all 36 layers, built in memory by esft bench (random MXFP4 experts kept
#           packed, as a checkpoint would load; no disk needed): ESFT training at 4 x 2048 tokens
#           with and without --activation-checkpointing: whether and how it fits one GPU
#   120b-disk  (optional) a gpt-oss-120b-shaped MXFP4 checkpoint on disk with as many layers as
#           the disk holds, trained through esft train (CKPT_120B=1: with activation
#           checkpointing), peak memory at that depth and at 4 layers: memory per layer and the
#           estimate for all 36 layers
# Prints a table at the end (of every stage run so far on this machine); logs go to $OUT
# (default $W). Settings: STEPS (4), EXPERTS (trained experts per layer, 2), MICRO (esft
# micro-batch for 20b, 4), MICRO_120B (4), CKPT_120B (1), HF_MICRO (1), VOCAB (201088),
# PEAK_TFLOPS (989, H100/H200 dense bf16), W (work dir, /tmp/esft-gpt-oss).
set -uo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3}
W=${W:-/tmp/esft-gpt-oss}
OUT=${OUT:-$W}
STEPS=${STEPS:-4} EXPERTS=${EXPERTS:-2} MICRO=${MICRO:-4} MICRO_120B=${MICRO_120B:-4} CKPT_120B=${CKPT_120B:-1}
HF_MICRO=${HF_MICRO:-1}
VOCAB=${VOCAB:-201088}
PEAK_TFLOPS=${PEAK_TFLOPS:-989}
STAGES=${*:-build parity 20b 120b}
mkdir -p "$W" "$OUT"
RES="$W/results.jsonl"  # kept across calls on a warm machine; one line per run name
T0=$(date +%s)
note() { echo "[$(( $(date +%s) - T0 ))s] $*"; }
has() { [[ " $STAGES " == *" $1 "* ]]; }
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"

if has build; then
  note build
  source scripts/gpu/build.sh
  build_esft build
fi

if has parity; then
  note parity
  ESFT_TEST_DEVICE=cuda ./build/esft_torch_tests \
    --gtest_filter='Table/FamilyParity.*gpt_oss*:Mxfp4.*:PackedExperts.*:SinkAttention.*' 2>&1 |
    grep -v -E "^(Writing|Loading)" | tee "$OUT/parity.log" | grep -E "^\[ *(OK|FAILED|PASSED) *\]|Failure|actual|Expected" | head -40
fi

# esft train on MODEL; records {"name", "layers", "micro", "ckpt", "tok_s", "mfu", "peak_gib"} in $RES.
esft_train() {  # name model layers micro [extra flags]
  local name=$1 model=$2 layers=$3 micro=$4 extra=${5:-}
  $PY - "$model" "$EXPERTS" "$W/$name.experts.json" <<'PY'
import json, random, sys
cfg = json.load(open(sys.argv[1] + "/config.json"))
rng = random.Random(0)
E, L = cfg["num_local_experts"], cfg["num_hidden_layers"]
json.dump({"experts": {str(l): sorted(rng.sample(range(E), int(sys.argv[2]))) for l in range(L)},
           "shared_experts": False, "non_expert_modules": False}, open(sys.argv[3], "w"))
PY
  note "esft train $name"
  ./build/esft train --model "$model" --data "$W/data.jsonl" --expert-config "$W/$name.experts.json" \
    --output "$W/train-$name" --device cuda --max-steps "$STEPS" --micro-batch-size "$micro" --global-batch-size 4 \
    --max-length 2048 --packing none --learning-rate 1e-5 --peak-tflops "$PEAK_TFLOPS" $extra 2>&1 | tee "$OUT/esft-$name.log" |
    grep -E "step|peak|error"
  $PY - "$W/train-$name/metrics.jsonl" "$OUT/esft-$name.log" "$name" "$layers" "$micro" "$RES" "$extra" <<'PY'
import json, os, re, statistics, sys
metrics, log, name, layers, micro, res, extra = sys.argv[1:]
r = {"name": name, "layers": int(layers), "micro": int(micro), "ckpt": "checkpointing" in extra}
try:
    steps = [json.loads(l) for l in open(metrics)][1:]  # the first step warms up
    r.update(tok_s=statistics.median(s["tokens_per_s"] for s in steps), mfu=statistics.median(s["mfu"] for s in steps),
             peak_gib=float(re.search(r"peak GPU memory ([\d.]+) GiB", open(log).read()).group(1)))
except Exception as e:  # noqa: BLE001
    tail = open(log).read().strip().splitlines()[-1:] if os.path.exists(log) else []
    r["error"] = (tail[0] if tail else repr(e))[-120:]
old = [l for l in open(res)] if os.path.exists(res) else []
with open(res, "w") as f:
    f.writelines(l for l in old if json.loads(l)["name"] != name)
    f.write(json.dumps(r) + "\n")
PY
}

rows=$((4 * (STEPS + 1)))
if has 20b; then
  note "make gpt-oss-20b (24 layers, MXFP4)"
  rm -rf "$W/20b" "$W"/train-*
  $PY scripts/gpu/gpt_oss_checkpoint.py --shape 20b --layers 24 --vocab "$VOCAB" --out "$W/20b" \
    --data "$W/data.jsonl" --rows "$rows" --seq 2048 | tee "$OUT/make-20b.json"
  esft_train 20b "$W/20b" 24 "$MICRO"
  note "transformers 20b"
  $PY scripts/gpu/gpt_oss_hf.py --model "$W/20b" --data "$W/data.jsonl" --expert-config "$W/20b.experts.json" \
    --out "$W/hf-20b.json" --steps "$STEPS" --batch 4 --micro "$HF_MICRO" 2>&1 | grep -v -E "^(Loading|Writing)" | tail -3
  rm -rf "$W/20b"
fi

if has 120b; then
  for ck in --activation-checkpointing ""; do
    name="120b-36-mem${ck:+-ckpt}"
    note "esft bench $name"
    ./build/esft bench --shape gpt-oss-120b --tasks train --batch 4 --seq 2048 --steps "$STEPS" --warmup 1 \
      --experts-per-layer "$EXPERTS" --peak-tflops "$PEAK_TFLOPS" $ck 2>&1 | tee "$OUT/bench-$name.log" | tail -2
    $PY - "$OUT/bench-$name.log" "$name" "$RES" "$ck" <<'PY'
import json, os, sys
log, name, res, ck = sys.argv[1:]
r = {"name": name, "layers": 36, "micro": 4, "ckpt": bool(ck)}
lines = [l for l in open(log) if l.startswith("{")]
if lines:
    j = json.loads(lines[-1])
    r.update(tok_s=j["tokens_per_s"], mfu=j["mfu"], peak_gib=j["peak_gib"])
else:
    tail = open(log).read().strip().splitlines()[-1:]
    r["error"] = (tail[0] if tail else "no output")[-120:]
old = [l for l in open(res)] if os.path.exists(res) else []
with open(res, "w") as f:
    f.writelines(l for l in old if json.loads(l)["name"] != name)
    f.write(json.dumps(r) + "\n")
PY
  done
fi

if has 120b-disk; then
  # Disk: MXFP4 experts 128 x 3 x 2880^2 x 17/32 bytes + bf16 attention/router/biases per layer.
  per_layer=$($PY -c "print(int(128*3*2880*2880*17/32 + 2*(2*64*64*2880 + 2*8*64*2880 + 128*2880 + 128*3*2880 + 6000)))")
  rest=$((2 * VOCAB * 2880 * 2 + (3 << 30)))  # embeddings, lm_head, and a margin
  rm -rf "$W"/120b* "$W"/train-*
  free=$(df --output=avail -B1 "$W" | tail -1)
  L=$(( (free - rest) / per_layer )); (( L > 36 )) && L=36
  if (( L < 6 )); then
    note "120b: only $(( free >> 30 )) GiB free on disk, skipped"
  else
    note "make gpt-oss-120b ($L of 36 layers, MXFP4; $(( free >> 30 )) GiB free)"
    gen_data=()
    [[ -f "$W/data.jsonl" ]] || gen_data=(--data "$W/data.jsonl" --rows "$rows" --seq 2048)
    $PY scripts/gpu/gpt_oss_checkpoint.py --shape 120b --layers "$L" --vocab "$VOCAB" --out "$W/120b" \
      --subset "4:$W/120b-4" "${gen_data[@]}" | tee "$OUT/make-120b.json"
    ck=""; [[ "$CKPT_120B" == 1 ]] && ck=--activation-checkpointing
    esft_train 120b-disk-4 "$W/120b-4" 4 "$MICRO_120B" "$ck"
    esft_train "120b-disk-$L" "$W/120b" "$L" "$MICRO_120B" "$ck"
    rm -rf "$W"/120b*
  fi
fi

note "done"
cp -f "$RES" "$W/hf-20b.json" "$OUT/" 2>/dev/null
$PY - "$RES" "$W/hf-20b.json" "$OUT/gpu.txt" <<'PY'
import json, os, sys
rows = [json.loads(l) for l in open(sys.argv[1])] if os.path.exists(sys.argv[1]) else []
hf = json.load(open(sys.argv[2])) if os.path.exists(sys.argv[2]) else {}
print(f"\nGPU: {open(sys.argv[3]).read().strip()}; ESFT step = 4 x 2048 tokens, MXFP4 checkpoints, bf16 compute")
print("| run | layers | micro-batch | tok/s | MFU | peak memory |")
print("|---|---|---|---|---|---|")
for r in rows:
    micro = f"{r['micro']}" + (", act. ckpt" if r.get("ckpt") else "")
    if "error" in r:
        print(f"| esft {r['name']} | {r['layers']} | {micro} | failed: {r['error'][:80]} | | |")
    else:
        print(f"| esft {r['name']} | {r['layers']} | {micro} | {r['tok_s']:.0f} | {100 * r['mfu']:.1f}% | "
              f"{r['peak_gib']:.1f} GiB |")
if hf:
    tok = f"{hf['train_tok_s']:.0f}" if "train_tok_s" in hf else hf.get("error", "?")[:80]
    mem = f"{hf['train_peak_gib']:.1f} GiB" if "train_peak_gib" in hf else ""
    print(f"| transformers 20b (bf16, every expert's gradient) | 24 | {hf['micro']} | {tok} | | {mem} |")
by = {r["name"]: r for r in rows if "error" not in r}
small = by.get("120b-disk-4")
big = next((r for n, r in by.items() if n.startswith("120b-disk-") and n != "120b-disk-4"), None)
if small and big and big["layers"] > 4:
    per = (big["peak_gib"] - small["peak_gib"]) / (big["layers"] - 4)
    est = big["peak_gib"] + (36 - big["layers"]) * per
    print(f"\n120b: {per:.2f} GiB per layer (peak at {big['layers']} layers minus peak at 4); "
          f"36 layers: about {est:.1f} GiB")
PY
