"""Reference AdamW / clipping / LR schedules from torch and transformers for optim_test.

Usage: optim_reference.py OUT.safetensors
Runs 6 steps of torch.optim.AdamW (single-tensor path) with clip_grad_norm_ and HF's cosine
schedule with warmup and a min lr, on seeded tensors and gradients; stores everything needed
to replay the run, plus the three HF schedules over 20 steps.
"""
import sys

import torch
from safetensors.torch import save_file
from transformers import (get_constant_schedule_with_warmup, get_cosine_with_min_lr_schedule_with_warmup,
                          get_linear_schedule_with_warmup)

g = torch.Generator().manual_seed(0)
shapes = [(4, 3), (5,), (2, 2, 3)]
params = [torch.nn.Parameter(torch.randn(s, generator=g)) for s in shapes]
out = {f"init.{i}": p.detach().clone() for i, p in enumerate(params)}
# param 1 is a "norm": no weight decay
opt = torch.optim.AdamW([{"params": [params[0], params[2]], "weight_decay": 0.1},
                         {"params": [params[1]], "weight_decay": 0.0}],
                        lr=1e-2, betas=(0.9, 0.95), eps=1e-8, foreach=False, fused=False)
sched = get_cosine_with_min_lr_schedule_with_warmup(opt, num_warmup_steps=2, num_training_steps=6, min_lr=1e-3)
lrs, norms = [], []
for step in range(6):
    for i, p in enumerate(params):
        p.grad = torch.randn(p.shape, generator=g) * (3.0 if step == 2 else 0.3)
        out[f"grad.{step}.{i}"] = p.grad.clone()
    norms.append(float(torch.nn.utils.clip_grad_norm_(params, 1.0)))
    lrs.append(opt.param_groups[0]["lr"])
    opt.step()
    sched.step()
for i, p in enumerate(params):
    out[f"final.{i}"] = p.detach().clone()
out["lrs"] = torch.tensor(lrs, dtype=torch.float64)
out["norms"] = torch.tensor(norms, dtype=torch.float64)

for name, make in [("constant", lambda o: get_constant_schedule_with_warmup(o, 3)),
                   ("linear", lambda o: get_linear_schedule_with_warmup(o, 3, 20)),
                   ("cosine", lambda o: get_cosine_with_min_lr_schedule_with_warmup(o, 3, 20, min_lr=2e-4))]:
    o = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    s = make(o)
    seq = []
    for _ in range(20):
        seq.append(o.param_groups[0]["lr"])
        o.step()
        s.step()
    out[f"schedule.{name}"] = torch.tensor(seq, dtype=torch.float64)
save_file(out, sys.argv[1])
