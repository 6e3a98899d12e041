// esft bench: flags -> BenchOptions -> the bench engine (src/bench/).
#include <fmt/ranges.h>

#include <cxxopts.hpp>

#include <limits>

#include "esft/bench.h"
#include "esft/cli.h"
#include "esft/error.h"
#include "flags.h"

namespace esft {
namespace {

int cmd_bench(int argc, char** argv) {
  cxxopts::Options o(argv[0], "Time scoring and ESFT training on a random model of a named shape, built in memory (no "
                              "checkpoint needed). Prints one JSON line per task: tokens_per_s, tflops (the FLOPs the "
                              "work needs), mfu, peak_gib.");
  const BenchOptions d;
  auto num = [](auto v) { return fmt::format("{}", v); };
  // clang-format off
  o.add_options()
    ("shape", fmt::format("model shape: {}", fmt::join(shape_names(), ", ")), cxxopts::value<std::string>()->default_value(d.shape))
    ("layers", "decoder layers (0 = the shape's own)", cxxopts::value<int64_t>()->default_value(num(d.layers)))
    ("vocab", "vocabulary size (0 = the shape's own)", cxxopts::value<int64_t>()->default_value(num(d.vocab)))
    ("tasks", "comma-separated: score, train", cxxopts::value<std::vector<std::string>>()->default_value(fmt::format("{}", fmt::join(d.tasks, ","))))
    ("seq", "tokens per row / per scored sample", cxxopts::value<int64_t>()->default_value(num(d.seq)))
    ("batch", "rows per training micro-batch", cxxopts::value<int64_t>()->default_value(num(d.batch)))
    ("score-tokens", "tokens per scoring forward (samples of --seq tokens packed); 0 = batch * seq", cxxopts::value<int64_t>()->default_value(num(d.score_tokens)))
    ("steps", "timed steps (forwards for score)", cxxopts::value<int64_t>()->default_value(num(d.steps)))
    ("warmup", "untimed steps first", cxxopts::value<int64_t>()->default_value(num(d.warmup)))
    ("experts-per-layer", "trained experts per MoE layer", cxxopts::value<int64_t>()->default_value(num(d.experts_per_layer)))
    ("activation-checkpointing", "train with activation checkpointing (every decoder layer)")
    ("checkpoint-layers", "train with the first N decoder layers checkpointed", cxxopts::value<int64_t>()->default_value(num(d.checkpoint_layers)))
    ("device", "cpu, cuda or cuda:N (default: cuda when available)", cxxopts::value<std::string>()->default_value(d.device))
    ("dtype", "fp32, bf16 or fp16 (default: bf16 on cuda, fp32 on cpu)", cxxopts::value<std::string>()->default_value(d.dtype))
    ("peak-tflops", "accelerator peak for MFU (H100/H200 dense bf16)", cxxopts::value<double>()->default_value(num(d.peak_tflops)))
    ("seed", "random weights and tokens", cxxopts::value<uint64_t>()->default_value(num(d.seed)))
    ("profile", "write a Chrome trace (kineto: CPU ops and CUDA kernels) of each task's timed steps to PREFIX.<task>.json", cxxopts::value<std::string>()->default_value(d.profile))
    ("h,help", "show this help");
  // clang-format on
  auto a = cli::parse_flags(o, argc, argv);
  if (a.count("help")) {
    std::printf("%s\n", o.help().c_str());
    return 0;
  }
  BenchOptions b;
  b.shape = a["shape"].as<std::string>();
  b.layers = a["layers"].as<int64_t>();
  b.vocab = a["vocab"].as<int64_t>();
  b.tasks = a["tasks"].as<std::vector<std::string>>();
  b.seq = a["seq"].as<int64_t>();
  b.batch = a["batch"].as<int64_t>();
  b.score_tokens = a["score-tokens"].as<int64_t>();
  b.steps = a["steps"].as<int64_t>();
  b.warmup = a["warmup"].as<int64_t>();
  b.experts_per_layer = a["experts-per-layer"].as<int64_t>();
  b.checkpoint_layers = cli::checkpoint_layers(a);
  b.device = a["device"].as<std::string>();
  b.dtype = a["dtype"].as<std::string>();
  b.peak_tflops = a["peak-tflops"].as<double>();
  b.seed = a["seed"].as<uint64_t>();
  b.profile = a["profile"].as<std::string>();
  const int64_t big = std::numeric_limits<int64_t>::max();
  for (auto f : {"layers", "vocab", "score-tokens", "experts-per-layer", "warmup"}) cli::flag_int(a, f, 0, big);
  for (auto f : {"seq", "batch", "steps"}) cli::flag_int(a, f, 1, big);
  cli::flag_number(a, "peak-tflops", 0, std::numeric_limits<double>::infinity());
  run_bench(b);
  return 0;
}

}  // namespace
ESFT_SUBCOMMAND("bench", "time scoring and training on a random model of a named shape", cmd_bench);
}  // namespace esft
