// What a person looks at: TensorBoard event files of esft train (read with TensorBoard's own
// Python reader) and the HTML page of esft report over real scores and a real run.
#include <gtest/gtest.h>

#include <map>
#include <set>

#include "esft/fs.h"
#include "test_util.h"

using namespace esft;

namespace {

const fs::path kModel = test::source_dir() / "tests/data/tiny-qwen3-moe";
const fs::path kData = test::source_dir() / "tests/data/tiny-intent-train.tokens.jsonl";
const fs::path kEval = test::source_dir() / "tests/data/tiny-intent-eval.tokens.jsonl";

TEST(Observability, TensorBoardReadsTheTrainingScalarsAndReportShowsTheRun) {
  auto dir = test::temp_dir("observability");
  ASSERT_EQ(test::run(test::esft_bin() + " score --model " + kModel.string() + " --device cpu --data " + kData.string() +
                      " --n-sample-tokens 3000 --output " + (dir / "scores").string()),
            0);
  ASSERT_EQ(test::run(test::esft_bin() + " select --scores " + (dir / "scores").string() + " --output " +
                      (dir / "expert_config.json").string()),
            0);
  // A run resumed from an earlier checkpoint redoes steps 4-6: TensorBoard must show one curve,
  // each step once, with the values of the redone steps.
  const std::string train = test::esft_bin() + " train --model " + kModel.string() + " --device cpu --data " +
                            kData.string() + " --expert-config " + (dir / "expert_config.json").string() + " --output " +
                            (dir / "run").string() + " --max-steps 6 --max-length 64 --micro-batch-size 2 --global-batch-size 4"
                            " --learning-rate 1e-3 --eval-dataset " + kEval.string() + " --eval-steps 3"
                            " --peak-tflops 0.001";  // a peak given on the CPU: MFU is logged too
  ASSERT_EQ(test::run(train + " --save-steps 3 --save-total-limit 3"), 0);
  ASSERT_EQ(test::run(train + " --save-steps 3 --save-total-limit 3 --resume " + (dir / "run/checkpoints/step-3").string()), 0);
  test::run_python("read_tfevents.py", (dir / "run/tensorboard").string() + " " + (dir / "tb.json").string());
  auto tb = nlohmann::json::parse(read_file(dir / "tb.json"));
  auto metrics = test::read_jsonl(dir / "run/metrics.jsonl");
  ASSERT_EQ(metrics.size(), 6u);
  for (auto [tag, key] : {std::pair{"train/loss", "loss"}, {"train/grad_norm", "grad_norm"}, {"train/learning_rate", "lr"},
                          {"train/tokens_per_s", "tokens_per_s"}, {"train/peak_memory_gib", "peak_memory_gib"},
                          {"train/tflops", "tflops"}, {"train/mfu", "mfu"}}) {
    ASSERT_TRUE(tb.contains(tag)) << tag << " " << tb.dump();
    std::map<int64_t, double> by_step;
    for (auto& p : tb[tag]) by_step[p[0].get<int64_t>()] = p[1].get<double>();
    ASSERT_EQ(tb[tag].size(), 6u) << tag << ": each step once " << tb[tag].dump();
    ASSERT_EQ(by_step.size(), 6u) << tag;
    for (auto& m : metrics) {
      const double want = m[key].get<double>(), got = by_step.at(m["step"].get<int64_t>());
      EXPECT_NEAR(got, want, 1e-6 * std::max(1.0, std::abs(want))) << tag << " step " << m["step"];
    }
  }
  ASSERT_TRUE(tb.contains("eval/loss"));
  std::set<int64_t> eval_steps;
  for (auto& p : tb["eval/loss"]) eval_steps.insert(p[0].get<int64_t>());
  EXPECT_EQ(eval_steps, (std::set<int64_t>{3, 6}));

  // The report over these scores, their selection and the run.
  ASSERT_EQ(test::run(test::esft_bin() + " report --scores " + (dir / "scores").string() + " --name intent --expert-config " +
                      (dir / "expert_config.json").string() + " --scores " + (dir / "scores").string() +
                      " --name intent-again --expert-config " + (dir / "expert_config.json").string() + " --run " +
                      (dir / "run").string() + " --output " + (dir / "report.html").string()),
            0);
  auto html = read_file(dir / "report.html");
  auto sel = nlohmann::json::parse(read_file(dir / "expert_config.json"));
  size_t n = 0;
  for (auto& [l, ids] : sel["experts"].items()) n += ids.size();
  EXPECT_NE(html.find("<h2>intent</h2>"), std::string::npos);
  EXPECT_NE(html.find("Overlap of the selected experts"), std::string::npos);
  EXPECT_NE(html.find("intent and intent-again: " + std::to_string(n) + " shared, Jaccard 100%"), std::string::npos);
  EXPECT_NE(html.find("6 steps, 2 evaluations"), std::string::npos);
  EXPECT_NE(html.find("(selected)"), std::string::npos);
  EXPECT_NE(test::run(test::esft_bin() + " report --scores " + (dir / "nope").string() + " --output " +
                      (dir / "r2.html").string() + " 2> /dev/null"),
            0);
}

}  // namespace
