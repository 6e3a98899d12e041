"""Reference encodings for the tokenizer parity tests, from the HF `tokenizers` package.

usage: tokenizer_reference.py OUT_DIR [--seed S] [--bytes N] NAME=TOKENIZER_JSON ...

Writes into OUT_DIR (all little-endian; a "string list" is u32 count, then u32 length + UTF-8
bytes per string; an "id lists" file is u32 count, then u32 n + n int32 per list):
  corpus.bin             string list: the documents (tokenizer_corpus.make_corpus)
  nfc.bin                string list: normalizers.NFC() of every document
  NAME.ids.bin           id lists: Tokenizer.encode(doc, add_special_tokens=False).ids
  NAME.decoded.bin       string list: Tokenizer.decode(ids, skip_special_tokens=False)
  NAME.decoded_skip.bin  string list: Tokenizer.decode(ids, skip_special_tokens=True)
  NAME.vocab_size        Tokenizer.get_vocab_size(with_added_tokens=True)
"""
import argparse
import os
import struct
import sys

from tokenizers import Tokenizer, normalizers

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tokenizer_corpus import make_corpus  # noqa: E402


def write_strings(path, strings):
    with open(path, "wb") as f:
        f.write(struct.pack("<I", len(strings)))
        for s in strings:
            b = s.encode("utf-8")
            f.write(struct.pack("<I", len(b)))
            f.write(b)


def write_ids(path, lists):
    with open(path, "wb") as f:
        f.write(struct.pack("<I", len(lists)))
        for ids in lists:
            f.write(struct.pack(f"<I{len(ids)}i", len(ids), *ids))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("tokenizers", nargs="*", help="NAME=path/to/tokenizer.json")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--bytes", type=int, default=1 << 20)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    docs = make_corpus(args.seed, args.bytes)
    write_strings(os.path.join(args.out, "corpus.bin"), docs)
    nfc = normalizers.NFC()
    write_strings(os.path.join(args.out, "nfc.bin"), [nfc.normalize_str(d) for d in docs])
    for spec in args.tokenizers:
        name, path = spec.split("=", 1)
        tok = Tokenizer.from_file(path)
        encs = tok.encode_batch(docs, add_special_tokens=False)
        ids = [e.ids for e in encs]
        write_ids(os.path.join(args.out, f"{name}.ids.bin"), ids)
        write_strings(os.path.join(args.out, f"{name}.decoded.bin"), tok.decode_batch(ids, skip_special_tokens=False))
        write_strings(os.path.join(args.out, f"{name}.decoded_skip.bin"), tok.decode_batch(ids, skip_special_tokens=True))
        with open(os.path.join(args.out, f"{name}.vocab_size"), "w") as f:
            f.write(str(tok.get_vocab_size(with_added_tokens=True)))


if __name__ == "__main__":
    main()
