// `esft select` through the binary, on the official ESFT artefacts: from the routing logs and
// from a summary.json alone it must write the released expert_config.json byte for byte.
#include <gtest/gtest.h>

#include "esft/routing_stats.h"
#include "test_util.h"

using namespace esft;

namespace {

fs::path official(const std::string& task) { return test::shared_dir() / "fixtures/esft-official" / task; }

int esft_select(const std::string& args, const fs::path& err) {
  return test::run(test::esft_bin() + " select " + args + " > /dev/null 2> " + err.string());
}

TEST(CliSelect, ReproducesTheReleasedConfig) {
  auto dir = test::temp_dir("cli-select");
  auto err = dir / "stderr.txt";
  // Logs folder (token, default top-p 0.2), also writing the recomputed summary.
  ASSERT_EQ(esft_select("--scores " + (official("law") / "scores").string() + " --output " +
                            (dir / "from-logs/expert_config.json").string() + " --summary-output " +
                            (dir / "summary.json").string(),
                        err),
            0)
      << read_file(err);
  EXPECT_EQ(read_file(dir / "from-logs/expert_config.json"), read_file(official("law") / "expert_config.json"));
  EXPECT_EQ(read_file(dir / "summary.json"), read_file(official("law") / "summary.json"));
  EXPECT_NE(read_file(err).find("153 experts over 26 layers"), std::string::npos) << read_file(err);

  // A folder holding only summary.json.
  fs::create_directories(dir / "only-summary");
  fs::copy_file(official("translation") / "summary.json", dir / "only-summary/summary.json");
  ASSERT_EQ(esft_select("--scores " + (dir / "only-summary").string() + " --output " + (dir / "t.json").string(), err), 0)
      << read_file(err);
  EXPECT_EQ(read_file(dir / "t.json"), read_file(official("translation") / "expert_config.json"));

  // Gate scores default to top-p 0.1; flags end up in the config.
  ASSERT_EQ(esft_select("--scores " + (dir / "only-summary").string() + " --output " + (dir / "g.json").string() +
                            " --score-function gate --train-shared-experts --train-non-expert-modules",
                        err),
            0)
      << read_file(err);
  SelectOptions opt;
  opt.score_function = "gate";
  opt.top_p = 0.1;
  opt.train_shared_experts = opt.train_non_expert_modules = true;
  auto want = select_experts(nlohmann::json::parse(read_file(official("translation") / "summary.json")), opt).to_json();
  EXPECT_EQ(nlohmann::json::parse(read_file(dir / "g.json")), want);
}

TEST(CliSelect, ErrorsAndHelp) {
  auto dir = test::temp_dir("cli-select-errors");
  auto err = dir / "stderr.txt";
  EXPECT_EQ(test::run(test::esft_bin() + " select --help > " + (dir / "help.txt").string()), 0);
  auto help = read_file(dir / "help.txt");
  for (auto flag : {"--scores", "--output", "--score-function", "--top-p", "--train-shared-experts",
                    "--train-non-expert-modules", "--top-k", "--n-experts", "--summary-output", "0.2", "0.1"})
    EXPECT_NE(help.find(flag), std::string::npos) << flag;

  auto out = " --output " + (dir / "x.json").string();
  EXPECT_NE(esft_select(out, err), 0);
  EXPECT_NE(read_file(err).find("--scores"), std::string::npos) << read_file(err);
  EXPECT_NE(esft_select("--scores " + (dir / "nope").string() + out, err), 0);
  EXPECT_NE(read_file(err).find("nope"), std::string::npos) << read_file(err);
  fs::create_directories(dir / "empty");
  EXPECT_NE(esft_select("--scores " + (dir / "empty").string() + out, err), 0);
  EXPECT_NE(read_file(err).find("empty"), std::string::npos) << read_file(err);
  EXPECT_NE(esft_select("--scores " + (official("intent") / "scores").string() + out + " --score-function mean", err), 0);
  EXPECT_NE(read_file(err).find("mean"), std::string::npos) << read_file(err);
  EXPECT_FALSE(fs::exists(dir / "x.json")) << "nothing written on failure";
}

}  // namespace
