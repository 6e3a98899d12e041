"""A block-FP8 checkpoint as DeepSeek-V3 ships it, and its dequantization, from a tiny checkpoint.

Usage: fp8_checkpoint.py SRC OUT_FP8 OUT_DEQUANT [--block R C]
OUT_FP8: every 2-D linear weight (not embeddings, lm_head, norms or routers) as float8_e4m3fn with
  NAME_scale_inv [ceil(rows/R), ceil(cols/C)] fp32 (the last blocks may be partial), everything else
  bf16 except e_score_correction_bias (fp32); config.json with quantization_config fp8.
OUT_DEQUANT: the same checkpoint dequantized here, W = float(W8) * scale_inv per block, rounded to
  bf16 (DeepSeek's fp8_cast_bf16); config.json without quantization_config.
"""
import argparse
import json
import os
import shutil

import torch
from safetensors.torch import load_file, save_file

FP8_MAX = 448.0


def quantized(name, t):
    if t.dim() != 2 or not name.endswith(".weight"):
        return False
    return not any(s in name for s in ("embed_tokens", "lm_head", "norm", "mlp.gate.weight", "shared_head.head"))


def block_view(x, rows, cols):
    """x [R, C] zero-padded to whole blocks, viewed as [R/rows, rows, C/cols, cols]."""
    R, C = x.shape
    gr, gc = -(-R // rows), -(-C // cols)
    padded = torch.zeros(gr * rows, gc * cols, dtype=x.dtype)
    padded[:R, :C] = x
    return padded.view(gr, rows, gc, cols), (gr, gc)


def expand(scale, rows, cols, R, C):
    return scale.repeat_interleave(rows, 0).repeat_interleave(cols, 1)[:R, :C]


def quantize(w, rows, cols):
    blocks, _ = block_view(w.float(), rows, cols)
    amax = blocks.abs().amax(dim=(1, 3))
    scale = torch.where(amax > 0, amax / FP8_MAX, torch.ones_like(amax))
    w8 = (w.float() / expand(scale, rows, cols, *w.shape)).to(torch.float8_e4m3fn)
    return w8, scale.float().contiguous()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("src")
    ap.add_argument("out_fp8")
    ap.add_argument("out_dequant")
    ap.add_argument("--block", type=int, nargs=2, default=[128, 128])
    a = ap.parse_args()
    rows, cols = a.block
    tensors = load_file(os.path.join(a.src, "model.safetensors"))
    fp8, deq = {}, {}
    for name, t in tensors.items():
        if quantized(name, t):
            w8, s = quantize(t, rows, cols)
            fp8[name], fp8[name + "_scale_inv"] = w8, s
            deq[name] = (w8.float() * expand(s, rows, cols, *t.shape)).to(torch.bfloat16)
        else:
            keep = t if name.endswith("e_score_correction_bias") or not t.is_floating_point() else t.bfloat16()
            fp8[name] = deq[name] = keep.contiguous()
    with open(os.path.join(a.src, "config.json")) as f:
        cfg = json.load(f)
    cfg["dtype"] = "bfloat16"
    for out, ts, quant in ((a.out_fp8, fp8, True), (a.out_dequant, deq, False)):
        os.makedirs(out, exist_ok=True)
        save_file(ts, os.path.join(out, "model.safetensors"), metadata={"format": "pt"})
        c = dict(cfg)
        if quant:
            c["quantization_config"] = {"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8",
                                        "weight_block_size": [rows, cols]}
        with open(os.path.join(out, "config.json"), "w") as f:
            json.dump(c, f, indent=2)
        if os.path.exists(os.path.join(a.src, "generation_config.json")):
            shutil.copy(os.path.join(a.src, "generation_config.json"), out)


if __name__ == "__main__":
    main()
