// Training/scoring data: jsonl records -> token ids with a loss mask -> packed rows.
// Torch-free; the trainer and scorer turn rows into tensors.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "esft/fs.h"

namespace esft {

class Tokenizer;

constexpr int32_t kIgnoreIndex = -100;

struct Sample {
  std::vector<int32_t> input_ids;
  std::vector<int32_t> labels;  // same length; kIgnoreIndex where no loss is taken
};

struct DataOptions {
  fs::path model_dir;               // tokenizer files and config.json (may be empty for pre-tokenized data)
  std::string chat_format = "auto";
  bool skip_bad_lines = false;
  fs::path cache_dir;               // where encoded datasets are cached; empty = no cache
  bool show_progress = true;
  fs::path tokenizer_file;          // tokenizer.json / tokenizer.model to use instead of model_dir's
                                    // (tokenizer_config.json is looked for beside it)
  bool raw_text = false;            // encode each record's "text" as is: no template, no BOS/EOS
  int num_threads = 0;              // encoding threads; 0 = all cores
  std::shared_ptr<const Tokenizer> tokenizer;  // an already loaded tokenizer (else loaded on demand)
  // The model's vocabulary: a token id or label outside [0, vocab_size) makes its line bad
  // (file, line and id in the error), whether it came pre-tokenized or from the tokenizer.
  // 0: not checked.
  int64_t vocab_size = 0;
};

// vocab_size of model_dir/config.json; 0 when the file or the key is missing or not a positive
// integer (loading the model then says what is wrong).
int64_t config_vocab_size(const fs::path& model_dir);

// Reads every record of a jsonl file. Errors name the file and the line. Record formats: see
// src/text/jsonl_records.h; chat formats: include/esft/chat.h. With cache_dir set, the encoded
// samples are cached there, keyed by the file's content, the tokenizer files and the chat format.
std::vector<Sample> load_samples(const fs::path& jsonl, const DataOptions& opt);

// One encoded record with the string it was rendered to (esft tokenize). Skipped lines have none.
struct EncodedRecord {
  Sample sample;
  std::string text;  // rendered string before tokenization (empty for pre-tokenized records)
  int64_t line = 0;  // 1-based line in the file
};
std::vector<EncodedRecord> encode_records(const fs::path& jsonl, const DataOptions& opt);

// Python-compatible shuffle (random.seed(seed); random.shuffle(x)) so that sample order equals
// the ESFT reference scripts' order for the same seed.
void python_shuffle(std::vector<size_t>& order, uint64_t seed);

// The samples one scoring process scores, as the ESFT reference picks them: all samples shuffled
// with `seed`, sharded round-robin (rank, rank + world, ...), taken whole until the one whose
// tokens bring the shard's total to n_tokens / world (inclusive). n_tokens <= 0 takes the whole
// shard. max_length > 0 counts each sample as truncated to it. *tokens gets the shard's total.
std::vector<size_t> select_scoring_samples(const std::vector<Sample>& samples, int64_t n_tokens, uint64_t seed,
                                           int rank = 0, int world = 1, int64_t max_length = 0,
                                           int64_t* tokens = nullptr);

struct PackOptions {
  std::string packing = "none";     // none | causal | document
  int64_t max_length = 4096;
  std::string truncation = "right"; // right: keep the head; left: keep the tail
  int32_t pad_id = 0;
};

// One row of a batch. position_ids restart per document under "document" packing; doc_ids say
// which tokens may attend to each other (-1 marks padding, attention only within equal ids).
struct PackedRow {
  std::vector<int32_t> input_ids, labels, position_ids, doc_ids;
};

struct PackStats {
  int64_t truncated_samples = 0;
  int64_t dropped_tokens = 0;
  // causal packing: samples cut at the end of a window (the rest of the sample is dropped, as in
  // the ESFT reference), and the tokens dropped that way
  int64_t cut_samples = 0;
  int64_t cut_tokens = 0;
};

std::vector<PackedRow> pack_samples(const std::vector<Sample>& samples, const PackOptions& opt,
                                    PackStats* stats = nullptr);

}  // namespace esft
