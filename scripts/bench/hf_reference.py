"""HF transformers side of scripts/bench/bench_train.sh: builds a random Qwen3-MoE with
Qwen3-30B-A3B shapes (fewer layers), saves it, writes pre-tokenized data and an expert config,
and measures transformers' forward (scoring-style, one sample per forward) and ESFT-style
training throughput on the same GPU.

Usage: hf_reference.py --out DIR --layers 4 --seq 2048 --batch 4 --steps 10
Writes DIR/model, DIR/data.jsonl, DIR/expert_config.json, DIR/hf.json.
"""
import argparse
import json
import os
import time

import torch
from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--seq", type=int, default=2048)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--experts-per-layer", type=int, default=6)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    torch.manual_seed(0)
    cfg = Qwen3MoeConfig(vocab_size=151936, hidden_size=2048, intermediate_size=6144, moe_intermediate_size=768,
                         num_hidden_layers=a.layers, num_attention_heads=32, num_key_value_heads=4, head_dim=128,
                         num_experts=128, num_experts_per_tok=8, norm_topk_prob=True, rope_theta=1e6,
                         max_position_embeddings=40960, tie_word_embeddings=False)
    with torch.device("cuda"):
        model = Qwen3MoeForCausalLM(cfg).to(torch.bfloat16)
    model.save_pretrained(os.path.join(a.out, "model"))
    g = torch.Generator().manual_seed(1)
    n_rows = a.batch * (a.steps + 2)
    rows = torch.randint(0, cfg.vocab_size, (n_rows, a.seq), generator=g)
    with open(os.path.join(a.out, "data.jsonl"), "w") as f:
        for r in rows.tolist():
            f.write(json.dumps({"input_ids": r}) + "\n")
    experts = {str(l): list(range(7 * l % 128, 7 * l % 128 + a.experts_per_layer)) for l in range(a.layers)}
    with open(os.path.join(a.out, "expert_config.json"), "w") as f:
        json.dump({"experts": experts, "shared_experts": False, "non_expert_modules": False}, f)

    try:
        model.set_experts_implementation("grouped_mm")
    except Exception:  # older API: config attribute
        model.config._experts_implementation = "grouped_mm"
    res = {"experts_implementation": getattr(model.config, "_experts_implementation", None)}
    ids = rows.cuda()

    # Forward, one sample per pass (what scoring does).
    model.eval()
    with torch.no_grad():
        for i in range(2):
            model(input_ids=ids[i:i + 1])
        torch.cuda.synchronize()
        t = time.perf_counter()
        n = 0
        for i in range(2, 2 + 2 * a.batch):
            model(input_ids=ids[i:i + 1])
            n += a.seq
        torch.cuda.synchronize()
        res["forward_tok_s"] = n / (time.perf_counter() - t)

    # ESFT-style training: experts' weights trainable (fused banks: all experts of a layer), rest frozen.
    model.train()
    for name, p in model.named_parameters():
        p.requires_grad_(".mlp.experts." in name)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
    torch.cuda.reset_peak_memory_stats()
    times = []
    for s in range(a.steps):
        b = ids[s * a.batch:(s + 1) * a.batch]
        torch.cuda.synchronize()
        t = time.perf_counter()
        out = model(input_ids=b, labels=b)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    steady = sorted(times[2:])[len(times[2:]) // 2]
    res["train_tok_s"] = a.batch * a.seq / steady
    res["train_peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
    with open(os.path.join(a.out, "hf.json"), "w") as f:
        json.dump(res, f, indent=2)
    print(json.dumps(res))


if __name__ == "__main__":
    main()
