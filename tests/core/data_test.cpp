// Data loading, Python-compatible shuffling and packing.
#include <gtest/gtest.h>

#include <cstdio>
#include <nlohmann/json.hpp>

#include "esft/data.h"
#include "esft/error.h"
#include "test_util.h"

using namespace esft;

namespace {

std::string capture(const std::string& cmd) {
  std::string out;
  FILE* p = popen(cmd.c_str(), "r");
  char buf[4096];
  while (size_t n = fread(buf, 1, sizeof buf, p)) out.append(buf, n);
  pclose(p);
  return out;
}

TEST(Data, PythonShuffleMatchesCPython) {
  // Seeds below and above 2^32 (multi-word init_by_array), sizes around powers of two.
  std::vector<std::pair<uint64_t, size_t>> cases = {{5934875, 127}, {0, 1}, {42, 2}, {1, 1000}, {(1ull << 40) + 7, 33}, {123, 4096}};
  std::string args;
  for (auto& [s, n] : cases) args += " " + std::to_string(s) + ":" + std::to_string(n);
  auto out = capture(std::string(ESFT_PYTHON) + " " + (test::source_dir() / "tests/python/py_shuffle.py").string() + args);
  std::istringstream lines(out);
  for (auto& [seed, n] : cases) {
    std::string line;
    ASSERT_TRUE(std::getline(lines, line)) << "python output ended early";
    std::vector<size_t> ours(n);
    for (size_t i = 0; i < n; ++i) ours[i] = i;
    python_shuffle(ours, seed);
    EXPECT_EQ(nlohmann::json(ours), nlohmann::json::parse(line)) << "seed " << seed << " n " << n;
  }
}

TEST(Data, PretokenizedRecordsAndErrors) {
  auto dir = test::temp_dir("data");
  write_file_atomic(dir / "ok.jsonl", "{\"input_ids\": [5, 6, 7], \"labels\": [-100, 6, 7]}\n\n{\"input_ids\": [1, 2]}\n");
  auto s = load_samples(dir / "ok.jsonl", {});
  ASSERT_EQ(s.size(), 2u);
  EXPECT_EQ(s[0].labels, (std::vector<int32_t>{-100, 6, 7}));
  EXPECT_EQ(s[1].labels, (std::vector<int32_t>{1, 2})) << "no labels: every token trained";

  auto expect_error = [&](const std::string& content, const std::string& needle) {
    write_file_atomic(dir / "bad.jsonl", content);
    try {
      load_samples(dir / "bad.jsonl", {});
      ADD_FAILURE() << "no error for " << content;
    } catch (const Error& e) {
      std::string m = e.what();
      EXPECT_NE(m.find("bad.jsonl:2"), std::string::npos) << m;
      EXPECT_NE(m.find(needle), std::string::npos) << m;
    }
  };
  expect_error("{\"input_ids\": [1]}\n{\"input_ids\": [1, 2\n", "not valid JSON");
  expect_error("{\"input_ids\": [1]}\n{\"input_ids\": [1, 2], \"labels\": [1]}\n", "labels");
  expect_error("{\"input_ids\": [1]}\n{\"input_ids\": [1, -3]}\n", "-3");
  expect_error("{\"input_ids\": [1]}\n{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}\n", "tokenizer");
  expect_error("{\"input_ids\": [1]}\n[1, 2]\n", "object");

  DataOptions skip;
  skip.skip_bad_lines = true;
  write_file_atomic(dir / "mixed.jsonl", "{\"input_ids\": [1]}\nnot json\n{\"input_ids\": [2]}\n");
  EXPECT_EQ(load_samples(dir / "mixed.jsonl", skip).size(), 2u);
}

TEST(Data, ScoringSampleSelection) {
  std::vector<Sample> samples(10);
  for (size_t i = 0; i < samples.size(); ++i) samples[i].input_ids.assign(10 + i, 1), samples[i].labels = samples[i].input_ids;
  auto all = select_scoring_samples(samples, 0, 7);
  EXPECT_EQ(all.size(), 10u);
  auto some = select_scoring_samples(samples, 25, 7);
  int64_t before_last = 0;
  for (size_t i = 0; i + 1 < some.size(); ++i) before_last += samples[some[i]].input_ids.size();
  EXPECT_LT(before_last, 25) << "stops after the sample that reaches the budget";
  EXPECT_GE(before_last + int64_t(samples[some.back()].input_ids.size()), 25);
  EXPECT_EQ(std::vector<size_t>(all.begin(), all.begin() + some.size()), some) << "a prefix of the shuffled order";
}

std::vector<Sample> three_samples() {
  std::vector<Sample> s(3);
  s[0].input_ids = {1, 2, 3}, s[0].labels = {-100, 2, 3};
  s[1].input_ids = {4, 5}, s[1].labels = {4, 5};
  s[2].input_ids = {6, 7, 8, 9, 10, 11}, s[2].labels = {6, 7, 8, 9, 10, 11};
  return s;
}

TEST(Data, PackingModes) {
  PackOptions o;
  o.max_length = 5;
  PackStats st;
  o.packing = "none";
  auto none = pack_samples(three_samples(), o, &st);
  ASSERT_EQ(none.size(), 3u);
  EXPECT_EQ(none[2].input_ids, (std::vector<int32_t>{6, 7, 8, 9, 10})) << "right truncation keeps the head";
  EXPECT_EQ(st.truncated_samples, 1);
  EXPECT_EQ(st.dropped_tokens, 1);

  o.packing = "document";
  auto doc = pack_samples(three_samples(), o);
  ASSERT_EQ(doc.size(), 2u);
  EXPECT_EQ(doc[0].input_ids, (std::vector<int32_t>{1, 2, 3, 4, 5}));
  EXPECT_EQ(doc[0].position_ids, (std::vector<int32_t>{0, 1, 2, 0, 1})) << "positions restart per document";
  EXPECT_EQ(doc[0].doc_ids, (std::vector<int32_t>{0, 0, 0, 1, 1}));
  EXPECT_EQ(doc[0].labels, (std::vector<int32_t>{-100, 2, 3, 4, 5}));

  o.packing = "causal";
  o.truncation = "left";
  auto causal = pack_samples(three_samples(), o);
  ASSERT_EQ(causal.size(), 2u);
  EXPECT_EQ(causal[0].position_ids, (std::vector<int32_t>{0, 1, 2, 3, 4}));
  EXPECT_EQ(causal[0].doc_ids, (std::vector<int32_t>{0, 0, 0, 0, 0})) << "one attention span";
  EXPECT_EQ(causal[1].input_ids, (std::vector<int32_t>{7, 8, 9, 10, 11})) << "left truncation keeps the tail";

  o.packing = "zigzag";
  EXPECT_THROW(pack_samples(three_samples(), o), Error);
}

}  // namespace
