// The scoring engine (esft score): runs a model over a sample of the training data with router
// hooks and writes the ESFT reference's routing logs, summary.json and score_config.json.
#pragma once
#include <cstdint>
#include <string>

#include "esft/fs.h"

namespace esft {

struct ScoreOptions {
  fs::path model, data, output;
  int64_t n_sample_tokens = 131072;  // the ESFT reference's default
  uint64_t seed = 5934875;           // the ESFT reference's shuffle seed
  std::string device, dtype;         // "" = cuda when available / bf16 on cuda, fp32 on cpu
  std::string chat_format = "auto";
  int64_t max_length = 0;            // truncate samples to this many tokens; 0 = no limit
  int64_t batch_tokens = 16384;      // samples packed into forwards of up to this many tokens (document
                                     // masking: routing as if each ran alone); 0 = one sample per forward
  bool report_loss = false;          // also compute the LM loss (runs the LM head)
  bool skip_bad_lines = false;
  int rank = 0, world_size = 1;      // this process's shard of the shuffled samples
};

struct ScoreResult {
  int64_t samples = 0, tokens = 0;
  double seconds = 0, steady_tokens_per_s = 0;  // throughput after the first (warm-up) sample
  double mean_loss = 0;                          // over label tokens, when the data has labels
};

ScoreResult run_scoring(const ScoreOptions& opt);

}  // namespace esft
