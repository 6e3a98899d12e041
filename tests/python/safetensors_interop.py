"""Safetensors interop with the reference `safetensors` package (tests/core/safetensors_test.cpp).

  safetensors_interop.py write PATH   writes the expected tensors with safetensors.torch.save_file
  safetensors_interop.py check PATH   loads a file written by esft and compares it with them

Both sides build the same tensors from the description below, so either writer must produce a
file the other reader decodes to identical bytes.
"""
import sys

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

METADATA = {"format": "pt", "written_by": "interop-test"}


def expected():
    return {
        "model.layers.0.mlp.gate.weight": torch.arange(12, dtype=torch.float32).reshape(3, 4) * 0.5 - 1.0,
        "ids": torch.tensor([1, -2, 3, -4], dtype=torch.int64),
        "half_precision": torch.tensor([0.0, 1.0, -2.5, 3.25, 1024.0], dtype=torch.bfloat16),
        "bytes": torch.arange(7, dtype=torch.uint8),
        "mask": torch.tensor([True, False, True]),
        "scalar": torch.tensor(7.0, dtype=torch.float64),
        "empty": torch.zeros(0, 3, dtype=torch.float32),
    }


def main():
    mode, path = sys.argv[1], sys.argv[2]
    want = expected()
    if mode == "write":
        save_file(want, path, metadata=METADATA)
        return
    assert mode == "check", mode
    got = load_file(path)
    assert sorted(got) == sorted(want), f"tensor names {sorted(got)} != {sorted(want)}"
    for name, w in want.items():
        g = got[name]
        assert g.dtype == w.dtype, f"{name}: dtype {g.dtype} != {w.dtype}"
        assert tuple(g.shape) == tuple(w.shape), f"{name}: shape {tuple(g.shape)} != {tuple(w.shape)}"
        assert torch.equal(g, w), f"{name}: values differ: {g} != {w}"
    with safe_open(path, framework="pt") as f:
        assert f.metadata() == METADATA, f"metadata {f.metadata()} != {METADATA}"
    print(f"ok: {path} decodes to the expected {len(want)} tensors")


if __name__ == "__main__":
    main()
