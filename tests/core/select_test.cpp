// esft select against the artefacts released with the ESFT paper: from the official routing
// logs we must reproduce each task's summary.json and expert_config.json exactly.
#include <gtest/gtest.h>

#include <map>
#include <random>
#include <sstream>

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
  auto from_logs = select_experts(summarize_routing_logs(official(GetParam()) / "scores"), opt).to_json();
  auto from_summary = select_experts(nlohmann::json::parse(read_file(official(GetParam()) / "summary.json")), opt).to_json();
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
  auto cfg = select_experts(summary, opt).to_json();
  size_t total = 0;
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
    total += ids.size();
  }
  // Totals the reference notes (docs/esft-reference.md 1.6) report for gate, p=0.1.
  const std::map<std::string, size_t> documented = {{"intent", 123}, {"law", 163}, {"summary", 193}, {"translation", 77}};
  EXPECT_EQ(total, documented.at(GetParam()));
}

// Logs split over rank_*/ folders (as a multi-process run writes them) pool to the same scores.
TEST_P(OfficialTask, RankFoldersArePooled) {
  auto dir = test::temp_dir("ranks-" + GetParam());
  for (auto& e : fs::directory_iterator(official(GetParam()) / "scores")) {
    std::istringstream in(read_file(e.path()));
    std::string line, part[3];
    for (int n = 0; std::getline(in, line); ++n) part[n % 3] += line + "\n";
    for (int r = 0; r < 3; ++r) {
      fs::create_directories(dir / fmt::format("rank_{}", r));
      write_file_atomic(dir / fmt::format("rank_{}", r) / e.path().filename(), part[r]);
    }
  }
  auto released = nlohmann::json::parse(read_file(official(GetParam()) / "summary.json"));
  EXPECT_EQ(summarize_routing_logs(dir), released);
}

// Feeding the official logged ids/weights back through RoutingStats must write the very same
// lines: ids, the double tab, and every weight as Python's str(round(w, 4)).
TEST_P(OfficialTask, LogLinesReproduceTheOfficialFormat) {
  auto dir = test::temp_dir("log-format-" + GetParam());
  std::map<int, std::vector<std::string>> want;
  {
    RoutingStats stats(64, 6, dir);
    for (int layer : {1, 13, 26}) {
      std::istringstream in(read_file(official(GetParam()) / fmt::format("scores/expert_weights_{}.txt", layer)));
      std::string line;
      for (int n = 0; n < 4 && std::getline(in, line); ++n) {
        auto sep = line.find("\t\t");
        ASSERT_NE(sep, std::string::npos);
        std::vector<int64_t> ids;
        std::vector<float> w;
        std::istringstream a(line.substr(0, sep)), b(line.substr(sep + 2));
        for (std::string f; std::getline(a, f, '\t');) ids.push_back(std::stoll(f));
        for (std::string f; std::getline(b, f, '\t');) w.push_back(std::stof(f));
        ASSERT_EQ(ids.size(), w.size());
        stats.add(layer, ids.data(), w.data(), int64_t(ids.size() / 6));
        want[layer].push_back(line);
      }
    }
    stats.finish();
  }
  for (auto& [layer, lines] : want) {
    std::string expect;
    for (auto& l : lines) expect += l + "\n";
    EXPECT_EQ(read_file(dir / fmt::format("expert_weights_{}.txt", layer)), expect) << "layer " << layer;
  }
}

INSTANTIATE_TEST_SUITE_P(Tasks, OfficialTask, ::testing::Values("intent", "law", "summary", "translation"));

TEST(Select, EdgeCases) {
  nlohmann::json summary = {{"token_scores", {{"3", {{"0", 0.25}, {"1", 0.5}, {"2", 0.25}}}}}};
  SelectOptions opt;
  opt.top_p = 0;
  EXPECT_TRUE(select_experts(summary, opt).to_json()["experts"]["3"].empty());
  opt.top_p = 1.5;  // never reached: every expert
  EXPECT_EQ(select_experts(summary, opt).to_json()["experts"]["3"], nlohmann::json({1, 0, 2}));
  opt.top_p = 0.6;  // ties keep ascending ids
  EXPECT_EQ(select_experts(summary, opt).to_json()["experts"]["3"], nlohmann::json({1, 0}));
  opt.score_function = "gate";
  EXPECT_THROW(select_experts(summary, opt), Error);
}

TEST(RoutingStats, WeightsAreLoggedAsPythonStrOfRound4) {
  auto dir = test::temp_dir("log-weights");
  // Python: str(round(float(np.float32(x)), 4)); 0.03125 and 0.09375 are exact binary ties that
  // round half to even (floor(x*1e4+0.5) would give 0.0313).
  const std::vector<std::pair<float, std::string>> cases = {
      {0.047f, "0.047"}, {0.1f, "0.1"},       {1.0f, "1.0"},       {0.0f, "0.0"},       {0.00004f, "0.0"},
      {0.03125f, "0.0312"}, {0.09375f, "0.0938"}, {0.12345f, "0.1235"}, {0.99996f, "1.0"}, {0.0414f, "0.0414"}};
  std::vector<int64_t> ids;
  std::vector<float> w;
  std::string expect_ids, expect_w;
  for (size_t i = 0; i < cases.size(); ++i) {
    ids.push_back(int64_t(i));
    w.push_back(cases[i].first);
    expect_ids += (i ? "\t" : "") + std::to_string(i);
    expect_w += "\t" + cases[i].second;
  }
  RoutingStats stats(int(cases.size()), 1, dir);
  stats.add(7, ids.data(), w.data(), int64_t(ids.size()));
  stats.add(7, ids.data(), w.data(), 0);  // empty forward: nothing logged
  stats.finish();
  EXPECT_EQ(read_file(dir / "expert_weights_7.txt"), expect_ids + "\t" + expect_w + "\n");
  // Out-of-range ids are refused naming the layer.
  int64_t bad = int64_t(cases.size());
  float one = 1.0f;
  try {
    stats.add(7, &bad, &one, 1);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("layer 7"), std::string::npos) << e.what();
  }
}

TEST(RoutingStats, MalformedLogsNameFileAndLine) {
  auto dir = test::temp_dir("log-malformed");
  auto expect_fail = [&](const std::string& content, int top_k, int n_experts, const std::string& needle) {
    write_file_atomic(dir / "expert_weights_3.txt", content);
    try {
      summarize_routing_logs(dir, top_k, n_experts);
      ADD_FAILURE() << "accepted: " << content;
    } catch (const Error& e) {
      std::string msg = e.what();
      EXPECT_NE(msg.find("expert_weights_3.txt:" + needle), std::string::npos) << msg;
    }
  };
  const std::string ok = "1\t2\t\t0.5\t0.25\n";
  expect_fail(ok + "1\t2\t0.5\t0.25\n", 2, 4, "2:");           // no double tab
  expect_fail(ok + "\n" + "1\tx\t\t0.5\t0.25\n", 2, 4, "3:");  // non-numeric id (blank line counted)
  expect_fail(ok + "1\t2\t\t0.5\tabc\n", 2, 4, "2:");          // non-numeric weight
  expect_fail(ok + "1\t-2\t\t0.5\t0.25\n", 2, 4, "2:");        // negative id
  expect_fail(ok + "1\t2\t\t0.5\n", 2, 4, "2:");                // counts differ
  expect_fail(ok + "1\t2\t3\t\t0.5\t0.25\t0.1\n", 2, 4, "2:");  // not a multiple of K
  expect_fail(ok + ok + "1\t9\t\t0.5\t0.25\n", 2, 4, "3:");    // id >= E
  // Control: the valid line alone is accepted; unseen experts appear with score 0.
  write_file_atomic(dir / "expert_weights_3.txt", ok);
  auto s = summarize_routing_logs(dir, 2, 4);
  EXPECT_EQ(s["token_scores"]["3"], nlohmann::json({{"0", 0.0}, {"1", 0.5}, {"2", 0.5}, {"3", 0.0}}));
  EXPECT_EQ(s["gate_scores"]["3"], nlohmann::json({{"0", 0.0}, {"1", 0.5}, {"2", 0.25}, {"3", 0.0}}));
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
