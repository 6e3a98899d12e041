"""Reference renderings of many conversations by a family's Jinja chat template.

usage: chat_template_parity.py TOKENIZER_DIR OUT_DIR N SEED [TEMPLATE.jinja]

Writes OUT_DIR/convs.jsonl ({"messages": [...]} records, some assistant turns carrying "mask": 1)
and OUT_DIR/expected.jsonl ({"text": apply_chat_template(messages, tokenize=False),
"ids": tokenizers.Tokenizer.encode(text, add_special_tokens=False).ids}), line for line.
Conversations vary: with / without system prompt, 1-4 turns, empty content, unicode, text that
looks like template syntax or special tokens, <think> blocks and reasoning_content (Qwen3),
system messages in the middle, consecutive assistant turns, tool results.
TEMPLATE.jinja replaces the tokenizer's template (GPT-OSS's tokenizer files carry none): for the
harmony template, assistant turns carry "thinking" (analysis) fields and no tool turns are made.
"""
import json
import os
import random
import sys

from tokenizers import Tokenizer
from transformers import AutoTokenizer

PIECES = [
    "", "Hello", "What is 2+2?", "  spaced out  ", "\n\nleading newlines", "trailing newline\n", "\t tab\tinside",
    "你好，世界", "🚀 emoji 👍🏽", "café naïve résumé", "e\u0301 combining", "مرحبا بالعالم", "Ünïcödé\u00a0nbsp",
    "zero\u200bwidth", "line1\nline2\r\nline3", "<|im_start|>user\nfake turn<|im_end|>", "{{ bos_token }}",
    "{% if x %}y{% endif %}", "<｜User｜>fake", "<｜end▁of▁sentence｜>", "<think>", "</think>", "<|endoftext|>",
    "User: x\n\nAssistant:", '{"intent": "Play", "slots": {"name": "x"}}', "```python\nprint('hi')\n```",
    "<tool_response>r</tool_response>", "12345 67.89", "'single' \"double\" `back`", "back\\slash \\n literal",
    " ", "\n", "   \n  ",
]

THINK_ANSWERS = [
    "<think>\nlet me think\n</think>\n\nThe answer is 4.", "<think>r</think>a", "pre<think>r</think>post",
    "</think>only a close tag", "<think>\n\n</think>\n\n", "<think>a</think>b</think>c", "\n<think>\nx\n</think>\ny\n",
    "no think at all",
]


def text(rng):
    return "".join(rng.choice(PIECES) for _ in range(rng.randint(1, 3)))


def assistant(rng, family):
    m = {"role": "assistant", "content": text(rng)}
    if family == "gpt-oss" and rng.random() < 0.5:
        m["thinking"] = text(rng)
    if family == "qwen" and rng.random() < 0.4:
        m["content"] = rng.choice(THINK_ANSWERS)
    if family == "qwen" and rng.random() < 0.15:
        m["reasoning_content"] = rng.choice(["", "reasoning here", "\nwith newlines\n"])
    if rng.random() < 0.15:
        m["mask"] = 1
    return m


def conversation(rng, family):
    msgs = []
    if rng.random() < 0.5:
        msgs.append({"role": "system", "content": text(rng)})
    for _ in range(rng.randint(1, 4)):
        user = text(rng)
        if family == "qwen" and rng.random() < 0.1:
            user = "<tool_response>result</tool_response>"
        msgs.append({"role": "user", "content": user})
        r = rng.random()
        if r < 0.1:
            msgs.append({"role": "system", "content": text(rng)})
        elif r < 0.2 and family != "gpt-oss":
            msgs.append({"role": "tool", "content": text(rng)})
            if rng.random() < 0.5:
                msgs.append({"role": "tool", "content": text(rng)})
        msgs.append(assistant(rng, family))
        if rng.random() < 0.1:
            msgs.append(assistant(rng, family))
    if rng.random() < 0.1:
        msgs.append({"role": "user", "content": text(rng)})  # ends without an answer
    return msgs


def main():
    tok_dir, out_dir, n, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    hf = AutoTokenizer.from_pretrained(tok_dir)
    if len(sys.argv) > 5:
        hf.chat_template = open(sys.argv[5], encoding="utf-8").read()
    ref = Tokenizer.from_file(os.path.join(tok_dir, "tokenizer.json"))
    family = ("qwen" if "<|im_start|>" in hf.chat_template else
              "gpt-oss" if "<|channel|>" in hf.chat_template else "deepseek")
    rng = random.Random(seed)
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "convs.jsonl"), "w") as fc, open(os.path.join(out_dir, "expected.jsonl"), "w") as fe:
        for _ in range(n):
            msgs = conversation(rng, family)
            rendered = hf.apply_chat_template(msgs, tokenize=False)
            ids = ref.encode(rendered, add_special_tokens=False).ids
            fc.write(json.dumps({"messages": msgs}, ensure_ascii=False) + "\n")
            fe.write(json.dumps({"text": rendered, "ids": ids}, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
