"""Tiny random MoE checkpoints for tests, built with transformers: one registry over the families.

Usage: tiny_models.py --family F --config NAME --out DIR [--seed S] [--fused | --mxfp4] [--vocab V]
Each (family, config) exercises corners of that family: dense layers mixed in, shared experts on
and off, renormalisation, tied embeddings, GQA ratios, biases, sliding windows, clipping, MLA
with and without low-rank q, YaRN, rope styles, partial rotary, router groups, sinks.
--fused saves transformers 5's fused expert tensors instead of per-expert keys.
--mxfp4 (gpt_oss) saves the experts as MXFP4 blocks and scales (random, in place of the model's
expert weights), as the released GPT-OSS checkpoints are; load_reference() reads such a
checkpoint back through transformers' own MXFP4 dequantisation. --vocab sizes the vocabulary
for a real tokenizer's ids (default 128).
A new family adds one entry to FAMILIES (and, if its router or experts are not the standard
`mlp.gate` / `mlp.experts.{gate_up,down}_proj`, a router hook and a gradient extractor in
family_reference.py).
"""
import argparse
import json
import os

import torch
import transformers as tf
from safetensors.torch import load_file, save_file

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
            # GQA 2:1 (k_norm over the kv width), clip_qkv active, renormalised top-3, attention biases.
            # The clip cuts a few percent of the normed q/k (as real clips cut outliers): one that cut
            # most of them (0.15 cut 88%) left the gradient to the few values a bf16 rounding away
            # from the clip, and bf16 runs of transformers and esft alike swung with each draw.
            "clip": dict(num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2, num_experts_per_tok=3,
                         clip_qkv=2.0, norm_topk_prob=True, attention_bias=True),
        }),
    # DeepSeek-V2: MLA (kv_lora 16, q/k heads of 8 nope + 8 rope, v heads of 12), softmax router
    "deepseek_v2": dict(
        cls=("DeepseekV2Config", "DeepseekV2ForCausalLM"),
        base=dict(intermediate_size=48, moe_intermediate_size=16, n_routed_experts=8, num_experts_per_tok=3,
                  num_attention_heads=4, kv_lora_rank=16, qk_nope_head_dim=8, qk_rope_head_dim=8, v_head_dim=12,
                  pad_token_id=None),
        configs={
            # V2-Lite's shape: plain q_proj (q_lora_rank null), a dense first layer, 2 shared experts,
            # greedy top-k, YaRN with mscale == mscale_all_dim (softmax scale x mscale^2)
            "lite": dict(num_hidden_layers=3, q_lora_rank=None, first_k_dense_replace=1, n_shared_experts=2,
                         topk_method="greedy", max_position_embeddings=640,
                         rope_parameters=dict(rope_type="yarn", rope_theta=10000.0, factor=40.0,
                                              original_max_position_embeddings=16, mscale=0.707,
                                              mscale_all_dim=0.707, beta_fast=32.0, beta_slow=1.0)),
            # V2's router: group_limited_greedy over 4 groups (best 2), routed scaling; low-rank q,
            # attention biases, no shared experts (zero-size tensors), no dense layer, YaRN whose
            # cos/sin carry an attention factor (mscale != mscale_all_dim)
            "groups": dict(num_hidden_layers=2, q_lora_rank=24, first_k_dense_replace=0, n_shared_experts=0,
                           topk_method="group_limited_greedy", n_group=4, topk_group=2, routed_scaling_factor=2.5,
                           attention_bias=True,
                           rope_parameters=dict(rope_type="yarn", rope_theta=10000.0, factor=4.0,
                                                original_max_position_embeddings=64, mscale=1.0, mscale_all_dim=0.8)),
            # two dense layers before two MoE layers, one shared expert, tied embeddings, default rope
            "dense_mixed": dict(num_hidden_layers=4, q_lora_rank=16, first_k_dense_replace=2, n_shared_experts=1,
                                tie_word_embeddings=True),
        }),
    # DeepSeek-V3: MLA with interleaved rope, sigmoid router with selection bias and groups;
    # checkpoints carry an MTP layer (num_nextn_predict_layers 1, see save())
    "deepseek_v3": dict(
        cls=("DeepseekV3Config", "DeepseekV3ForCausalLM"),
        base=dict(intermediate_size=48, moe_intermediate_size=16, n_routed_experts=8, num_experts_per_tok=3,
                  num_attention_heads=4, kv_lora_rank=16, qk_nope_head_dim=8, qk_rope_head_dim=8, v_head_dim=12,
                  pad_token_id=None),
        configs={
            # V3's shape: low-rank q, interleaved rope, best 2 of 4 groups, renormalised x 2.5,
            # a dense first layer, one shared expert, YaRN (mscale 1 / mscale_all_dim 1)
            "base": dict(num_hidden_layers=3, num_key_value_heads=4, q_lora_rank=24, first_k_dense_replace=1,
                         n_shared_experts=1, n_group=4, topk_group=2, norm_topk_prob=True, routed_scaling_factor=2.5,
                         rope_interleave=True, max_position_embeddings=640,
                         rope_parameters=dict(rope_type="yarn", rope_theta=10000.0, factor=40.0,
                                              original_max_position_embeddings=16, mscale=1.0, mscale_all_dim=1.0,
                                              beta_fast=32.0, beta_slow=1.0)),
            # plain q_proj, rope on halves (rope_interleave false), no groups, raw sigmoid weights,
            # 2 shared experts, attention biases, no dense layer, tied embeddings (num_key_value_heads
            # left at the class default 128, which MLA does not use)
            "plain": dict(num_hidden_layers=2, q_lora_rank=None, first_k_dense_replace=0, n_shared_experts=2,
                          n_group=1, topk_group=1, norm_topk_prob=False, routed_scaling_factor=1.0,
                          rope_interleave=False, attention_bias=True, tie_word_embeddings=True),
            # top-4 all from the single best of 2 groups (the other group at -inf), no shared experts
            "one_group": dict(num_hidden_layers=3, q_lora_rank=16, first_k_dense_replace=1, n_shared_experts=0,
                              num_experts_per_tok=4, n_group=2, topk_group=1, norm_topk_prob=True,
                              routed_scaling_factor=1.5),
        }),
    # GLM-4.5 MoE: partial rotary GQA attention, DeepSeek-V3's router; MTP layer in checkpoints
    "glm4_moe": dict(
        cls=("Glm4MoeConfig", "Glm4MoeForCausalLM"),
        base=dict(intermediate_size=48, moe_intermediate_size=16, n_routed_experts=8, num_experts_per_tok=3,
                  pad_token_id=None),
        configs={
            # GLM-4.5's shape: half of head_dim 16 rotated, q/k norms, q/k/v biases (no o bias),
            # GQA 2:1, a dense first layer, one shared expert, renormalised x 2.5
            "base": dict(num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                         partial_rotary_factor=0.5, use_qk_norm=True, attention_bias=True, first_k_dense_replace=1,
                         n_shared_experts=1, routed_scaling_factor=2.5, norm_topk_prob=True),
            # 6 of 8 channels rotated with YaRN, no q/k norm or bias, GQA 4:1, best 2 of 4 groups,
            # raw weights, two dense layers, no shared experts
            "groups": dict(num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=1, head_dim=8,
                           partial_rotary_factor=0.75, use_qk_norm=False, attention_bias=False,
                           first_k_dense_replace=2, n_shared_experts=0, n_group=4, topk_group=2, norm_topk_prob=False,
                           max_position_embeddings=256,
                           rope_parameters=dict(rope_type="yarn", rope_theta=10000.0, factor=4.0,
                                                original_max_position_embeddings=64)),
        }),
    "gpt_oss": dict(
        cls=("GptOssConfig", "GptOssForCausalLM"),
        # intermediate 32 and hidden 32: MXFP4 blocks are 32 values. YaRN with a non-integer
        # correction range (truncate false matters) and factor * original = max positions.
        base=dict(intermediate_size=32, num_local_experts=8, num_experts_per_tok=2, pad_token_id=None,
                  rope_parameters=dict(rope_type="yarn", factor=4.0, beta_fast=32.0, beta_slow=1.0, truncate=False,
                                       original_max_position_embeddings=64, rope_theta=150000.0)),
        configs={
            # default layer_types (sliding, full, sliding) with a window of 4 < the test rows' 11
            # tokens, GQA 2:1, head_dim 16 != 32/4, q/k/v/o biases, sinks, clamping active
            "base": dict(num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2, head_dim=16, sliding_window=4),
            # explicit layer_types (full first), MHA without attention biases, top-3 of 6, tied
            # embeddings, default RoPE
            "mha": dict(num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2, head_dim=8, sliding_window=3,
                        layer_types=["full_attention", "sliding_attention"], num_local_experts=6, num_experts_per_tok=3,
                        attention_bias=False, tie_word_embeddings=True,
                        rope_parameters=dict(rope_type="default", rope_theta=10000.0)),
        }),
}


def make_config(family, name, vocab=None):
    fam = FAMILIES[family]
    kw = dict(COMMON)
    kw.update(fam["base"])
    kw.update(fam["configs"][name])
    if vocab:
        kw["vocab_size"] = vocab
    return getattr(tf, fam["cls"][0])(**kw)


def build(family, name, seed, vocab=None):
    torch.manual_seed(seed)
    model = getattr(tf, FAMILIES[family]["cls"][1])(make_config(family, name, vocab)).float().eval()
    # Default init leaves norms at 1 and routers near-uniform; perturb everything so parity
    # tests see non-trivial norms, sharp routing and distinct experts.
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "norm" in n:
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            elif n.endswith("mlp.gate.weight") or n.endswith("mlp.router.weight"):
                p.normal_(0, 0.5)
            elif n.endswith("self_attn.sinks"):
                p.normal_(0, 1.0)  # sinks that take a visible share of the softmax
            elif n.endswith("experts.gate_up_proj") and family == "gpt_oss":
                # pre-activations of std ~2.3: some beyond +-7, so the SwiGLU clamps act on a few
                # tenths of a percent (0.6 clamped ~4%, and bf16 runs flipped clamp decisions
                # near 7, a bf16 step of 0.03, from draw to draw)
                p.normal_(0, 0.41)
            else:
                p.normal_(0, 0.08)
        # Sigmoid routers' selection bias (a buffer, zero at init): make it change the choice.
        for n, b in model.named_buffers():
            if n.endswith("e_score_correction_bias"):
                b.normal_(0, 0.2)
    return model


def add_mtp_layers(model, out):
    """Real DeepSeek-V3 / GLM-4.5 checkpoints carry num_nextn_predict_layers multi-token-prediction
    layers after the last layer, which transformers does not load: add such tensors."""
    cfg = model.config
    n_mtp = getattr(cfg, "num_nextn_predict_layers", 0) or 0
    path = os.path.join(out, "model.safetensors")
    if not n_mtp or not os.path.exists(path):
        return
    tensors = load_file(path)
    H, V, E = cfg.hidden_size, cfg.vocab_size, cfg.n_routed_experts
    g = torch.Generator().manual_seed(99)
    for j in range(n_mtp):
        p = f"model.layers.{cfg.num_hidden_layers + j}."
        for name, shape in [("enorm.weight", [H]), ("hnorm.weight", [H]), ("eh_proj.weight", [H, 2 * H]),
                            ("input_layernorm.weight", [H]), ("mlp.gate.weight", [E, H]),
                            ("shared_head.norm.weight", [H]), ("shared_head.head.weight", [V, H])]:
            tensors[p + name] = torch.randn(shape, generator=g)
    save_file(tensors, path, metadata={"format": "pt"})


# MXFP4 scale bytes (2^(s-127)) of the random experts: gate_up large enough to clamp, down small.
MXFP4_SCALES = {"gate_up_proj": (123, 126), "down_proj": (119, 122)}


def save_mxfp4(out, seed):
    """The experts as MXFP4 (uint8 blocks [E, R, C/32, 16] and E8M0 scales [E, R, C/32], rows R =
    2I interleaved gate/up or H, C the input dim), in place of the float tensors."""
    path = os.path.join(out, "model.safetensors")
    tensors = load_file(path)
    g = torch.Generator().manual_seed(1000 + seed)
    for name in [n for n in tensors if n.endswith(("experts.gate_up_proj", "experts.down_proj"))]:
        rows_in = tensors.pop(name).transpose(1, 2).shape  # [E, R, C]
        lo, hi = MXFP4_SCALES[name.rsplit(".", 1)[1]]
        tensors[name + "_blocks"] = torch.randint(0, 256, (*rows_in[:2], rows_in[2] // 32, 16), generator=g,
                                                  dtype=torch.uint8)
        tensors[name + "_scales"] = torch.randint(lo, hi, (*rows_in[:2], rows_in[2] // 32), generator=g,
                                                  dtype=torch.uint8)
    save_file(tensors, path, metadata={"format": "pt"})
    cfg_path = os.path.join(out, "config.json")
    cfg = json.load(open(cfg_path))
    cfg["quantization_config"] = {"quant_method": "mxfp4", "modules_to_not_convert": [
        "model.layers.*.self_attn", "model.layers.*.mlp.router", "model.embed_tokens", "lm_head"]}
    json.dump(cfg, open(cfg_path, "w"), indent=2)


def save(model, out, fused=False, mxfp4=False, seed=0):
    model.save_pretrained(out, save_original_format=not fused)
    add_mtp_layers(model, out)
    if mxfp4:
        save_mxfp4(out, seed)


def load_reference(family, out):
    """The saved checkpoint in transformers, fp32 (MXFP4 experts dequantized by transformers)."""
    cls = getattr(tf, FAMILIES[family]["cls"][1])
    cfg = json.load(open(os.path.join(out, "config.json")))
    kw = {}
    if cfg.get("quantization_config", {}).get("quant_method") == "mxfp4":
        kw["quantization_config"] = tf.Mxfp4Config(dequantize=True)
    return cls.from_pretrained(out, dtype=torch.float32, **kw).float().eval()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--family", default="qwen3_moe", choices=sorted(FAMILIES))
    ap.add_argument("--config", default="base")
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fused", action="store_true")
    ap.add_argument("--mxfp4", action="store_true")
    ap.add_argument("--vocab", type=int)
    a = ap.parse_args()
    save(build(a.family, a.config, a.seed, a.vocab), a.out, a.fused, a.mxfp4, a.seed)


if __name__ == "__main__":
    main()
