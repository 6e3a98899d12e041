// Routing statistics in the ESFT reference format, and expert selection.
//
// Log files: OUT/rank_{r}/expert_weights_{L}.txt, one line per forward pass (one sample):
// the top-k expert ids of every token, token-major, tab separated, then two tabs, then the
// matching gate weights rounded to 4 decimals. L is the HF decoder-layer index.
// Scores (what reproduces the released summary.json): pooled over all logged tokens of all
// lines and ranks, token_score[L][e] = count/(K*N), gate_score[L][e] = sum of weights / N,
// each rounded to 4 decimals.
#pragma once
#include <nlohmann/json.hpp>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "esft/expert_config.h"
#include "esft/fs.h"

namespace esft {

// Accumulates per-layer counts and weight sums, and (optionally) streams the log lines.
class RoutingStats {
 public:
  // log_dir empty: counts only. Otherwise lines go to log_dir/expert_weights_{L}.txt, written
  // under temporary names and renamed by finish().
  RoutingStats(int n_experts, int top_k, fs::path log_dir = {});
  ~RoutingStats();
  // Creates every layer's state up front; add() may then run concurrently for different layers.
  void prepare_layers(const std::vector<int>& layers);
  // One forward pass of one sample through MoE layer `layer`: ids and weights are T*K values,
  // token-major. Weights are rounded to 4 decimals for the log; counts use the ids. A weight that
  // is not finite (a broken model) fails, naming the layer, before anything of it is written.
  void add(int layer, const int64_t* ids, const float* weights, int64_t n_tokens);
  void finish();  // closes and renames the log files
  // {"token_scores": {L: {e: s}}, "gate_scores": {...}} rounded to 4 decimals.
  nlohmann::json summary() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// A layer's routing log file, expert_weights_{L}.txt; and the layer a file name is the log of, or
// -1 for any other name (a .tmp.<pid> leftover of an interrupted run included).
std::string routing_log_name(int layer);
int routing_log_layer(const std::string& filename);

// Reads a scores directory: either expert_weights_{L}.txt files directly inside it, or inside
// rank_*/ subfolders (esft score output, official multi-rank logs). top_k is inferred from the
// data if 0 (DIR/score_config.json written by esft score, else the largest group size that
// divides every line and never repeats an expert within a token).
// Fails naming the file and line on malformed input.
// n_experts 0: from DIR/score_config.json if present, else the largest id seen + 1.
nlohmann::json summarize_routing_logs(const fs::path& dir, int top_k = 0, int n_experts = 0);

struct SelectOptions {
  std::string score_function = "token";  // "token" or "gate"
  double top_p = 0.2;
  bool train_shared_experts = false;
  bool train_non_expert_modules = false;
};

// Per layer, the experts in descending score order until their sum reaches top_p.
ExpertSelection select_experts(const nlohmann::json& summary, const SelectOptions& opt);

// JSON text laid out as the reference's Python json.dumps writes it (one line, ", " and ": ",
// layer keys in string order, expert keys in numeric order).
std::string dump_json(const nlohmann::json& j);

}  // namespace esft
