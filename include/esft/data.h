// Training/scoring data: jsonl records -> token ids with a loss mask -> packed rows.
// Torch-free; the trainer and scorer turn rows into tensors.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "esft/fs.h"

namespace esft {

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
};

// Reads every record of a jsonl file. Errors name the file and the line.
std::vector<Sample> load_samples(const fs::path& jsonl, const DataOptions& opt);

// Python-compatible shuffle (random.seed(seed); random.shuffle(x)) so that sample order equals
// the ESFT reference scripts' order for the same seed.
void python_shuffle(std::vector<size_t>& order, uint64_t seed);

// Indices of the samples scored: shuffled with `seed`, taken whole until the one whose tokens
// make the running total reach n_tokens (inclusive). n_tokens <= 0 takes all.
std::vector<size_t> select_scoring_samples(const std::vector<Sample>& samples, int64_t n_tokens, uint64_t seed);

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
};

std::vector<PackedRow> pack_samples(const std::vector<Sample>& samples, const PackOptions& opt,
                                    PackStats* stats = nullptr);

}  // namespace esft
