// esft bench-tokenizer: times loading a tokenizer and encoding a corpus (used by
// scripts/bench_tokenizer.sh to compare with HF tokenizers).
#include <cxxopts.hpp>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdio>
#include <fstream>

#include "esft/cli.h"
#include "esft/error.h"
#include "flags.h"
#include "esft/tokenizer.h"

namespace esft {
namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

int cmd_bench_tokenizer(int argc, char** argv) {
  cxxopts::Options o(argv[0], "Time tokenizer loading and encoding of a JSONL corpus.");
  // clang-format off
  o.add_options()
    ("tokenizer", "tokenizer.json, tokenizer.model, or a directory holding one", cxxopts::value<std::string>())
    ("input", "JSONL file, one {\"text\": ...} document per line", cxxopts::value<std::string>())
    ("threads", "encoding threads; 1 times encode() document by document, more uses encode_batch", cxxopts::value<int>()->default_value("1"))
    ("passes", "encode the corpus this many times and report each pass (the first runs with a cold word cache)", cxxopts::value<int>()->default_value("1"))
    ("h,help", "show this help");
  // clang-format on
  auto a = cli::parse_flags(o, argc, argv);
  if (a.count("help")) {
    std::printf("%s\n", o.help().c_str());
    return 0;
  }
  cli::require_flags(a, {"tokenizer", "input"});
  int threads = a["threads"].as<int>();
  int passes = a["passes"].as<int>();
  if (threads < 1) fail("--threads must be at least 1");
  if (passes < 1) fail("--passes must be at least 1");

  fs::path input = a["input"].as<std::string>();
  std::ifstream in(input);
  if (!in) fail("cannot open {}", input.string());
  std::vector<std::string> docs;
  size_t bytes = 0;
  std::string line;
  for (size_t n = 1; std::getline(in, line); ++n) {
    if (line.empty()) continue;
    try {
      docs.push_back(nlohmann::json::parse(line).at("text").get<std::string>());
    } catch (const nlohmann::json::exception& e) {
      fail("{}:{}: {}", input.string(), n, e.what());
    }
    bytes += docs.back().size();
  }

  fs::path tpath = a["tokenizer"].as<std::string>();
  auto t0 = std::chrono::steady_clock::now();
  auto tok = fs::is_directory(tpath) ? Tokenizer::from_model_dir(tpath) : Tokenizer::from_file(tpath);
  double load = seconds_since(t0);
  std::printf("load_seconds=%.4f\n", load);

  for (int p = 0; p < passes; ++p) {
    size_t tokens = 0;
    t0 = std::chrono::steady_clock::now();
    if (threads == 1) {
      for (const auto& d : docs) tokens += tok->encode(d).size();
    } else {
      for (const auto& ids : tok->encode_batch(docs, threads)) tokens += ids.size();
    }
    double secs = seconds_since(t0);
    std::printf("pass=%d threads=%d documents=%zu bytes=%zu tokens=%zu seconds=%.4f mb_per_s=%.3f tokens_per_s=%.0f\n",
                p + 1, threads, docs.size(), bytes, tokens, secs, bytes / 1e6 / secs, tokens / secs);
  }
  return 0;
}

ESFT_SUBCOMMAND("bench-tokenizer", "time tokenizer loading and encoding (see scripts/bench_tokenizer.sh)", cmd_bench_tokenizer);

}  // namespace
}  // namespace esft
