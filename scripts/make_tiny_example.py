"""Regenerates the bundled tiny example (tests/data/tiny-qwen3-moe, tests/data/tiny-intent-*.jsonl).

A byte-level BPE tokenizer trained on the example data, a random Qwen3-MoE small enough to
ship in the repository, and an ESFT-style intent-recognition dataset in the `messages` format.
Deterministic: run it again and the files come out the same (up to the tokenizers library's
version). Needs transformers and tokenizers (scripts/requirements.txt).
"""
import json
import os
import random

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM

ROOT = os.path.join(os.path.dirname(__file__), "..", "tests", "data")
MODEL = os.path.join(ROOT, "tiny-qwen3-moe")

INTENTS = {
    "FilmTele-Play": ["play the movie {}", "I want to watch {}", "put on {} please", "start {} on the tv"],
    "Music-Play": ["play the song {}", "I'd like to hear {}", "put on some {}", "can you play {}"],
    "Weather-Query": ["what's the weather in {}", "will it rain in {} tomorrow", "how hot is it in {}"],
    "Alarm-Update": ["set an alarm for {}", "wake me up at {}", "change my alarm to {}"],
}
SLOTS = {
    "FilmTele-Play": ["Fast and Furious", "Spirited Away", "The Matrix", "Inception", "Up"],
    "Music-Play": ["Yesterday", "Bohemian Rhapsody", "jazz", "Clair de Lune", "Hey Jude"],
    "Weather-Query": ["Beijing", "Paris", "Lagos", "Lima", "Oslo"],
    "Alarm-Update": ["7 am", "6:30", "noon", "half past eight", "5 pm"],
}


def records(rng, n):
    out = []
    for i in range(n):
        intent = rng.choice(sorted(INTENTS))
        slot = rng.choice(SLOTS[intent])
        q = rng.choice(INTENTS[intent]).format(slot)
        a = json.dumps({"intent": intent, "slots": {"name": slot}}, ensure_ascii=False)
        out.append({"id": f"tiny{i:04d}", "messages": [
            {"role": "user", "content": f"Analyse the intent of this sentence and answer in json: {q}"},
            {"role": "assistant", "content": a}]})
    return out


def main():
    rng = random.Random(5934875)
    train, evals = records(rng, 240), records(rng, 24)
    os.makedirs(MODEL, exist_ok=True)
    for name, recs in (("tiny-intent-train.jsonl", train), ("tiny-intent-eval.jsonl", evals)):
        with open(os.path.join(ROOT, name), "w") as f:
            for r in recs:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=384, special_tokens=["<s>", "</s>", "<pad>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    texts = [m["content"] for r in train for m in r["messages"]] + ["User: ", "Assistant:"]
    tok.train_from_iterator(texts, trainer)
    tok.save(os.path.join(MODEL, "tokenizer.json"))
    with open(os.path.join(MODEL, "tokenizer_config.json"), "w") as f:
        json.dump({"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>",
                   "tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": 512}, f, indent=2)

    # Pre-tokenized copies in the ESFT reference format ([BOS] "User: {q}\n\nAssistant:" masked,
    # " {a}" + EOS trained), for pipelines that run without the text front end.
    for name, recs in (("tiny-intent-train.tokens.jsonl", train), ("tiny-intent-eval.tokens.jsonl", evals)):
        with open(os.path.join(ROOT, name), "w") as f:
            for r in recs:
                ids, labels = [0], [-100]
                for m in r["messages"]:
                    if m["role"] == "user":
                        t = tok.encode("User: " + m["content"].strip() + "\n\nAssistant:", add_special_tokens=False).ids
                        ids += t
                        labels += [-100] * len(t)
                    else:
                        t = tok.encode(" " + m["content"].strip(), add_special_tokens=False).ids + [1]
                        ids += t
                        labels += t
                f.write(json.dumps({"input_ids": ids, "labels": labels}) + "\n")

    torch.manual_seed(0)
    cfg = Qwen3MoeConfig(vocab_size=tok.get_vocab_size(), hidden_size=64, intermediate_size=128,
                         moe_intermediate_size=32, num_hidden_layers=4, num_attention_heads=4,
                         num_key_value_heads=2, head_dim=16, num_experts=16, num_experts_per_tok=4,
                         norm_topk_prob=True, mlp_only_layers=[0], max_position_embeddings=512,
                         bos_token_id=0, eos_token_id=1, pad_token_id=2, tie_word_embeddings=False)
    model = Qwen3MoeForCausalLM(cfg)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "mlp.gate.weight" in n:
                p.normal_(0, 0.3)  # distinct routing between experts
    model.to(torch.bfloat16).save_pretrained(MODEL)


if __name__ == "__main__":
    main()
