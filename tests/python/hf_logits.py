"""Loads a checkpoint directory with transformers (from_pretrained) and writes its fp32 logits
for the given token ids. Usage: hf_logits.py MODEL_DIR '[[1, 2, 3]]' OUT.safetensors"""
import json
import sys

import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM

model = AutoModelForCausalLM.from_pretrained(sys.argv[1], dtype=torch.float32).eval()
ids = torch.tensor(json.loads(sys.argv[2]), dtype=torch.long)
with torch.no_grad():
    logits = model(input_ids=ids).logits.float()
save_file({"input_ids": ids, "logits": logits.contiguous()}, sys.argv[3])
