// libFuzzer: loading tokenizer.json (models BPE / WordPiece-less / Unigram, normalizers,
// pre-tokenizers with regexes, decoders, added tokens) and encoding / decoding with whatever
// loaded. Bad files fail with esft::Error.
#include "esft/error.h"
#include "esft/tokenizer.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto path = esft::fuzz::input_file(data, size, "-tokenizer.json");
  try {
    auto tok = esft::Tokenizer::from_file(path);
    for (const char* text : {"Hello world, 123 t\xc3\xa9st\n\n  <|im_start|>user", "", "   ", "\xe4\xbd\xa0\xe5\xa5\xbd!"}) {
      auto ids = tok->encode(text);
      (void)tok->decode(ids);
    }
  } catch (const esft::Error&) {
  }
  return 0;
}
