#!/usr/bin/env bash
# Single-thread encoding speed of esft's tokenizers against HF `tokenizers` on the same
# multi-MB corpus, for each tokenizer in /work/shared/tokenizers (or those given), plus ours on
# all cores. Prints tokens/s and the ratio ours / HF. Not a test: timings depend on the machine.
#   scripts/bench_tokenizer.sh [TOKENIZER_DIR ...]
#   ESFT_BIN (default build/esft)  ESFT_VENV (default /opt/esft/venv)
#   BENCH_MB corpus size in MB (default 8)  BENCH_PASSES (default 2: cold, then warm cache)
set -euo pipefail
cd "$(dirname "$0")/.."
ESFT_BIN=${ESFT_BIN:-build/esft}
PY=${ESFT_VENV:-/opt/esft/venv}/bin/python
MB=${BENCH_MB:-8}
PASSES=${BENCH_PASSES:-2}
[ -x "$ESFT_BIN" ] || { echo "bench_tokenizer: $ESFT_BIN not built (set ESFT_BIN)" >&2; exit 1; }
dirs=("$@")
[ ${#dirs[@]} -gt 0 ] || dirs=(../shared/tokenizers/qwen3 ../shared/tokenizers/gpt-oss ../shared/tokenizers/deepseek-v3)

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$PY" scripts/bench_tokenizer.py corpus "$tmp/corpus.jsonl" --mb "$MB"
field() { sed -n "s/.*$1=\([^ ]*\).*/\1/p"; }

printf '%-14s %8s %12s %12s %12s %7s %14s\n' tokenizer passes "hf tok/s" "esft tok/s" "esft all-core" ratio "load hf/esft s"
for d in "${dirs[@]}"; do
  name=$(basename "$d")
  hf=$("$PY" scripts/bench_tokenizer.py hf "$d/tokenizer.json" "$tmp/corpus.jsonl" --passes "$PASSES")
  ours=$("$ESFT_BIN" bench-tokenizer --tokenizer "$d" --input "$tmp/corpus.jsonl" --threads 1 --passes "$PASSES")
  all=$("$ESFT_BIN" bench-tokenizer --tokenizer "$d" --input "$tmp/corpus.jsonl" --threads "$(nproc)" --passes 1)
  hf_tokens=$(echo "$hf" | grep '^pass=1' | field tokens)
  our_tokens=$(echo "$ours" | grep '^pass=1' | field tokens)
  [ "$hf_tokens" = "$our_tokens" ] || echo "WARNING: $name token counts differ: hf $hf_tokens, esft $our_tokens" >&2
  for p in $(seq 1 "$PASSES"); do
    h=$(echo "$hf" | grep "^pass=$p " | field tokens_per_s)
    o=$(echo "$ours" | grep "^pass=$p " | field tokens_per_s)
    a=$(echo "$all" | grep "^pass=1 " | field tokens_per_s)
    printf '%-14s %8s %12s %12s %12s %7s %14s\n' "$name" "$p/$PASSES" "$h" "$o" "$a" \
      "$(awk -v o="$o" -v h="$h" 'BEGIN{printf "%.2fx", o/h}')" \
      "$(echo "$hf" | field load_seconds)/$(echo "$ours" | field load_seconds)"
  done
done
echo "corpus: ${MB} MB (tests/python/tokenizer_corpus.py), $(nproc) cores; ratio = esft single-thread / HF single-thread"
