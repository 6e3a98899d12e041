"""A random DeepSeek-V2 checkpoint at a real shape, made quickly on the GPU and written as bf16
safetensors shards with model.safetensors.index.json (per-expert keys, as the released
checkpoints). The default config is DeepSeek-V2-Lite's config.json as released (the ESFT paper's
model); --vocab shrinks the vocabulary.

Usage: random_checkpoint.py --out DIR [--vocab N] [--layers N] [--shard-gb 5] [--seed 0]
(--layers: fewer decoder layers, for a quick check of the script on a CPU)
Values: normal(0, 0.02), norms 1. Skips the work when DIR already holds this exact config.
"""
import argparse
import json
import os

import torch
from safetensors.torch import save_file

# deepseek-ai/DeepSeek-V2-Lite config.json (the keys that shape the model, v4 style as released)
V2_LITE = {
    "architectures": ["DeepseekV2ForCausalLM"],
    "model_type": "deepseek_v2",
    "attention_bias": False,
    "attention_dropout": 0.0,
    "aux_loss_alpha": 0.001,
    "bos_token_id": 100000,
    "eos_token_id": 100001,
    "first_k_dense_replace": 1,
    "hidden_act": "silu",
    "hidden_size": 2048,
    "initializer_range": 0.02,
    "intermediate_size": 10944,
    "kv_lora_rank": 512,
    "max_position_embeddings": 163840,
    "moe_intermediate_size": 1408,
    "moe_layer_freq": 1,
    "n_group": 1,
    "n_routed_experts": 64,
    "n_shared_experts": 2,
    "norm_topk_prob": False,
    "num_attention_heads": 16,
    "num_experts_per_tok": 6,
    "num_hidden_layers": 27,
    "num_key_value_heads": 16,
    "q_lora_rank": None,
    "qk_nope_head_dim": 128,
    "qk_rope_head_dim": 64,
    "rms_norm_eps": 1e-06,
    "rope_scaling": {"beta_fast": 32, "beta_slow": 1, "factor": 40, "mscale": 0.707, "mscale_all_dim": 0.707,
                     "original_max_position_embeddings": 4096, "type": "yarn"},
    "rope_theta": 10000,
    "routed_scaling_factor": 1.0,
    "scoring_func": "softmax",
    "seq_aux": True,
    "tie_word_embeddings": False,
    "topk_group": 1,
    "topk_method": "greedy",
    "torch_dtype": "bfloat16",
    "use_cache": True,
    "v_head_dim": 128,
    "vocab_size": 102400,
}


def tensor_shapes(c):
    """(name, shape) of every tensor of a DeepSeek-V2 checkpoint with config c."""
    H, V, N = c["hidden_size"], c["vocab_size"], c["num_attention_heads"]
    nope, rope, vd, kv, ql = c["qk_nope_head_dim"], c["qk_rope_head_dim"], c["v_head_dim"], c["kv_lora_rank"], c["q_lora_rank"]
    E, I, Id = c["n_routed_experts"], c["moe_intermediate_size"], c["intermediate_size"]
    out = [("model.embed_tokens.weight", [V, H])]
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        out += [(p + "input_layernorm.weight", [H]), (p + "post_attention_layernorm.weight", [H])]
        a = p + "self_attn."
        if ql is None:
            out.append((a + "q_proj.weight", [N * (nope + rope), H]))
        else:
            out += [(a + "q_a_proj.weight", [ql, H]), (a + "q_a_layernorm.weight", [ql]),
                    (a + "q_b_proj.weight", [N * (nope + rope), ql])]
        out += [(a + "kv_a_proj_with_mqa.weight", [kv + rope, H]), (a + "kv_a_layernorm.weight", [kv]),
                (a + "kv_b_proj.weight", [N * (nope + vd), kv]), (a + "o_proj.weight", [H, N * vd])]
        m = p + "mlp."
        mlps = []
        if i < c["first_k_dense_replace"]:
            mlps.append((m, Id))
        else:
            out.append((m + "gate.weight", [E, H]))
            mlps += [(f"{m}experts.{e}.", I) for e in range(E)]
            mlps.append((m + "shared_experts.", I * c["n_shared_experts"]))
        for q, inter in mlps:
            out += [(q + "gate_proj.weight", [inter, H]), (q + "up_proj.weight", [inter, H]),
                    (q + "down_proj.weight", [H, inter])]
    out += [("model.norm.weight", [H]), ("lm_head.weight", [V, H])]
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--vocab", type=int, default=V2_LITE["vocab_size"])
    ap.add_argument("--layers", type=int, default=V2_LITE["num_hidden_layers"])
    ap.add_argument("--shard-gb", type=float, default=5.0)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    cfg = dict(V2_LITE, vocab_size=a.vocab, num_hidden_layers=a.layers)
    cfg_path = os.path.join(a.out, "config.json")
    if os.path.exists(cfg_path) and os.path.exists(os.path.join(a.out, "model.safetensors.index.json")):
        with open(cfg_path) as f:
            if json.load(f) == cfg:
                print(f"{a.out}: already holds this checkpoint")
                return
    os.makedirs(a.out, exist_ok=True)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    g = torch.Generator(device=dev).manual_seed(a.seed)
    shapes = tensor_shapes(cfg)
    limit = int(a.shard_gb * 1e9)
    shards, cur, size = [], {}, 0
    for name, shape in shapes:
        n = 2 * torch.Size(shape).numel()
        if cur and size + n > limit:
            shards.append(cur)
            cur, size = {}, 0
        cur[name] = shape
        size += n
    shards.append(cur)
    weight_map, total = {}, 0
    for k, shard in enumerate(shards):
        fname = f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors"
        tensors = {}
        for name, shape in shard.items():
            if "norm" in name:
                t = torch.ones(shape, dtype=torch.bfloat16, device=dev)
            else:
                t = torch.randn(shape, generator=g, device=dev, dtype=torch.float32).mul_(0.02).to(torch.bfloat16)
            tensors[name] = t.cpu()
            weight_map[name] = fname
            total += 2 * t.numel()
        save_file(tensors, os.path.join(a.out, fname), metadata={"format": "pt"})
        print(f"wrote {fname} ({len(tensors)} tensors)", flush=True)
    with open(os.path.join(a.out, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=1)
    with open(cfg_path, "w") as f:
        json.dump(cfg, f, indent=2)
    print(f"{a.out}: {len(shapes)} tensors, {total / 1e9:.1f} GB bf16 in {len(shards)} shards")


if __name__ == "__main__":
    main()
