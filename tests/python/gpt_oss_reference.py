"""GPT-OSS pieces from transformers 5.17 for tests/torch/gpt_oss_test.cpp.

Usage:
  gpt_oss_reference.py mxfp4 OUT.safetensors
      random MXFP4 blocks [2, 256, 3, 16] and scales [2, 256, 3] (every scale byte 0..255 in
      the first column, so 2^-127 and 2^128 appear) and transformers' convert_moe_packed_tensors
      of them in bf16 and fp32 (layout [E, G*32, R], as transformers returns it).
  gpt_oss_reference.py rope CONFIG.json OUT.safetensors
      GptOssRotaryEmbedding's cos/sin (fp32) for the config at positions 0..9000 step 7, and
      inv_freq, attention_scaling.
"""
import json
import sys

import torch
from safetensors.torch import save_file


def mxfp4(out):
    from transformers.integrations.mxfp4 import convert_moe_packed_tensors
    g = torch.Generator().manual_seed(5)
    blocks = torch.randint(0, 256, (2, 256, 3, 16), generator=g, dtype=torch.uint8)
    scales = torch.randint(0, 256, (2, 256, 3), generator=g, dtype=torch.uint8)
    scales[0, :, 0] = torch.arange(256, dtype=torch.uint8)
    scales[1, :4, 1] = torch.tensor([0, 1, 254, 255], dtype=torch.uint8)
    ref = {"blocks": blocks, "scales": scales}
    for name, dtype in [("bf16", torch.bfloat16), ("fp32", torch.float32)]:
        ref[name] = convert_moe_packed_tensors(blocks.clone(), scales.clone(), dtype=dtype)
    save_file(ref, out)


def rope(config_path, out):
    from transformers import GptOssConfig
    from transformers.models.gpt_oss.modeling_gpt_oss import GptOssRotaryEmbedding
    cfg = GptOssConfig(**json.load(open(config_path)))
    emb = GptOssRotaryEmbedding(cfg)
    pos = torch.arange(0, 9001, 7).unsqueeze(0)
    cos, sin = emb(torch.zeros(1, dtype=torch.float32), pos)
    save_file({"position_ids": pos, "cos": cos.contiguous(), "sin": sin.contiguous(), "inv_freq": emb.inv_freq.float(),
               "attention_scaling": torch.tensor([float(emb.attention_scaling)])}, out)


if __name__ == "__main__":
    {"mxfp4": lambda: mxfp4(sys.argv[2]), "rope": lambda: rope(sys.argv[2], sys.argv[3])}[sys.argv[1]]()
