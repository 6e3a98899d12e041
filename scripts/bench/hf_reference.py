"""transformers' side of the side-by-side benchmark (scripts/bench/compare.sh): a random
Qwen3-MoE of a given depth with Qwen3-30B-A3B shapes (or DeepSeek-V2-Lite's, --shape) built in
memory in bf16 on the GPU, with transformers' grouped_mm experts; it times a plain forward at
batch 1 and batch B of S tokens (what scoring needs) and an ESFT-style training step (routed
experts trainable, everything else frozen, AdamW, clipping) at batch B. Prints one JSON line.

Usage: hf_reference.py --layers 4 [--seq 2048] [--batch 4] [--steps 5] [--shape deepseek-v2-lite]
"""
import argparse
import json
import os
import sys
import time

import torch
from transformers import AutoModelForCausalLM, DeepseekV2Config, Qwen3MoeConfig


def timed(fn, steps, warmup=2):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(steps):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t) / steps


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--seq", type=int, default=2048)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--shape", choices=["qwen3-30b-a3b", "deepseek-v2-lite"], default="qwen3-30b-a3b")
    a = ap.parse_args()
    torch.manual_seed(0)
    if a.shape == "deepseek-v2-lite":  # the released config.json, as scripts/gpu/random_checkpoint.py writes it
        sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "gpu"))
        from random_checkpoint import V2_LITE
        keys = {k: v for k, v in V2_LITE.items() if k not in ("architectures", "model_type", "torch_dtype")}
        cfg = DeepseekV2Config(**dict(keys, num_hidden_layers=a.layers))
    else:
        cfg = Qwen3MoeConfig(vocab_size=151936, hidden_size=2048, intermediate_size=6144, moe_intermediate_size=768,
                             num_hidden_layers=a.layers, num_attention_heads=32, num_key_value_heads=4, head_dim=128,
                             num_experts=128, num_experts_per_tok=8, norm_topk_prob=True, rope_theta=1e6,
                             max_position_embeddings=40960, tie_word_embeddings=False)
    torch.set_default_dtype(torch.bfloat16)
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(cfg)
    try:
        model.set_experts_implementation("grouped_mm")
    except Exception as e:  # noqa: BLE001 - a family without it keeps transformers' default
        print(f"grouped_mm unavailable: {e}", file=sys.stderr)
    res = {"shape": a.shape, "layers": a.layers, "experts_implementation": getattr(model.config, "_experts_implementation", None)}
    ids = torch.randint(0, cfg.vocab_size, (a.batch, a.seq), device="cuda")

    model.eval()
    with torch.no_grad():
        for b in (1, a.batch):
            try:
                dt = timed(lambda: model(input_ids=ids[:b]), a.steps)
                res[f"forward_b{b}_tok_s"] = b * a.seq / dt
            except torch.OutOfMemoryError:
                res[f"forward_b{b}_tok_s"] = "oom"
            torch.cuda.empty_cache()

    model.train()
    for name, p in model.named_parameters():
        p.requires_grad_(".mlp.experts." in name)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)

    def step():
        out = model(input_ids=ids, labels=ids)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    torch.cuda.reset_peak_memory_stats()
    try:
        res["train_tok_s"] = a.batch * a.seq / timed(step, a.steps)
        res["train_peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
    except torch.OutOfMemoryError:
        res["train_tok_s"] = "oom"
        res["train_peak_gib"] = "oom"
    print(json.dumps(res), flush=True)


if __name__ == "__main__":
    main()
