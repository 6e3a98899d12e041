// esft score: packing samples into batches with document masking routes every token exactly as
// one sample per forward does (fp32), so the logs are identical; the loss is only computed when
// asked for.
#include <gtest/gtest.h>

#include "esft/fs.h"
#include "test_util.h"

using namespace esft;

namespace {

TEST(Score, PackedBatchesGiveTheLogsOfOneSamplePerForward) {
  auto dir = test::temp_dir("score-packed");
  const std::string common = test::esft_bin() + " score --model " + (test::source_dir() / "tests/data/tiny-qwen3-moe").string() +
                             " --data " + (test::source_dir() / "tests/data/tiny-intent-train.jsonl").string() +
                             " --chat-format esft --device cpu --n-sample-tokens 3000";
  ASSERT_EQ(test::run(common + " --batch-tokens 0 --output " + (dir / "single").string()), 0);
  ASSERT_EQ(test::run(common + " --batch-tokens 700 --loss --output " + (dir / "packed").string() + " 2> " +
                      (dir / "packed.log").string()),
            0);
  int files = 0;
  for (auto& e : fs::directory_iterator(dir / "single/rank_0")) {
    ++files;
    auto other = dir / "packed/rank_0" / e.path().filename();
    ASSERT_TRUE(fs::exists(other)) << other;
    EXPECT_EQ(read_file(e.path()), read_file(other)) << e.path().filename() << " differs between packed and single";
  }
  EXPECT_EQ(files, 3);
  EXPECT_EQ(read_file(dir / "single/summary.json"), read_file(dir / "packed/summary.json"));
  EXPECT_NE(read_file(dir / "packed.log").find("mean loss"), std::string::npos);
}

}  // namespace
