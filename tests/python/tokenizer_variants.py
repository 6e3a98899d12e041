"""Small synthetic tokenizer.json files covering the components the shared tokenizers do not use
(other pre-tokenizer behaviors, Digits, Metaspace, byte fallback, unk fusing, subword
prefix/suffix, legacy "a b" merges, ignore_merges, lstrip/rstrip/single_word/normalized added
tokens, other normalizers and decoders), each with reference encodings from HF `tokenizers`.

usage: tokenizer_variants.py OUT_DIR [--bytes N]
Writes OUT_DIR/corpus.bin and, per variant NAME, NAME.json plus the files tokenizer_reference.py
writes (NAME.ids.bin, NAME.decoded.bin, NAME.decoded_skip.bin, NAME.vocab_size), and
OUT_DIR/variants.txt listing the names.
"""
import argparse
import json
import os
import sys

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tokenizer_corpus import make_corpus  # noqa: E402
from tokenizer_reference import write_ids, write_strings  # noqa: E402


def train(model, docs, normalizer=None, pre_tokenizer=None, decoder=None, **trainer_args):
    tok = Tokenizer(model)
    if normalizer is not None:
        tok.normalizer = normalizer
    if pre_tokenizer is not None:
        tok.pre_tokenizer = pre_tokenizer
    if decoder is not None:
        tok.decoder = decoder
    args = dict(vocab_size=1200, show_progress=False)
    args.update(trainer_args)
    tok.train_from_iterator(docs, trainers.BpeTrainer(**args))
    return tok


def added(tok):
    tok.add_special_tokens([AddedToken("<special>", special=True, normalized=False),
                            AddedToken("<|sep|>", special=True, normalized=False, lstrip=True)])
    tok.add_tokens([AddedToken("[MASK]", lstrip=True, rstrip=True, normalized=False),
                    AddedToken("word", single_word=True, normalized=True),
                    AddedToken("Été", normalized=True),
                    AddedToken(" the", normalized=False, rstrip=True),
                    AddedToken("ab", normalized=True, single_word=True, lstrip=True)])


def edit_json(path, fn):
    with open(path) as f:
        d = json.load(f)
    fn(d)
    with open(path, "w") as f:
        json.dump(d, f, ensure_ascii=False)


def variants(train_docs, out):
    made = []

    def save(name, tok, edit=None):
        path = os.path.join(out, name + ".json")
        tok.save(path)
        if edit:
            edit_json(path, edit)
        made.append(name)

    # GPT-2 style byte level with the GPT-2 regex and a prefix space, NFD.
    tok = train(models.BPE(), train_docs, normalizers.NFD(),
                pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=True), decoders.ByteLevel(),
                initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    added(tok)
    save("bytelevel_nfd", tok)

    # Every Split behavior, inverted splits, String patterns, individual digits; normalizer chain.
    tok = train(models.BPE(), train_docs,
                normalizers.Sequence([normalizers.Strip(left=True, right=True), normalizers.Replace("  ", " "),
                                      normalizers.Replace(Regex(r"[0-9]{4,}"), "####"), normalizers.NFC()]),
                pre_tokenizers.Sequence([
                    pre_tokenizers.Split("-", "merged_with_previous"),
                    pre_tokenizers.Split(Regex(r"\s+"), "removed"),
                    pre_tokenizers.Split(Regex(r"[aeiouAEIOU]+"), "contiguous", invert=True),
                    pre_tokenizers.Digits(individual_digits=True),
                    pre_tokenizers.Split(Regex(r"x|(?i:q)"), "merged_with_next"),
                    pre_tokenizers.Split(Regex(r"\p{P}"), "isolated", invert=True),
                    pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]),
                decoders.ByteLevel(), initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    added(tok)
    save("splits", tok)

    # Llama-style: Metaspace (prepend "first"), byte fallback with <0xXX> tokens, fused unk.
    tok = train(models.BPE(unk_token="<unk>", fuse_unk=True, byte_fallback=True), train_docs, None,
                pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=True),
                decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                   decoders.Strip(" ", 1, 0)]),
                special_tokens=["<unk>"] + [f"<0x{b:02X}>" for b in range(256)], limit_alphabet=120)
    added(tok)
    save("metaspace_byte_fallback", tok)

    # Mixtral's tokenizer.json shape: Prepend + Replace normalizers, no pre-tokenizer, byte fallback.
    tok = train(models.BPE(unk_token="<unk>", fuse_unk=True, byte_fallback=True), train_docs,
                normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")]), None,
                decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                   decoders.Strip(" ", 1, 0)]),
                special_tokens=["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)], limit_alphabet=150)
    save("prepend_replace", tok)

    # Unknown characters without byte fallback: unk fused and not fused, Metaspace never/no split.
    for fuse in (True, False):
        tok = train(models.BPE(unk_token="[UNK]", fuse_unk=fuse), train_docs, normalizers.NFC(),
                    pre_tokenizers.Metaspace(replacement="_", prepend_scheme="always", split=fuse),
                    decoders.Metaspace(replacement="_", prepend_scheme="always"),
                    special_tokens=["[UNK]"], limit_alphabet=80)
        save("unk_fused" if fuse else "unk_unfused", tok)

    # Subword prefix and end-of-word suffix, no decoder (tokens joined with spaces).
    tok = train(models.BPE(unk_token="[UNK]", continuing_subword_prefix="##", end_of_word_suffix="</w>"),
                train_docs, None,
                pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(r"\s+|[^\s\p{L}]"), "isolated"),
                                         pre_tokenizers.Digits(individual_digits=False)]),
                None, special_tokens=["[UNK]"], limit_alphabet=200,
                continuing_subword_prefix="##", end_of_word_suffix="</w>")
    save("prefix_suffix", tok)

    # Legacy "a b" merges (plus a #version line) and ignore_merges on a byte-level model.
    def legacy(d):
        d["model"]["merges"] = ["#version: 0.2"] + [" ".join(m) if isinstance(m, list) else m for m in d["model"]["merges"]]
        d["model"]["ignore_merges"] = True
    tok = train(models.BPE(), train_docs, None,
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True), decoders.ByteLevel(),
                initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), vocab_size=3000)
    added(tok)
    save("legacy_ignore_merges", tok, legacy)
    return made


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--bytes", type=int, default=200_000)
    ap.add_argument("--seed", type=int, default=77)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    docs = make_corpus(args.seed, args.bytes)
    # Add text that triggers the added-token rules (word boundaries, surrounding spaces).
    docs += ["a word, words, sword word.", "x [MASK]  y  [MASK]\nz", "été Été ÉTÉ Ete\u0301",
             "the  the then <|sep|>  <special>the", "ab cab ab\u00a0ab", "  [MASK][MASK]  ", "<|sep|><|sep|> x"]
    write_strings(os.path.join(args.out, "corpus.bin"), docs)
    names = variants(docs[: max(50, len(docs) // 3)], args.out)
    for name in names:
        tok = Tokenizer.from_file(os.path.join(args.out, name + ".json"))
        ids = [e.ids for e in tok.encode_batch(docs, add_special_tokens=False)]
        write_ids(os.path.join(args.out, f"{name}.ids.bin"), ids)
        write_strings(os.path.join(args.out, f"{name}.decoded.bin"), tok.decode_batch(ids, skip_special_tokens=False))
        write_strings(os.path.join(args.out, f"{name}.decoded_skip.bin"), tok.decode_batch(ids, skip_special_tokens=True))
        with open(os.path.join(args.out, f"{name}.vocab_size"), "w") as f:
            f.write(str(tok.get_vocab_size(with_added_tokens=True)))
    with open(os.path.join(args.out, "variants.txt"), "w") as f:
        f.write("\n".join(names) + "\n")


if __name__ == "__main__":
    main()
