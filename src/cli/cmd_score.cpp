// esft score: flags -> ScoreOptions -> the scoring engine (src/score/scorer.cpp).
#include <cxxopts.hpp>

#include "esft/cli.h"
#include "esft/error.h"
#include "esft/score.h"

namespace esft {
namespace {

int cmd_score(int argc, char** argv) {
  cxxopts::Options o(argv[0], "Record per-layer expert routing statistics of a model over training data.\n"
                              "Writes OUT/rank_{r}/expert_weights_{L}.txt (ESFT reference format) and OUT/summary.json.");
  const ScoreOptions d;  // the defaults, stated once
  // clang-format off
  o.add_options()
    ("model", "HF checkpoint directory (config.json, safetensors, tokenizer files)", cxxopts::value<std::string>())
    ("data", "training data, jsonl (any format `esft tokenize` accepts)", cxxopts::value<std::string>())
    ("output", "output directory for the routing logs and summary.json", cxxopts::value<std::string>())
    ("n-sample-tokens", "stop after the sample that brings the logged token count to N (split over --world-size); 0 = all data", cxxopts::value<int64_t>()->default_value(std::to_string(d.n_sample_tokens)))
    ("seed", "shuffle seed (Python random.shuffle order; the ESFT reference uses 5934875)", cxxopts::value<uint64_t>()->default_value(std::to_string(d.seed)))
    ("device", "cpu, cuda or cuda:N (default: cuda when available, else cpu)", cxxopts::value<std::string>()->default_value(d.device))
    ("dtype", "fp32, bf16 or fp16 (default: bf16 on cuda, fp32 on cpu)", cxxopts::value<std::string>()->default_value(d.dtype))
    ("chat-format", "chat format for conversation records: auto, esft, qwen, deepseek, glm4, gpt-oss, mixtral", cxxopts::value<std::string>()->default_value(d.chat_format))
    ("max-length", "truncate longer samples to this many tokens (keeps the head); 0 = no limit", cxxopts::value<int64_t>()->default_value(std::to_string(d.max_length)))
    ("batch-tokens", "pack samples into forwards of up to this many tokens, attention and positions restarting per sample (routing is what one sample per forward gives); 0 = one sample per forward, the reference's way", cxxopts::value<int64_t>()->default_value(std::to_string(d.batch_tokens)))
    ("loss", "also compute and report the mean LM loss over the samples' labels (runs the LM head)")
    ("skip-bad-lines", "skip malformed jsonl lines (counted and reported) instead of stopping")
    ("rank", "this process's shard: it scores samples rank, rank+W, ... of the shuffled data", cxxopts::value<int>()->default_value(std::to_string(d.rank)))
    ("world-size", "number of scoring processes W sharing the data", cxxopts::value<int>()->default_value(std::to_string(d.world_size)))
    ("h,help", "show this help");
  // clang-format on
  auto a = o.parse(argc, argv);
  if (a.count("help")) {
    std::printf("%s\n", o.help().c_str());
    return 0;
  }
  for (auto req : {"model", "data", "output"})
    if (!a.count(req)) fail("--{} is required (see --help)", req);
  ScoreOptions s;
  s.model = a["model"].as<std::string>();
  s.data = a["data"].as<std::string>();
  s.output = a["output"].as<std::string>();
  s.n_sample_tokens = a["n-sample-tokens"].as<int64_t>();
  s.seed = a["seed"].as<uint64_t>();
  s.device = a["device"].as<std::string>();
  s.dtype = a["dtype"].as<std::string>();
  s.chat_format = a["chat-format"].as<std::string>();
  s.max_length = a["max-length"].as<int64_t>();
  s.skip_bad_lines = a.count("skip-bad-lines") > 0;
  s.batch_tokens = a["batch-tokens"].as<int64_t>();
  s.report_loss = a.count("loss") > 0;
  s.rank = a["rank"].as<int>();
  s.world_size = a["world-size"].as<int>();
  run_scoring(s);
  return 0;
}

}  // namespace
ESFT_SUBCOMMAND("score", "record expert routing statistics over training data", cmd_score);
}  // namespace esft
