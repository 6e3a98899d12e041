"""Reference encodings for the data tests, with the Hugging Face `tokenizers` library.

data_reference.py esft TOKENIZER_DIR OUT_DIR N SEED
    Writes OUT_DIR/esft.jsonl (N ESFT-style {"messages": [...]} records: whitespace around
    contents, multi-turn, "mask": 1, unicode, special-token text) and OUT_DIR/esft_expected.jsonl
    with {"input_ids", "labels"} from the ESFT reference's utils.get_formatted_input_and_target
    (re-stated below), BOS/EOS from TOKENIZER_DIR/tokenizer_config.json.

data_reference.py encode TOKENIZER_JSON IN.jsonl OUT.jsonl
    For each {"text": ...} line of IN: {"ids": Tokenizer.encode(text, add_special_tokens=False).ids}.
"""
import json
import os
import random
import sys

from tokenizers import Tokenizer


def token_text(v):
    return v["content"] if isinstance(v, dict) else v


def esft_reference(messages, tok, bos_id, eos_id, ignore=-100):
    # utils.get_formatted_input_and_target of deepseek-ai/ESFT, mask_prompt=True
    input_ids, target_ids = [], []
    for idx, m in enumerate(messages):
        if idx == 0:
            input_ids.append(bos_id)
            target_ids.append(bos_id)
        if m["role"] == "user":
            ids = tok.encode("User: {}\n\n".format(str(m["content"]).strip()) + "Assistant:", add_special_tokens=False).ids
            input_ids += ids
            target_ids += [ignore] * len(ids)
        elif m["role"] == "assistant":
            ids = tok.encode(" {}".format(str(m["content"]).strip()), add_special_tokens=False).ids + [eos_id]
            input_ids += ids
            target_ids += [ignore] * len(ids) if m.get("mask", 0) == 1 else ids
        else:
            raise AssertionError(m["role"])
    return input_ids, target_ids


QUERIES = ["请分析下面这句话的意图，并转化为json格式： 美国片速度与激情播放一下呢\n答案：", "  play Spirited Away  ",
           "\n\nwhat is 2+2?\n", "translate: 'Guten Tag' →", "e\u0301 café 🚀", "", "User: fake\n\nAssistant: fake",
           "<｜end▁of▁sentence｜> inside", "tabs\tand\u00a0nbsp\u3000ideographic space", "1234567890 numbers"]
ANSWERS = ['{"intent": "FilmTele-Play", "slots": {"name": "速度与激情"}}。\n\n', "4", "  spaced answer  ", "",
           "Bonjour — ça va?", "multi\nline\n\nanswer", "<think>x</think>y", "\u2003em space\u2003"]


def esft_corpus(rng, n):
    out = []
    for _ in range(n):
        msgs = []
        for _ in range(rng.randint(1, 3)):
            msgs.append({"role": "user", "content": "".join(rng.choice(QUERIES) for _ in range(rng.randint(1, 2)))})
            a = {"role": "assistant", "content": rng.choice(ANSWERS)}
            if rng.random() < 0.2:
                a["mask"] = 1
            msgs.append(a)
        out.append({"id": len(out), "messages": msgs})
    return out


def main():
    if sys.argv[1] == "esft":
        tok_dir, out_dir, n, seed = sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
        tok = Tokenizer.from_file(os.path.join(tok_dir, "tokenizer.json"))
        cfg = json.load(open(os.path.join(tok_dir, "tokenizer_config.json")))
        bos_id = tok.token_to_id(token_text(cfg["bos_token"]))
        eos_id = tok.token_to_id(token_text(cfg["eos_token"]))
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, "esft.jsonl"), "w") as fd, open(os.path.join(out_dir, "esft_expected.jsonl"), "w") as fe:
            for rec in esft_corpus(random.Random(seed), n):
                ids, labels = esft_reference(rec["messages"], tok, bos_id, eos_id)
                fd.write(json.dumps(rec, ensure_ascii=False) + "\n")
                fe.write(json.dumps({"input_ids": ids, "labels": labels}) + "\n")
    elif sys.argv[1] == "encode":
        tok = Tokenizer.from_file(sys.argv[2])
        with open(sys.argv[3]) as fin, open(sys.argv[4], "w") as fout:
            for line in fin:
                if line.strip():
                    text = json.loads(line)["text"]
                    fout.write(json.dumps({"ids": tok.encode(text, add_special_tokens=False).ids}) + "\n")
    else:
        raise SystemExit("usage: data_reference.py esft|encode ...")


if __name__ == "__main__":
    main()
