"""Prints random.shuffle(list(range(n))) for random.seed(seed), one JSON list per (seed, n)."""
import json
import random
import sys

for arg in sys.argv[1:]:
    seed, n = map(int, arg.split(":"))
    random.seed(seed)
    x = list(range(n))
    random.shuffle(x)
    print(json.dumps(x))
