#!/usr/bin/env python3
"""HF tokenizers side of scripts/bench_tokenizer.sh.

  bench_tokenizer.py corpus OUT.jsonl [--mb N] [--seed S]   writes the benchmark corpus
  bench_tokenizer.py hf TOKENIZER_JSON IN.jsonl [--passes P] times HF tokenizers, single thread

The corpus is tests/python/tokenizer_corpus.py's mix (many scripts, code, numbers, emoji,
whitespace runs, unusual Unicode, special-token strings). HF runs with RAYON_NUM_THREADS=1 so
encode_batch uses one thread; timing covers encode_batch only (not loading or Python setup).
"""
import os

os.environ["RAYON_NUM_THREADS"] = "1"  # before tokenizers starts its thread pool
os.environ["TOKENIZERS_PARALLELISM"] = "false"

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "python"))


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("corpus")
    c.add_argument("out")
    c.add_argument("--mb", type=float, default=8)
    c.add_argument("--seed", type=int, default=2024)
    h = sub.add_parser("hf")
    h.add_argument("tokenizer")
    h.add_argument("input")
    h.add_argument("--passes", type=int, default=1)
    args = ap.parse_args()

    if args.cmd == "corpus":
        from tokenizer_corpus import make_corpus
        docs = make_corpus(args.seed, int(args.mb * 1e6))
        with open(args.out, "w", encoding="utf-8") as f:
            for d in docs:
                f.write(json.dumps({"text": d}, ensure_ascii=False) + "\n")
        return

    from tokenizers import Tokenizer
    with open(args.input, encoding="utf-8") as f:
        docs = [json.loads(line)["text"] for line in f if line.strip()]
    nbytes = sum(len(d.encode("utf-8")) for d in docs)
    t0 = time.perf_counter()
    tok = Tokenizer.from_file(args.tokenizer)
    print(f"load_seconds={time.perf_counter() - t0:.4f}")
    for p in range(args.passes):
        t0 = time.perf_counter()
        encs = tok.encode_batch(docs, add_special_tokens=False)
        secs = time.perf_counter() - t0
        tokens = sum(len(e.ids) for e in encs)
        print(f"pass={p + 1} threads=1 documents={len(docs)} bytes={nbytes} tokens={tokens} seconds={secs:.4f} "
              f"mb_per_s={nbytes / 1e6 / secs:.3f} tokens_per_s={tokens / secs:.0f}")


if __name__ == "__main__":
    main()
