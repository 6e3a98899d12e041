"""transformers' side of scripts/gpu/gpt_oss.sh: an ESFT-style training step on a GPT-OSS checkpoint.

Usage: gpt_oss_hf.py --model DIR --data FILE --expert-config FILE --out FILE.json
                     [--steps 4] [--batch 4] [--micro 1] [--device cuda]

transformers' model in bf16 on the device holds the checkpoint with its experts dequantized by
transformers' own convert_moe_packed_tensors (what from_pretrained with
Mxfp4Config(dequantize=True), needed for training, does; loaded by hand here because
from_pretrained onto a device wants accelerate), eager attention (GPT-OSS has no SDPA path; its
flash kernels come from the hub), grouped_mm experts. Only the experts take gradients. Their weights are fused per layer
([E, ...] parameters), so transformers computes the gradient of every expert; a hook right after
each gradient is accumulated keeps the rows of the selected experts (fp32) and frees the rest, and
AdamW updates those rows after the batch: the memory of ESFT, the compute of the fused layout.
A step is --batch rows of the data in micro-batches of --micro rows. Writes tok/s (median of the
steps after the first), peak memory and the settings.
"""
import argparse
import json
import os
import statistics
import time

import torch
import transformers as tf
from safetensors import safe_open
from transformers.integrations.mxfp4 import convert_moe_packed_tensors


def load(model_dir, dev):
    cfg = tf.GptOssConfig.from_pretrained(model_dir)
    if hasattr(cfg, "quantization_config"):
        del cfg.quantization_config
    cfg._attn_implementation = "eager"
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)  # built in bf16: no fp32 copy of the model on the device
    try:
        with torch.device(dev):
            model = tf.GptOssForCausalLM(cfg)
    finally:
        torch.set_default_dtype(default)
    keep = model._keep_in_fp32_modules or []  # the norms, as from_pretrained keeps them
    for name, p in model.named_parameters():
        if any(k in name.split(".") for k in keep):
            p.data = p.data.float()
    sd = model.state_dict()
    index = json.load(open(os.path.join(model_dir, "model.safetensors.index.json")))["weight_map"]
    loaded = set()
    with torch.no_grad():
        for shard in sorted(set(index.values())):
            with safe_open(os.path.join(model_dir, shard), "pt", device=str(dev)) as f:
                for k in f.keys():
                    if k.endswith("_scales"):
                        continue
                    if k.endswith("_blocks"):
                        name = k[:-len("_blocks")]
                        sd[name].copy_(convert_moe_packed_tensors(f.get_tensor(k), f.get_tensor(name + "_scales")))
                    else:
                        name = k
                        sd[name].copy_(f.get_tensor(k))
                    loaded.add(name)
    missing = set(sd) - loaded
    assert not missing, f"not in the checkpoint: {sorted(missing)[:5]}"
    return model


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--expert-config", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--micro", type=int, default=1)
    ap.add_argument("--device", default="cuda")
    a = ap.parse_args()
    res = {"batch": a.batch, "micro": a.micro}
    dev = torch.device(a.device)
    try:
        model = load(a.model, dev)
    except torch.OutOfMemoryError as e:
        res["error"] = f"out of memory loading the model: {str(e).splitlines()[0]}"
        json.dump(res, open(a.out, "w"))
        print(json.dumps(res))
        return
    try:
        model.set_experts_implementation("grouped_mm")
    except Exception:  # noqa: BLE001 (older API)
        model.config._experts_implementation = "grouped_mm"
    res["experts_implementation"] = getattr(model.config, "_experts_implementation", None)
    sel = {int(k): v for k, v in json.load(open(a.expert_config))["experts"].items()}
    model.train()
    for p in model.parameters():
        p.requires_grad_(False)
    acc, states = {}, {}
    for layer, ids in sel.items():
        ex = model.model.layers[layer].mlp.experts
        idx = torch.tensor(ids, device=dev)
        for name in ["gate_up_proj", "gate_up_proj_bias", "down_proj", "down_proj_bias"]:
            p = getattr(ex, name)
            p.requires_grad_(True)
            key = (layer, name)
            acc[key] = torch.zeros(p[idx].shape, device=dev, dtype=torch.float32)
            states[key] = (p, idx, torch.zeros_like(acc[key]), torch.zeros_like(acc[key]), p[idx].float())

            def keep_rows(param, key=key, idx=idx):
                acc[key] += param.grad[idx].float()
                param.grad = None
            p.register_post_accumulate_grad_hook(keep_rows)
    rows = [json.loads(line)["input_ids"] for line in open(a.data)]
    ids = torch.tensor(rows, device=dev)
    torch.cuda.reset_peak_memory_stats(dev) if dev.type == "cuda" else None
    times, step = [], 0
    lr, b1, b2, eps, wd = 1e-5, 0.9, 0.95, 1e-8, 0.1
    try:
        for s in range(a.steps):
            batch = ids[s * a.batch:(s + 1) * a.batch]
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            n_items, loss = batch[:, 1:].numel(), 0.0
            for m in range(0, a.batch, a.micro):
                mb = batch[m:m + a.micro]
                out = model(input_ids=mb, labels=mb, num_items_in_batch=n_items)
                out.loss.backward()
                loss += out.loss.item()
            step += 1
            with torch.no_grad():  # AdamW on the selected experts' rows (fp32 masters)
                for key, (p, idx, m1, m2, master) in states.items():
                    g = acc[key]
                    m1.mul_(b1).add_(g, alpha=1 - b1)
                    m2.mul_(b2).addcmul_(g, g, value=1 - b2)
                    master.mul_(1 - lr * wd)
                    master.addcdiv_(m1 / (1 - b1 ** step), (m2 / (1 - b2 ** step)).sqrt_().add_(eps), value=-lr)
                    p[idx] = master.to(p.dtype)
                    g.zero_()
            if dev.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t)
            print(f"hf step {s + 1}: loss {loss:.4f} {batch.numel() / times[-1]:.0f} tok/s", flush=True)
            res.setdefault("losses", []).append(loss)
    except torch.OutOfMemoryError as e:
        res["error"] = f"out of memory in step {len(times) + 1}: {str(e).splitlines()[0]}"
    if times:
        res["train_tok_s"] = a.batch * ids.shape[1] / statistics.median(times[1:] or times)
    if dev.type == "cuda":
        res["train_peak_gib"] = torch.cuda.max_memory_allocated(dev) / 2**30
    json.dump(res, open(a.out, "w"))
    print(json.dumps(res))


if __name__ == "__main__":
    main()
