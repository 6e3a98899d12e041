"""SentencePiece reference for the tokenizer tests.

  tokenizer_spm_reference.py text OUT.txt
      training text for spm_train (English-like prose, code and numbers, one document a line)
  tokenizer_spm_reference.py reference OUT_DIR TOKENIZER_MODEL
      OUT_DIR/corpus.bin and, under the name "spm", the files tokenizer_reference.py writes, from
      HF tokenizers running OUT_DIR/spm.json: the tokenizer.json transformers' LlamaConverter
      makes of a SentencePiece BPE model (the Mixtral-8x7B / Llama-2 layout: Prepend("▁") +
      Replace(" ", "▁") normalizers, byte fallback, fused unk, <unk>/<s>/</s> as special added
      tokens, Replace/ByteFallback/Fuse/Strip decoders). transformers 5.17's converter fails on
      BPE models, so the same file is assembled here with the same components. Also writes
      spm.sp_ids.bin: sentencepiece's own ids, which agree with HF on text without special
      tokens.
"""
import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tokenizer_corpus as tc  # noqa: E402
from tokenizer_reference import write_ids, write_strings  # noqa: E402


def training_text(path):
    rng = random.Random(3)
    lines = [tc._english(rng, 40) + tc._code(rng, 1) + tc._numbers(rng, 3) for _ in range(800)]
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(line.replace("\n", " ").replace("\r", " ") for line in lines) + "\n")


def reference(out, model_path):
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers
    from transformers.tokenization_utils_base import generate_merges

    proto = sentencepiece_model_pb2.ModelProto()
    with open(model_path, "rb") as f:
        proto.ParseFromString(f.read())
    vocab = {p.piece: i for i, p in enumerate(proto.pieces)}
    tok = Tokenizer(models.BPE(vocab, generate_merges(vocab), unk_token=proto.trainer_spec.unk_piece, fuse_unk=True,
                               byte_fallback=True))
    # unknown (2) and control (3) pieces are special added tokens, as LlamaConverter makes them
    tok.add_special_tokens([AddedToken(p.piece, normalized=False, special=True) for p in proto.pieces if p.type in (2, 3)])
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    tok.save(os.path.join(out, "spm.json"))
    tok = Tokenizer.from_file(os.path.join(out, "spm.json"))

    docs = tc.make_corpus(31, 300_000)
    write_strings(os.path.join(out, "corpus.bin"), docs)
    ids = [e.ids for e in tok.encode_batch(docs, add_special_tokens=False)]
    write_ids(os.path.join(out, "spm.ids.bin"), ids)
    write_strings(os.path.join(out, "spm.decoded.bin"), tok.decode_batch(ids, skip_special_tokens=False))
    write_strings(os.path.join(out, "spm.decoded_skip.bin"), tok.decode_batch(ids, skip_special_tokens=True))
    with open(os.path.join(out, "spm.vocab_size"), "w") as f:
        f.write(str(tok.get_vocab_size(with_added_tokens=True)))
    sp = spm.SentencePieceProcessor(model_file=model_path)
    write_ids(os.path.join(out, "spm.sp_ids.bin"), [sp.encode(d) for d in docs])


if __name__ == "__main__":
    if sys.argv[1] == "text":
        training_text(sys.argv[2])
    else:
        reference(sys.argv[2], sys.argv[3])
