"""Reference activations and gradients from transformers for the family parity table.

Usage: family_reference.py --family F --config NAME --out DIR [--fused | --mxfp4] [--device D] [--dtype bf16]
Builds the tiny (family, config) model of tiny_models.py, writes DIR/model (save_pretrained) and
DIR/reference.safetensors:
  input_ids, labels, logits, loss; aux_loss and loss_with_aux (families with a router aux loss);
  ids.{L} / weights.{L}: every MoE layer's top-k expert ids and the weights that multiply the
    expert outputs (router forward hooks);
  grad.{L}.{e}.{gate,up,down}: gradients of chosen routed experts in per-expert layout
    ([I,H], [I,H], [H,I]), for the experts listed in DIR/experts.json; with expert biases
    (gpt_oss) also grad.{L}.{e}.{gate_bias,up_bias,down_bias} ([I], [I], [H]);
  clamped (gpt_oss, OLMoE with clip_qkv): how many SwiGLU inputs or q/k/v values the clamps cut
    (the test wants some);
  grad.{hf name}: gradients of every other parameter (attention, norms, routers, shared experts,
    embeddings, lm_head).
All gradients come from loss.backward() with every parameter trainable.
With --mxfp4 the reference is the saved MXFP4 checkpoint as transformers loads it (dequantized).
Under --dtype bf16, GPT-OSS's norm weights (_keep_in_fp32_modules) are rounded to bf16 and then held
in fp32, numerically what transformers 5.17's from_pretrained(dtype=bf16) runs (it keeps those modules
in fp32 only for fp16; its RMSNorm multiplies the bf16 weight in fp32). esft keeps them unrounded.
"""
import argparse
import json
import os
import sys

import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(__file__))
from tiny_models import build, load_reference, save  # noqa: E402

ROUTER_ATTR = {"gpt_oss": "router"}  # default: mlp.gate


def router_of(family, layer):
    return getattr(layer.mlp, ROUTER_ATTR.get(family, "gate"), None)


def checkpoint_name(family, name, fused):
    """A parameter's name in the saved checkpoint (save_pretrained reverses transformers 5's renames)."""
    if family == "mixtral" and not fused:
        return name.replace(".mlp.gate.", ".block_sparse_moe.gate.")
    return name


def expert_grads(family, experts_module, e):
    """Per-expert gradients in esft's per-expert layout (gate [I,H], up [I,H], down [H,I])."""
    gu, dn = experts_module.gate_up_proj.grad, experts_module.down_proj.grad
    if family == "gpt_oss":  # gate_up [E,H,2I] with interleaved gate/up columns, down [E,I,H], biases
        gub, dnb = experts_module.gate_up_proj_bias.grad, experts_module.down_proj_bias.grad
        return {"gate": gu[e][:, 0::2].t(), "up": gu[e][:, 1::2].t(), "down": dn[e].t(),
                "gate_bias": gub[e][0::2], "up_bias": gub[e][1::2], "down_bias": dnb[e]}
    inter = dn.shape[-1]
    return {"gate": gu[e, :inter], "up": gu[e, inter:], "down": dn[e]}


def count_clamped(experts_module, counter):
    """Counts the SwiGLU inputs GPT-OSS's clamps cut (gate above limit, up outside +-limit)."""
    apply_gate = experts_module._apply_gate

    def counting(gate_up):
        gate, up = gate_up[..., ::2], gate_up[..., 1::2]
        lim = experts_module.limit
        counter[0] += int((gate > lim).sum() + (up.abs() > lim).sum())
        return apply_gate(gate_up)
    experts_module._apply_gate = counting


def count_clipped_qkv(attn, clip, counter):
    """Counts the q/k/v values OLMoE's clip_qkv cuts (normed q and k, raw v)."""
    def hook(mod, inp, out):
        counter[0] += int((out.abs() > clip).sum())
    for m in (attn.q_norm, attn.k_norm, attn.v_proj):
        m.register_forward_hook(hook)


def keep_fp32_modules(model):
    """Modules in _keep_in_fp32_modules held in fp32, after model.to(bf16) rounded their weights: the
    same numbers as from_pretrained(dtype=bf16), which keeps them in fp32 only for fp16 (transformers
    5.17 modeling_utils) and whose GptOssRMSNorm multiplies the bf16 weight in fp32 anyway."""
    keep = getattr(model, "_keep_in_fp32_modules", None) or []
    for name, p in model.named_parameters():
        if any(k in name.split(".") for k in keep):
            p.data = p.data.float()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--family", required=True)
    ap.add_argument("--config", default="base")
    ap.add_argument("--out", required=True)
    ap.add_argument("--fused", action="store_true", help="save transformers 5 fused expert tensors")
    ap.add_argument("--mxfp4", action="store_true", help="save the experts as MXFP4 (gpt_oss) and load them back")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu", help="run the reference here (the checkpoint is always fp32)")
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--experts", default=None, help="experts.json of another run: dump these experts' gradients")
    a = ap.parse_args()
    torch.manual_seed(1234)
    model = build(a.family, a.config, a.seed)
    save(model, os.path.join(a.out, "model"), a.fused, a.mxfp4, a.seed)
    if a.mxfp4:
        model = load_reference(a.family, os.path.join(a.out, "model"))
    cfg = model.config
    # Buffers from_pretrained(dtype=bf16) leaves in fp32: the selection bias (_keep_in_fp32_modules_strict)
    # and RoPE's inverse frequencies (computed in fp32 at init; model.to(bf16) would round them, an
    # error neither transformers as users load it nor esft makes).
    keep_fp32 = {n: b.clone() for n, b in model.named_buffers() if n.endswith(("e_score_correction_bias", "inv_freq"))}
    model.to(a.device, torch.bfloat16 if a.dtype == "bf16" else torch.float32)
    for n, b in keep_fp32.items():
        model.get_buffer(n).data = b.to(a.device)
    if a.dtype == "bf16" and a.family == "gpt_oss":  # its norms, as esft keeps them too
        keep_fp32_modules(model)
    clamped = [0]
    if a.family == "gpt_oss":
        for layer in model.model.layers:
            count_clamped(layer.mlp.experts, clamped)
    clip = getattr(cfg, "clip_qkv", None)
    if clip:
        for layer in model.model.layers:
            count_clipped_qkv(layer.self_attn, clip, clamped)

    B, S = 2, 11
    g = torch.Generator().manual_seed(7)
    input_ids = torch.randint(0, cfg.vocab_size, (B, S), generator=g)
    input_ids[1, 3] = getattr(cfg, "pad_token_id", None) or 0  # the pad id appears (its embedding row gets no grad)
    labels = input_ids.clone()
    labels[0, :3] = -100  # a masked prompt
    labels[1, 5] = -100

    routes, hooks, moe_layers = {}, [], []
    for i, layer in enumerate(model.model.layers):
        router = router_of(a.family, layer)
        if router is None:
            continue
        moe_layers.append(i)

        def hook(mod, inp, out, i=i):
            _, weights, idx = out
            routes[i] = (idx.detach().clone(), weights.detach().float().clone())
        hooks.append(router.register_forward_hook(hook))

    # Gradients for two experts of the first MoE layer and one of the last (ids chosen from the
    # routing so that every one of them receives tokens).
    input_ids, labels = input_ids.to(a.device), labels.to(a.device)
    out = model(input_ids=input_ids, labels=labels)
    out.loss.backward()
    for h in hooks:
        h.remove()
    experts = {}
    # Only tokens that reach the loss count: a row's last position feeds no label, so an expert
    # that only it uses has a zero gradient.
    reach_loss = (torch.arange(B * S) % S != S - 1).to(a.device)
    for pos, layer in enumerate([moe_layers[0], moe_layers[-1]] if len(moe_layers) > 1 else moe_layers):
        used = torch.unique(routes[layer][0][reach_loss]).tolist()
        experts[str(layer)] = [used[0], used[-1]] if pos == 0 else [used[len(used) // 2]]
    if a.experts:  # the experts another run chose (a bf16 run dumping the fp32 run's experts)
        experts = json.load(open(a.experts))
    with open(os.path.join(a.out, "experts.json"), "w") as f:
        json.dump(experts, f)

    ref = {"input_ids": input_ids, "labels": labels, "logits": out.logits.detach().float(),
           "loss": out.loss.detach().reshape(1)}
    if a.family == "gpt_oss" or clip:
        ref["clamped"] = torch.tensor([clamped[0]])
    for i, (idx, w) in routes.items():
        ref[f"ids.{i}"] = idx
        ref[f"weights.{i}"] = w
    for layer, ids in experts.items():
        ex = model.model.layers[int(layer)].mlp.experts
        for e in ids:
            for part, grad in expert_grads(a.family, ex, e).items():
                ref[f"grad.{layer}.{e}.{part}"] = grad.clone()
    for name, p in model.named_parameters():
        if ".experts." in name and "shared" not in name:
            continue
        if p.numel() == 0:  # zero-size shared experts (n_shared_experts 0): nothing to compare
            continue
        if p.grad is not None:
            ref[f"grad.{checkpoint_name(a.family, name, a.fused)}"] = p.grad.clone()

    model.zero_grad()
    if "output_router_logits" in cfg.to_dict():
        out2 = model(input_ids=input_ids, labels=labels, output_router_logits=True)
        ref["loss_with_aux"] = out2.loss.detach().reshape(1)
        ref["aux_loss"] = out2.aux_loss.detach().reshape(1)
    ref = {k: (v.float() if v.is_floating_point() else v).cpu().contiguous() for k, v in ref.items()}
    save_file(ref, os.path.join(a.out, "reference.safetensors"))


if __name__ == "__main__":
    main()
