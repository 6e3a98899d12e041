"""Tiny random MoE checkpoints for tests, built with transformers: one registry over the families.

Usage: tiny_models.py --family F --config NAME --out DIR [--seed S] [--fused]
Each (family, config) exercises corners of that family: dense layers mixed in, shared experts on
and off, renormalisation, tied embeddings, GQA ratios, biases, sliding windows, clipping.
--fused saves transformers 5's fused expert tensors instead of per-expert keys.
A new family adds one entry to FAMILIES (and, if its router or experts are not the standard
`mlp.gate` / `mlp.experts.{gate_up,down}_proj`, a router hook and a gradient extractor in
family_reference.py).
"""
import argparse

import torch
import transformers as tf

COMMON = dict(vocab_size=128, hidden_size=32, max_position_embeddings=256, rms_norm_eps=1e-6,
              bos_token_id=1, eos_token_id=2)

FAMILIES = {
    "qwen3_moe": dict(
        cls=("Qwen3MoeConfig", "Qwen3MoeForCausalLM"),
        base=dict(intermediate_size=48, moe_intermediate_size=16, num_experts=8, num_experts_per_tok=2,
                  rope_theta=10000.0, pad_token_id=None),
        configs={
            # head_dim 16 != 32/4, GQA 2:1, one dense layer via mlp_only_layers, renormalised top-k
            "base": dict(num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                         mlp_only_layers=[1], norm_topk_prob=True),
            # raw top-k probabilities, tied embeddings, GQA 4:1, every second layer sparse
            "tied": dict(num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=1, head_dim=8,
                         decoder_sparse_step=2, norm_topk_prob=False, tie_word_embeddings=True),
            # plain multi-head attention with biases, top-3 of 6 experts
            "mha": dict(num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2, head_dim=16,
                        num_experts=6, num_experts_per_tok=3, attention_bias=True, norm_topk_prob=True),
        }),
    "qwen2_moe": dict(
        cls=("Qwen2MoeConfig", "Qwen2MoeForCausalLM"),
        base=dict(intermediate_size=48, moe_intermediate_size=16, shared_expert_intermediate_size=24,
                  num_experts=8, num_experts_per_tok=2, rope_theta=10000.0, pad_token_id=None),
        configs={
            # shared expert with its sigmoid gate, q/k/v biases, raw top-k weights, a dense layer
            "base": dict(num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=4, mlp_only_layers=[1],
                         norm_topk_prob=False),
            # every second layer sparse, GQA 4:1, renormalised, tied embeddings, no q/k/v bias
            "sparse_step": dict(num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=1,
                                decoder_sparse_step=2, norm_topk_prob=True, tie_word_embeddings=True,
                                qkv_bias=False),
            # sliding-window attention on the first layers (max_window_layers), top-3 of 6
            "sliding": dict(num_hidden_layers=3, num_attention_heads=2, num_key_value_heads=1, num_experts=6,
                            num_experts_per_tok=3, use_sliding_window=True, sliding_window=4, max_window_layers=2),
        }),
    "mixtral": dict(
        cls=("MixtralConfig", "MixtralForCausalLM"),
        base=dict(intermediate_size=16, num_local_experts=8, num_experts_per_tok=2, rope_theta=1e6, pad_token_id=None),
        configs={
            # GQA 2:1, top-2 of 8, always renormalised
            "base": dict(num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2),
            # sliding window on every layer, head_dim != hidden/heads, top-3 of 6, tied embeddings
            "sliding": dict(num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=1, head_dim=12,
                            num_local_experts=6, num_experts_per_tok=3, sliding_window=5, tie_word_embeddings=True),
        }),
    "olmoe": dict(
        cls=("OlmoeConfig", "OlmoeForCausalLM"),
        base=dict(intermediate_size=16, num_experts=8, num_experts_per_tok=2, rope_theta=10000.0, pad_token_id=1,
                  eos_token_id=2),
        configs={
            # q/k RMSNorm over the full projection width, raw top-k weights, pad_token_id 1 (no gradient)
            "base": dict(num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4, norm_topk_prob=False),
            # GQA 2:1 (k_norm over the kv width), clip_qkv active, renormalised top-3, attention biases
            "clip": dict(num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2, num_experts_per_tok=3,
                         clip_qkv=0.15, norm_topk_prob=True, attention_bias=True),
        }),
}


def make_config(family, name):
    fam = FAMILIES[family]
    kw = dict(COMMON)
    kw.update(fam["base"])
    kw.update(fam["configs"][name])
    return getattr(tf, fam["cls"][0])(**kw)


def build(family, name, seed):
    torch.manual_seed(seed)
    model = getattr(tf, FAMILIES[family]["cls"][1])(make_config(family, name)).float().eval()
    # Default init leaves norms at 1 and routers near-uniform; perturb everything so parity
    # tests see non-trivial norms, sharp routing and distinct experts.
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "norm" in n:
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            elif n.endswith("mlp.gate.weight") or n.endswith("mlp.router.weight"):
                p.normal_(0, 0.5)
            else:
                p.normal_(0, 0.08)
    return model


def save(model, out, fused=False):
    model.save_pretrained(out, save_original_format=not fused)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--family", default="qwen3_moe", choices=sorted(FAMILIES))
    ap.add_argument("--config", default="base")
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fused", action="store_true")
    a = ap.parse_args()
    save(build(a.family, a.config, a.seed), a.out, a.fused)


if __name__ == "__main__":
    main()
