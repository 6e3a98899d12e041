"""Reference activations and gradients from transformers for the Qwen3-MoE parity test.

Usage: qwen3_reference.py --config NAME --out DIR --experts '{"0": [1, 5]}'
Writes DIR/model (the checkpoint, via save_pretrained) and DIR/reference.safetensors with
input_ids, labels, logits, loss, aux-loss variant, per-MoE-layer top-k ids and gate weights
(router hooks), and the gradients of the chosen experts' weights after loss.backward().
"""
import argparse
import json
import os
import sys

import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(__file__))
from tiny_models import build  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="base")
    ap.add_argument("--out", required=True)
    ap.add_argument("--experts", required=True, help="JSON {layer: [expert ids]} whose gradients to dump")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu", help="run the reference here (the checkpoint is always fp32)")
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    a = ap.parse_args()
    torch.manual_seed(1234)
    model = build(a.config, a.seed)
    model.save_pretrained(os.path.join(a.out, "model"))
    cfg = model.config
    model.to(a.device, torch.bfloat16 if a.dtype == "bf16" else torch.float32)

    B, S = 2, 11
    g = torch.Generator().manual_seed(7)
    input_ids = torch.randint(0, cfg.vocab_size, (B, S), generator=g)
    labels = input_ids.clone()
    labels[0, :3] = -100  # a masked prompt
    labels[1, 5] = -100

    routes = {}
    hooks = []
    for i, layer in enumerate(model.model.layers):
        if hasattr(layer.mlp, "gate"):
            def hook(mod, inp, out, i=i):
                _, scores, idx = out
                routes[i] = (idx.detach().clone(), scores.detach().float().clone())
            hooks.append(layer.mlp.gate.register_forward_hook(hook))

    input_ids, labels = input_ids.to(a.device), labels.to(a.device)
    out = model(input_ids=input_ids, labels=labels)
    out.loss.backward()
    ref = {"input_ids": input_ids, "labels": labels, "logits": out.logits.detach().float(),
           "loss": out.loss.detach().reshape(1)}
    for i, (idx, w) in routes.items():
        ref[f"ids.{i}"] = idx
        ref[f"weights.{i}"] = w
    I = cfg.moe_intermediate_size
    for layer, ids in json.loads(a.experts).items():
        ex = model.model.layers[int(layer)].mlp.experts
        for e in ids:
            ref[f"grad.{layer}.{e}.gate_proj"] = ex.gate_up_proj.grad[e, :I].clone()
            ref[f"grad.{layer}.{e}.up_proj"] = ex.gate_up_proj.grad[e, I:].clone()
            ref[f"grad.{layer}.{e}.down_proj"] = ex.down_proj.grad[e].clone()
    for h in hooks:
        h.remove()

    model.zero_grad()
    out2 = model(input_ids=input_ids, labels=labels, output_router_logits=True)
    ref["loss_with_aux"] = out2.loss.detach().reshape(1)
    ref["aux_loss"] = out2.aux_loss.detach().reshape(1)
    ref = {k: (v.float() if v.is_floating_point() else v).cpu().contiguous() for k, v in ref.items()}
    save_file(ref, os.path.join(a.out, "reference.safetensors"))


if __name__ == "__main__":
    main()
