// esft score: flags -> ScoreOptions -> the scoring engine (src/score/scorer.cpp).
#include <cxxopts.hpp>

#include <limits>

#include "esft/cli.h"
#include "esft/dist/launch.h"
#include "esft/error.h"
#include "esft/score.h"
#include "flags.h"

namespace esft {
namespace {

cxxopts::Options score_options(const std::string& prog) {
  cxxopts::Options o(prog, "Record per-layer expert routing statistics of a model over training data.\n"
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
    ("nproc-per-node", "start N worker processes on this node (one per GPU on cuda) that share the samples as "
                       "--rank/--world-size would; rank 0 merges summary.json. Under torchrun/srun the processes come "
                       "from there instead", cxxopts::value<int>()->default_value("0"))
    ("expert-parallel", "split each MoE layer's experts over E of the processes (a model too large for one GPU)",
     cxxopts::value<int>()->default_value(std::to_string(d.expert_parallel)))
    ("cache-dir", "cache of encoded datasets (default: OUT/.cache)", cxxopts::value<std::string>())
    ("h,help", "show this help");
  // clang-format on
  return o;
}

int cmd_score(int argc, char** argv) {
  auto o = score_options(argv[0]);
  auto a = cli::parse_flags(o, argc, argv);
  if (a.count("help")) {
    std::printf("%s\n", o.help().c_str());
    return 0;
  }
  cli::require_flags(a, {"model", "data", "output"});
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
  s.expert_parallel = a["expert-parallel"].as<int>();
  if (a.count("cache-dir")) s.cache_dir = a["cache-dir"].as<std::string>();
  const int64_t big = std::numeric_limits<int64_t>::max();
  for (auto f : {"n-sample-tokens", "max-length", "batch-tokens"}) cli::flag_int(a, f, 0, big);
  ESFT_CHECK(s.world_size >= 1, "--world-size {}: must be at least 1", s.world_size);
  ESFT_CHECK(s.rank >= 0 && s.rank < s.world_size, "--rank {}: must be in [0, --world-size {})", s.rank, s.world_size);
  ESFT_CHECK(a["nproc-per-node"].as<int>() >= 0, "--nproc-per-node {}: must be 1 or more (0, the default, starts no workers)", a["nproc-per-node"].as<int>());
  ESFT_CHECK(s.expert_parallel >= 1, "--expert-parallel must be >= 1");
  std::vector<std::string> args = {"score"};
  for (int i = 1; i < argc; ++i) args.push_back(argv[i]);
  if (auto rc = dist::launch_if_asked(a["nproc-per-node"].as<int>(), args)) return *rc;
  run_scoring(s);
  return 0;
}

}  // namespace
ESFT_SUBCOMMAND("score", "record expert routing statistics over training data", cmd_score);
namespace cli {
cxxopts::Options score_flags() { return score_options("esft score"); }
}  // namespace cli
}  // namespace esft
