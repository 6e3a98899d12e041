#!/usr/bin/env bash
# Everything the GPU machine checks in one call (device time is scarce): bf16 parity of every
# family against transformers (in the background), esft bench on Qwen3-30B-A3B shapes at 4, 24
# and 48 layers with a kineto profile summary, transformers side by side at 4 and 24 layers
# (48 layers: its forward only), GPT-OSS 20b/120b built in memory from MXFP4, and the ESFT
# paper's DeepSeek-V2-Lite at its real shape through esft score / train with the four official
# expert configs. Uses prebuilt binaries from .carry/ when they run (built on the CPU machine
# against the same torch 2.11.0+cu130; carry ".carry"), else builds.
#   bash scripts/gpu/check_all.sh            (results under $OUT)
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/esft-gpu}; mkdir -p "$OUT" /tmp/prof
export LD_LIBRARY_PATH=$(python3 -c 'import torch,os;print(os.path.dirname(torch.__file__)+"/lib")'):$PWD/.carry
ESFT=.carry/esft TESTS=.carry/esft_torch_tests
if ! $ESFT --version >/dev/null 2>&1; then
  source scripts/gpu/build.sh
  build_esft build || exit 1
  ESFT=build/esft TESTS=build/esft_torch_tests
fi
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/bench.log"
export ESFT_TEST_PYTHON=python3 ESFT_TEST_SOURCE_DIR=$PWD ESFT_TEST_TMP=/tmp/esft-tests ESFT_TEST_BIN=$PWD/$ESFT
for i in 0 1 2 3; do (ESFT_TEST_DEVICE=cuda GTEST_TOTAL_SHARDS=4 GTEST_SHARD_INDEX=$i timeout 300 $TESTS \
  --gtest_filter='Table*:SinkAttention*:PackedExperts*' > /tmp/parity$i.log 2>&1) & done
bench() { timeout "${T:-150}" $ESFT bench "$@" 2>&1 | grep '^{' | tee -a "$OUT/bench.log"; }
bench --layers 4 --steps 4 --tasks score,train --profile /tmp/prof/L4
bench --layers 4 --steps 4 --tasks train --activation-checkpointing
bench --layers 24 --steps 4 --tasks score,train
bench --layers 24 --steps 4 --tasks train --activation-checkpointing
bench --layers 48 --steps 4 --tasks score
bench --layers 48 --steps 3 --tasks train --activation-checkpointing --profile /tmp/prof/L48
for t in /tmp/prof/*.json; do timeout 90 python3 scripts/bench/trace_summary.py "$t" 12; done > "$OUT/profile.log" 2>&1
for L in 4 24; do timeout 120 python3 scripts/bench/hf_reference.py --layers $L --steps 4 | tee -a "$OUT/bench.log"; done
bench --shape gpt-oss-20b --steps 3 --tasks score,train --vocab 32000
T=200 bench --shape gpt-oss-120b --steps 2 --tasks train --activation-checkpointing --vocab 32000
# DeepSeek-V2-Lite, real shape, through the CLI with the official expert configs.
W=/tmp/esft-v2lite; DATA=tests/data/tiny-intent-train.tokens.jsonl
timeout 150 python3 scripts/gpu/random_checkpoint.py --out $W/model 2>&1 | tail -1 | tee "$OUT/v2lite.log"
timeout 120 $ESFT score --model $W/model --data $DATA --output $W/scores --device cuda 2>&1 | tail -1 | tee -a "$OUT/v2lite.log"
ls $W/scores/rank_0 | tr '\n' ' ' | tee -a "$OUT/v2lite.log"; echo | tee -a "$OUT/v2lite.log"
for task in intent law summary translation; do
  timeout 120 $ESFT train --model $W/model --data $DATA --expert-config .carry/esft-official/$task/expert_config.json \
    --output $W/train-$task --device cuda --max-steps 2 2>&1 | grep -E "step 2/2|wrote the adapter|error" | tee -a "$OUT/v2lite.log"
done
wait
cat /tmp/parity*.log | grep -E "^\[  (PASSED|FAILED)|Failure|agree|Expected|Which" > "$OUT/parity.log"
grep -h "OK \]" /tmp/parity*.log | wc -l | sed 's/^/parity rows ok: /' | tee -a "$OUT/parity.log"
grep -v "^\[  PASSED" "$OUT/parity.log" | head -30
