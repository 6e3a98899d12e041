"""Tiny random Qwen3-MoE checkpoints for tests, built and saved with transformers.

Usage: tiny_models.py --config NAME --out DIR [--seed S]
Each config exercises a different corner: dense layers mixed in, norm_topk_prob on/off, tied
embeddings, GQA ratios, head_dim != hidden/heads, attention bias.
"""
import argparse

import torch
from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM

CONFIGS = {
    # head_dim 16 != 32/4, GQA 2:1, one dense layer via mlp_only_layers, renormalised top-k
    "base": dict(num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                 mlp_only_layers=[1], norm_topk_prob=True),
    # raw top-k probabilities, tied embeddings, GQA 4:1, every second layer sparse
    "tied": dict(num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=1, head_dim=8,
                 decoder_sparse_step=2, norm_topk_prob=False, tie_word_embeddings=True),
    # plain multi-head attention with biases, top-3 of 6 experts
    "mha": dict(num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2, head_dim=16,
                num_experts=6, num_experts_per_tok=3, attention_bias=True, norm_topk_prob=True),
}


def make_config(name):
    kw = dict(vocab_size=128, hidden_size=32, intermediate_size=48, moe_intermediate_size=16,
              num_experts=8, num_experts_per_tok=2, max_position_embeddings=256, rope_theta=10000.0,
              rms_norm_eps=1e-6, pad_token_id=None, bos_token_id=1, eos_token_id=2)
    kw.update(CONFIGS[name])
    return Qwen3MoeConfig(**kw)


def build(name, seed):
    torch.manual_seed(seed)
    cfg = make_config(name)
    model = Qwen3MoeForCausalLM(cfg).float().eval()
    # Default init leaves norms at 1 and routers near-uniform; perturb everything so parity
    # tests see non-trivial norms, sharp routing and distinct experts.
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "norm" in n:
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            elif "mlp.gate.weight" in n:
                p.normal_(0, 0.5)
            else:
                p.normal_(0, 0.08)
    return model


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="base", choices=sorted(CONFIGS))
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    build(a.config, a.seed).save_pretrained(a.out)


if __name__ == "__main__":
    main()
