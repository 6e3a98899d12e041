// End to end through the esft binary on the bundled tiny model and intent data:
// score -> select -> train, checking the files each step promises.
#include <gtest/gtest.h>

#include <fstream>
#include <set>

#include "esft/routing_stats.h"
#include "esft/tensor_io.h"
#include "test_util.h"

using namespace esft;

namespace {

fs::path data_dir() { return test::source_dir() / "tests/data"; }

std::vector<std::string> lines_of(const fs::path& p) {
  std::ifstream in(p);
  std::vector<std::string> out;
  for (std::string l; std::getline(in, l);) out.push_back(l);
  return out;
}

TEST(CliPipeline, ScoreSelectTrain) {
  auto out = test::temp_dir("cli-pipeline");
  auto model = data_dir() / "tiny-qwen3-moe";
  auto bin = test::esft_bin();
  std::string common = " --model " + model.string() + " --data " + (data_dir() / "tiny-intent-train.tokens.jsonl").string() +
                       " --device cpu";

  // Scoring reads the conversations through the text front end (ESFT reference format).
  std::string text_data = " --model " + model.string() + " --data " + (data_dir() / "tiny-intent-train.jsonl").string() +
                          " --chat-format esft --device cpu";
  ASSERT_EQ(test::run(bin + " score" + text_data + " --n-sample-tokens 1500 --output " + (out / "scores").string()), 0);
  // Layer 0 is dense (mlp_only_layers), layers 1..3 are MoE.
  EXPECT_FALSE(fs::exists(out / "scores/rank_0/expert_weights_0.txt"));
  size_t n_lines = 0;
  for (int layer = 1; layer <= 3; ++layer) {
    auto f = out / "scores/rank_0" / ("expert_weights_" + std::to_string(layer) + ".txt");
    ASSERT_TRUE(fs::exists(f)) << f;
    auto lines = lines_of(f);
    if (layer == 1) n_lines = lines.size();
    EXPECT_EQ(lines.size(), n_lines) << "every MoE layer logs every sample";
    for (auto& l : lines) {
      auto sep = l.find("\t\t");
      ASSERT_NE(sep, std::string::npos);
      size_t ids = std::count(l.begin(), l.begin() + sep, '\t') + 1;
      size_t ws = std::count(l.begin() + sep + 2, l.end(), '\t') + 1;
      EXPECT_EQ(ids, ws);
      EXPECT_EQ(ids % 4, 0u) << "top-4 per token";
    }
  }
  EXPECT_GT(n_lines, 0u);
  auto summary = nlohmann::json::parse(read_file(out / "scores/summary.json"));
  ASSERT_TRUE(summary.contains("token_scores"));
  EXPECT_EQ(summary["token_scores"].size(), 3u);
  double total = 0;
  for (auto& [e, s] : summary["token_scores"]["1"].items()) total += s.get<double>();
  EXPECT_NEAR(total, 1.0, 2e-3) << "token scores of a layer sum to 1";

  auto cfg_path = out / "expert_config.json";
  ASSERT_EQ(test::run(bin + " select --scores " + (out / "scores").string() + " --top-p 0.3 --output " + cfg_path.string()), 0);
  auto cfg = nlohmann::json::parse(read_file(cfg_path));
  ASSERT_EQ(cfg["experts"].size(), 3u);
  size_t n_selected = 0;
  for (auto& [layer, ids] : cfg["experts"].items()) {
    n_selected += ids.size();
    EXPECT_FALSE(ids.empty());
  }

  ASSERT_EQ(test::run(bin + " train" + common + " --expert-config " + cfg_path.string() + " --output " +
                      (out / "train").string() + " --max-steps 3 --micro-batch-size 2 --global-batch-size 4 --max-length 128 --learning-rate 1e-3"),
            0);
  auto adapter = load_safetensors(out / "train/adapter/model.safetensors");
  EXPECT_EQ(adapter.size(), 3 * n_selected) << "gate, up and down of every selected expert, nothing else";
  EXPECT_TRUE(fs::exists(out / "train/adapter/expert_config.json"));
}

TEST(CliPipeline, BadInputsGiveClearErrors) {
  auto out = test::temp_dir("cli-errors");
  auto bin = test::esft_bin();
  auto model = (data_dir() / "tiny-qwen3-moe").string();
  // A malformed jsonl line names file and line.
  {
    std::ofstream f(out / "bad.jsonl");
    f << R"({"input_ids": [1, 2, 3]})" << "\n" << R"({"input_ids": [1, 2,)" << "\n";
  }
  auto log = out / "err.txt";
  EXPECT_NE(test::run(bin + " score --model " + model + " --data " + (out / "bad.jsonl").string() + " --output " +
                      (out / "s").string() + " 2> " + log.string()),
            0);
  auto msg = read_file(log);
  EXPECT_NE(msg.find("bad.jsonl"), std::string::npos) << msg;
  EXPECT_NE(msg.find("2"), std::string::npos) << msg;
  // An unknown flag is refused.
  EXPECT_NE(test::run(bin + " select --scores x --output y --no-such-flag 2> " + log.string()), 0);
  // A missing model directory names it.
  write_file_atomic(out / "good.jsonl", "{\"input_ids\": [1, 2, 3]}\n");
  EXPECT_NE(test::run(bin + " score --model " + (out / "nope").string() + " --data " + (out / "good.jsonl").string() +
                      " --output " + (out / "s2").string() + " 2> " + log.string()),
            0);
  EXPECT_NE(read_file(log).find("nope"), std::string::npos);
}

}  // namespace
