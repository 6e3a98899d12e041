// esft select against the artefacts released with the ESFT paper: from the official routing
// logs we must reproduce each task's summary.json and expert_config.json exactly.
#include <gtest/gtest.h>

#include <random>

#include "esft/error.h"
#include "esft/routing_stats.h"
#include "test_util.h"

using namespace esft;

namespace {

fs::path official(const std::string& task) { return test::shared_dir() / "fixtures/esft-official" / task; }

class OfficialTask : public ::testing::TestWithParam<std::string> {};

TEST_P(OfficialTask, SummaryFromLogsMatchesReleased) {
  auto released = nlohmann::json::parse(read_file(official(GetParam()) / "summary.json"));
  auto ours = summarize_routing_logs(official(GetParam()) / "scores", 6, 64);
  EXPECT_EQ(ours, released);
  // Inferring top-k and the expert count from the logs gives the same.
  EXPECT_EQ(summarize_routing_logs(official(GetParam()) / "scores"), released);
  // And the text layout equals the released file byte for byte.
  auto text = read_file(official(GetParam()) / "summary.json");
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  EXPECT_EQ(dump_json(ours), text);
}

TEST_P(OfficialTask, SelectionMatchesReleasedConfig) {
  auto released = nlohmann::json::parse(read_file(official(GetParam()) / "expert_config.json"));
  SelectOptions opt;  // token, top_p 0.2: what the released configs used
  auto from_logs = select_experts(summarize_routing_logs(official(GetParam()) / "scores"), opt);
  auto from_summary = select_experts(nlohmann::json::parse(read_file(official(GetParam()) / "summary.json")), opt);
  EXPECT_EQ(from_logs, released);  // nlohmann compares arrays in order: list order matters
  EXPECT_EQ(from_summary, released);
  auto text = read_file(official(GetParam()) / "expert_config.json");
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  EXPECT_EQ(dump_json(from_logs), text);
}

TEST_P(OfficialTask, GateSelectionInvariants) {
  auto summary = summarize_routing_logs(official(GetParam()) / "scores");
  SelectOptions opt;
  opt.score_function = "gate";
  opt.top_p = 0.1;
  auto cfg = select_experts(summary, opt);
  for (auto& [layer, ids] : cfg["experts"].items()) {
    auto& s = summary["gate_scores"][layer];
    double cum = 0;
    for (size_t i = 0; i < ids.size(); ++i) {
      double v = s[std::to_string(ids[i].get<int>())].get<double>();
      if (i + 1 < ids.size()) EXPECT_LT(cum + v, 0.1 + 1e-12) << "selection stops at the crossing expert";
      if (i) EXPECT_LE(v, s[std::to_string(ids[i - 1].get<int>())].get<double>()) << "descending order";
      cum += v;
    }
    EXPECT_GE(cum, 0.1 - 1e-12) << "layer " << layer << " reaches top_p";
  }
}

INSTANTIATE_TEST_SUITE_P(Tasks, OfficialTask, ::testing::Values("intent", "law", "summary", "translation"));

TEST(Select, EdgeCases) {
  nlohmann::json summary = {{"token_scores", {{"3", {{"0", 0.25}, {"1", 0.5}, {"2", 0.25}}}}}};
  SelectOptions opt;
  opt.top_p = 0;
  EXPECT_TRUE(select_experts(summary, opt)["experts"]["3"].empty());
  opt.top_p = 1.5;  // never reached: every expert
  EXPECT_EQ(select_experts(summary, opt)["experts"]["3"], nlohmann::json({1, 0, 2}));
  opt.top_p = 0.6;  // ties keep ascending ids
  EXPECT_EQ(select_experts(summary, opt)["experts"]["3"], nlohmann::json({1, 0}));
  opt.score_function = "gate";
  EXPECT_THROW(select_experts(summary, opt), Error);
}

TEST(RoutingStats, LogsRoundTripThroughTheReader) {
  auto dir = test::temp_dir("routing-stats");
  const int E = 8, K = 2;
  std::mt19937 rng(3);
  {
    RoutingStats stats(E, K, dir / "rank_0");
    for (int sample = 0; sample < 5; ++sample) {
      int T = 3 + sample;
      for (int layer : {1, 4}) {
        std::vector<int64_t> ids;
        std::vector<float> w;
        for (int t = 0; t < T; ++t) {
          int a = rng() % E, b = (a + 1 + rng() % (E - 1)) % E;
          float p = std::uniform_real_distribution<float>(0.5f, 1.0f)(rng);
          ids.insert(ids.end(), {a, b});
          w.insert(w.end(), {p, 1 - p});
        }
        stats.add(layer, ids.data(), w.data(), T);
      }
    }
    // Nothing visible under the final names before finish().
    EXPECT_FALSE(fs::exists(dir / "rank_0/expert_weights_1.txt"));
    stats.finish();
    auto back = summarize_routing_logs(dir, K, E);
    EXPECT_EQ(back, stats.summary());
  }
  auto text = read_file(dir / "rank_0/expert_weights_4.txt");
  EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 5);
  // A malformed line is reported with file and line number.
  write_file_atomic(dir / "rank_0/expert_weights_4.txt", text + "1\t2\t\t0.5\n");
  try {
    summarize_routing_logs(dir, K, E);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("expert_weights_4.txt:6"), std::string::npos) << e.what();
  }
}

}  // namespace
