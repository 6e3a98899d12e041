// libFuzzer: a jsonl dataset through the whole torch-free data path: line splitting, JSON, record
// detection (messages, conversations, alpaca, query/response, prompt/completion, text, input_ids),
// chat rendering with the bundled tiny model's template and tokenizer, the vocabulary check, and
// packing. Bad lines fail with esft::Error naming file and line, or are skipped when asked.
#include "esft/data.h"
#include "esft/error.h"
#include "esft/tokenizer.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const esft::fs::path model = esft::fs::path(ESFT_SOURCE_DIR) / "tests/data/tiny-qwen3-moe";
  static const std::shared_ptr<const esft::Tokenizer> tok = esft::Tokenizer::from_model_dir(model);
  const auto path = esft::fuzz::input_file(data, size, ".jsonl");
  for (bool skip : {false, true}) {
    esft::DataOptions opt;
    opt.model_dir = model;
    opt.tokenizer = tok;
    opt.skip_bad_lines = skip;
    opt.show_progress = false;
    opt.num_threads = 1;
    opt.vocab_size = 384;
    try {
      auto samples = esft::load_samples(path, opt);
      for (const char* packing : {"none", "causal", "document"}) {
        esft::PackOptions p;
        p.packing = packing;
        p.max_length = 16;
        p.truncation = size % 2 ? "left" : "right";
        auto rows = esft::pack_samples(samples, p);
        for (auto& r : rows)
          if (r.input_ids.size() != r.labels.size() || r.input_ids.size() != r.doc_ids.size()) __builtin_trap();
      }
      (void)esft::select_scoring_samples(samples, 64, 5934875, 0, 2, 8);
    } catch (const esft::Error&) {
    }
  }
  return 0;
}
