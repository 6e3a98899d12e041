"""Where the GPU time of an esft bench --profile trace goes.

Usage: trace_summary.py TRACE.json [TOP]
Prints the kernels' busy time against the traced wall time (the rest is the GPU idle: launch
gaps, host syncs), time per kernel category, and the TOP kernels by total time.
"""
import json
import re
import sys
from collections import defaultdict

CATEGORIES = [
    ("attention", r"flash|fmha|attention|sdpa"),
    ("grouped_gemm", r"Grouped|grouped|ptr_array|17Gr"),
    ("gemm", r"gemm|xmma|cutlass|sm90_|ampere_|cublas|nvjet|matmul"),
    ("sort/scan", r"sort|radix|scan|cumsum|DeviceScan"),
    ("index/gather", r"index|scatter|gather|embedding"),
    ("softmax/topk", r"softmax|topk|sbtopk|bitonic|SoftMax"),
    ("norm/reduce", r"reduce|norm|Norm"),
    ("copy/cast", r"direct_copy|copy_kernel|Memcpy|memcpy|bfloat16_copy|CatArray|Memset"),
    ("elementwise", r"elementwise|vectorized|unrolled|Functor"),
]


def category(name):
    for cat, pat in CATEGORIES:
        if re.search(pat, name, re.I):
            return cat
    return "other"


def main():
    path, top = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 15
    events = json.load(open(path))
    events = events.get("traceEvents", events) if isinstance(events, dict) else events
    kernels = [e for e in events if e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset") and "dur" in e]
    if not kernels:
        print(f"{path}: no GPU kernels in the trace")
        return
    start = min(e["ts"] for e in kernels)
    end = max(e["ts"] + e["dur"] for e in kernels)
    busy = sum(e["dur"] for e in kernels)
    by_cat, by_name, counts = defaultdict(float), defaultdict(float), defaultdict(int)
    for e in kernels:
        by_cat[category(e["name"])] += e["dur"]
        by_name[e["name"]] += e["dur"]
        counts[e["name"]] += 1
    wall = end - start
    print(f"{path}: {len(kernels)} GPU ops, busy {busy / 1e3:.1f} ms of {wall / 1e3:.1f} ms ({100 * busy / wall:.0f}%)")
    for cat, t in sorted(by_cat.items(), key=lambda x: -x[1]):
        print(f"  {cat:14s} {t / 1e3:9.1f} ms  {100 * t / busy:5.1f}%")
    print(f"  top {top} kernels:")
    for name, t in sorted(by_name.items(), key=lambda x: -x[1])[:top]:
        print(f"  {t / 1e3:9.1f} ms {counts[name]:6d}x  {name[:110]}")


if __name__ == "__main__":
    main()
