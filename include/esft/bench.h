// esft bench: a random model of a named shape built in memory (no checkpoint on disk) and timed
// on scoring and ESFT training steps. One JSON line per task: tokens/s, TFLOP/s (the FLOPs the
// work needs, flops() of the model), MFU against --peak-tflops, peak device memory.
#pragma once
#include <nlohmann/json.hpp>

#include <string>
#include <vector>

namespace esft {

// config.json of a named shape ("qwen3-30b-a3b", ...), the real model's values.
nlohmann::json shape_config(const std::string& name);
std::vector<std::string> shape_names();

struct BenchOptions {
  std::string shape = "qwen3-30b-a3b";
  int64_t layers = 0;                 // 0 = the shape's own
  int64_t vocab = 0;                  // 0 = the shape's own
  std::vector<std::string> tasks = {"score", "train"};
  std::string device, dtype;          // "" = cuda when available / bf16 on cuda
  int64_t seq = 2048, batch = 4;      // train: micro-batch of batch rows of seq tokens
  int64_t score_tokens = 0;           // score: tokens per forward (samples of seq tokens packed); 0 = batch*seq
  int64_t steps = 10, warmup = 2;     // timed steps after warm-up steps
  int64_t experts_per_layer = 8;      // trained experts per MoE layer (spread over the ids)
  int64_t checkpoint_layers = 0;  // as TrainOptions::checkpoint_layers
  double peak_tflops = 989;           // H100/H200 dense bf16
  uint64_t seed = 0;
  std::string profile;                // write a Chrome trace of each task's timed steps to PROFILE.<task>.json
};

// Runs the tasks; returns one JSON object per task (also printed as a line each).
std::vector<nlohmann::json> run_bench(const BenchOptions& opt);

}  // namespace esft
