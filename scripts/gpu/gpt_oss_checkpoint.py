"""Random GPT-OSS checkpoints in the released layout, written fast, for scripts/gpu/gpt_oss.sh.

Usage: gpt_oss_checkpoint.py --shape 20b|120b --layers L --out DIR [--vocab V] [--device cuda]
                             [--subset L0:DIR0 ...] [--seq 2048 --rows N --data FILE]

The experts are MXFP4 (uint8 *_blocks [E, R, C/32, 16] and E8M0 *_scales [E, R, C/32]) with
scales around 2^-7 (weights of std ~0.02), everything else bf16, as openai/gpt-oss-* ship.
One shard per layer plus one for embeddings, final norm and lm_head, with
model.safetensors.index.json. --subset L0:DIR0 writes DIR0, a checkpoint of the first L0 layers
that links to DIR's shards (no extra disk): memory per layer comes from comparing the two.
--data writes N rows of SEQ random token ids as {"input_ids": [...]} jsonl.
"""
import argparse
import json
import math
import os

import torch
from safetensors.torch import save_file

SHAPES = {  # openai/gpt-oss-20b and -120b config.json
    "20b": dict(num_hidden_layers=24, num_local_experts=32),
    "120b": dict(num_hidden_layers=36, num_local_experts=128),
}
COMMON = dict(architectures=["GptOssForCausalLM"], model_type="gpt_oss", hidden_size=2880, intermediate_size=2880,
              head_dim=64, num_attention_heads=64, num_key_value_heads=8, num_experts_per_tok=4, sliding_window=128,
              attention_bias=True, rms_norm_eps=1e-5, max_position_embeddings=131072, rope_theta=150000,
              rope_scaling=dict(beta_fast=32.0, beta_slow=1.0, factor=32.0, original_max_position_embeddings=4096,
                                rope_type="yarn", truncate=False),
              swiglu_limit=7.0, tie_word_embeddings=False, router_aux_loss_coef=0.9, output_router_logits=False,
              hidden_act="silu", initializer_range=0.02, pad_token_id=199999, eos_token_id=200002,
              torch_dtype="bfloat16", use_cache=False,
              quantization_config=dict(quant_method="mxfp4", modules_to_not_convert=[
                  "model.layers.*.self_attn", "model.layers.*.mlp.router", "model.embed_tokens", "lm_head"]))


def config(shape, layers, vocab):
    c = dict(COMMON, **SHAPES[shape])
    c.update(vocab_size=vocab, num_hidden_layers=layers)
    if vocab <= c["eos_token_id"]:  # a smaller vocabulary than the real one has no such ids
        c.update(pad_token_id=None, eos_token_id=None)
    c["layer_types"] = ["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(layers)]
    return c


def layer_tensors(c, i, dev, g):
    H, I, E = c["hidden_size"], c["intermediate_size"], c["num_local_experts"]
    Nq, Nkv = c["num_attention_heads"] * c["head_dim"], c["num_key_value_heads"] * c["head_dim"]
    p = f"model.layers.{i}."
    bf = dict(device=dev, dtype=torch.bfloat16)
    rnd = lambda *s: torch.randn(*s, generator=g, **bf) * 0.02  # noqa: E731
    t = {p + "input_layernorm.weight": torch.ones(H, **bf), p + "post_attention_layernorm.weight": torch.ones(H, **bf),
         p + "self_attn.sinks": torch.randn(c["num_attention_heads"], generator=g, **bf),
         p + "mlp.router.weight": rnd(E, H), p + "mlp.router.bias": rnd(E),
         p + "mlp.experts.gate_up_proj_bias": rnd(E, 2 * I), p + "mlp.experts.down_proj_bias": rnd(E, H)}
    for name, (o, n) in {"q_proj": (Nq, H), "k_proj": (Nkv, H), "v_proj": (Nkv, H), "o_proj": (H, Nq)}.items():
        t[p + f"self_attn.{name}.weight"] = rnd(o, n)
        t[p + f"self_attn.{name}.bias"] = rnd(o)
    for name, (rows, cols) in {"gate_up_proj": (2 * I, H), "down_proj": (H, I)}.items():
        u8 = dict(device=dev, dtype=torch.uint8, generator=g)
        t[p + f"mlp.experts.{name}_blocks"] = torch.randint(0, 256, (E, rows, cols // 32, 16), **u8)
        t[p + f"mlp.experts.{name}_scales"] = torch.randint(119, 122, (E, rows, cols // 32), **u8)
    return {k: v.cpu() for k, v in t.items()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", choices=sorted(SHAPES), required=True)
    ap.add_argument("--layers", type=int, required=True)
    ap.add_argument("--vocab", type=int, default=201088)
    ap.add_argument("--out", required=True)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--subset", action="append", default=[], help="L0:DIR0")
    ap.add_argument("--data")
    ap.add_argument("--rows", type=int, default=0)
    ap.add_argument("--seq", type=int, default=2048)
    a = ap.parse_args()
    c = config(a.shape, a.layers, a.vocab)
    os.makedirs(a.out, exist_ok=True)
    g = torch.Generator(device=a.device).manual_seed(0)
    n = a.layers + 1
    shard = lambda k: f"model-{k + 1:05d}-of-{n:05d}.safetensors"  # noqa: E731
    weight_map, sizes = {}, []
    for i in range(a.layers):
        t = layer_tensors(c, i, a.device, g)
        save_file(t, os.path.join(a.out, shard(i)), metadata={"format": "pt"})
        weight_map.update({k: shard(i) for k in t})
        sizes.append(sum(v.numel() * v.element_size() for v in t.values()))
    H, V = c["hidden_size"], c["vocab_size"]
    bf = dict(device=a.device, dtype=torch.bfloat16)
    rest = {"model.embed_tokens.weight": torch.randn(V, H, generator=g, **bf) * 0.02,
            "lm_head.weight": torch.randn(V, H, generator=g, **bf) * 0.02, "model.norm.weight": torch.ones(H, **bf)}
    rest = {k: v.cpu() for k, v in rest.items()}
    save_file(rest, os.path.join(a.out, shard(a.layers)), metadata={"format": "pt"})
    weight_map.update({k: shard(a.layers) for k in rest})

    def write_dir(d, layers):
        cfg = config(a.shape, layers, a.vocab)
        wm = {k: v for k, v in weight_map.items() if not k.startswith("model.layers.")
              or int(k.split(".")[2]) < layers}
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(cfg, f, indent=2)
        with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {}, "weight_map": wm}, f, indent=2)

    write_dir(a.out, a.layers)
    for s in a.subset:
        l0, d = s.split(":", 1)
        os.makedirs(d, exist_ok=True)
        for f in set(v for k, v in weight_map.items() if not k.startswith("model.layers.") or int(k.split(".")[2]) < int(l0)):
            dst = os.path.join(d, f)
            if not os.path.exists(dst):
                os.symlink(os.path.abspath(os.path.join(a.out, f)), dst)
        write_dir(d, int(l0))
    if a.data:
        g2 = torch.Generator().manual_seed(1)
        with open(a.data, "w") as f:
            for r in torch.randint(0, min(V, 199998), (a.rows, a.seq), generator=g2).tolist():
                f.write(json.dumps({"input_ids": r}) + "\n")
    per_layer = sum(sizes) / max(1, len(sizes))
    print(json.dumps({"dir": a.out, "layers": a.layers, "bytes_per_layer": per_layer,
                      "gib_total": (sum(sizes) + sum(v.numel() * v.element_size() for v in rest.values())) / 2**30,
                      "bytes_per_layer_gib": per_layer / 2**30}))


if __name__ == "__main__":
    main()
