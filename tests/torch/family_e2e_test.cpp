// score -> select -> train -> merge through the esft binary, for each family on a tiny random
// checkpoint: the routing logs cover exactly the MoE layers, only the selected experts (plus
// shared experts / non-expert modules when the config says so) change, the adapter holds exactly
// the trained tensors under their HF names, merge reproduces the full checkpoint, and
// transformers loads it with logits equal to esft's.
#include <gtest/gtest.h>

#include <fstream>
#include <random>
#include <set>

#include "esft/model.h"
#include "esft/tensor_io.h"
#include "test_util.h"

using namespace esft;

namespace {

struct Row {
  std::string family, config;
  bool shared_experts, non_expert_modules;
  std::string shared_prefix;  // a name fragment of the shared-expert tensors ("" = the family has none)
};

// A new family adds a row.
const Row kRows[] = {
    {"qwen3_moe", "base", false, true, ""},
    {"qwen2_moe", "base", true, false, ".mlp.shared_expert"},
    {"mixtral", "base", false, false, ""},
    {"olmoe", "clip", false, true, ""},
};
void PrintTo(const Row& r, std::ostream* os) { *os << r.family << "/" << r.config; }

std::map<std::string, at::Tensor> tensors_of(const fs::path& dir) {
  Checkpoint c(dir);
  std::map<std::string, at::Tensor> out;
  for (auto& n : c.names()) out[n] = load_tensor(c, n);
  return out;
}

// Pre-tokenized samples within the tiny vocabulary (128), prompts masked.
fs::path write_data(const fs::path& dir) {
  std::mt19937 rng(3);
  std::ofstream out(dir / "data.jsonl");
  for (int s = 0; s < 24; ++s) {
    int n = 12 + int(rng() % 20), prompt = 3 + int(rng() % 5);
    nlohmann::json ids = nlohmann::json::array(), labels = nlohmann::json::array();
    for (int t = 0; t < n; ++t) {
      int id = 3 + int(rng() % 120);
      ids.push_back(id);
      labels.push_back(t < prompt ? -100 : id);
    }
    out << nlohmann::json{{"input_ids", ids}, {"labels", labels}}.dump() << "\n";
  }
  return dir / "data.jsonl";
}

class FamilyPipeline : public ::testing::TestWithParam<Row> {};

TEST_P(FamilyPipeline, ScoreSelectTrainMerge) {
  const auto& row = GetParam();
  auto dir = test::temp_dir("e2e-" + row.family);
  const fs::path model_dir = dir / "model";
  const std::string bin = test::esft_bin();
  test::run_python("tiny_models.py", "--family " + row.family + " --config " + row.config + " --out " + model_dir.string());
  const auto data = write_data(dir);
  const std::string common = " --model " + model_dir.string() + " --data " + data.string() + " --device cpu";

  ASSERT_EQ(test::run(bin + " score" + common + " --n-sample-tokens 300 --output " + (dir / "scores").string()), 0);
  auto model = load_model(model_dir, LoadOptions{"cpu", at::kFloat});
  const auto moe = model->moe_layers();
  const auto score_cfg = nlohmann::json::parse(read_file(dir / "scores/score_config.json"));
  EXPECT_EQ(score_cfg["moe_layers"].get<std::vector<int>>(), moe);
  int logged = 0;
  for (auto& e : fs::directory_iterator(dir / "scores/rank_0")) logged += e.path().extension() == ".txt";
  EXPECT_EQ(logged, int(moe.size())) << "one routing log per MoE layer, none for dense layers";
  for (int layer : moe) EXPECT_TRUE(fs::exists(dir / "scores/rank_0" / ("expert_weights_" + std::to_string(layer) + ".txt")));

  std::string flags = std::string(row.shared_experts ? " --train-shared-experts" : "") +
                      (row.non_expert_modules ? " --train-non-expert-modules" : "");
  ASSERT_EQ(test::run(bin + " select --scores " + (dir / "scores").string() + " --top-p 0.3 --output " +
                      (dir / "expert_config.json").string() + flags),
            0);
  auto sel = ExpertSelection::from_json_file(dir / "expert_config.json");
  EXPECT_EQ(sel.shared_experts, row.shared_experts);
  EXPECT_EQ(int(sel.experts.size()), int(moe.size()));

  ASSERT_EQ(test::run(bin + " train" + common + " --expert-config " + (dir / "expert_config.json").string() + " --output " +
                      (dir / "run").string() + " --max-steps 3 --global-batch-size 4 --micro-batch-size 2 --max-length 64 "
                      "--learning-rate 1e-2 --save-full"),
            0);

  // What changed is exactly what was selected; the adapter holds exactly that.
  auto before = tensors_of(model_dir), after = tensors_of(dir / "run/full"), adapter = load_safetensors(dir / "run/adapter/model.safetensors");
  ASSERT_EQ(before.size(), after.size());
  std::set<std::string> selected_expert_tensors;
  for (auto& [layer, ids] : sel.experts)
    for (int e : ids)
      for (auto& [name, t] : before)
        if (name.find("layers." + std::to_string(layer) + ".") != std::string::npos &&
            name.find(".experts." + std::to_string(e) + ".") != std::string::npos)
          selected_expert_tensors.insert(name);
  EXPECT_FALSE(selected_expert_tensors.empty());
  int shared_changed = 0, other_changed = 0;
  for (auto& [name, t] : before) {
    const bool changed = !at::equal(after.at(name), t);
    const bool is_routed = name.find(".experts.") != std::string::npos && name.find("shared") == std::string::npos;
    const bool is_shared = !row.shared_prefix.empty() && name.find(row.shared_prefix) != std::string::npos;
    if (selected_expert_tensors.count(name)) {
      EXPECT_TRUE(changed) << name << " was selected but did not change";
    } else if (is_routed) {
      EXPECT_FALSE(changed) << name << " is a frozen expert but changed";
    } else if (is_shared) {
      EXPECT_EQ(changed, row.shared_experts) << name;
      shared_changed += changed;
    } else {
      // attention, norms, routers, embeddings, lm_head (the pad row of an embedding may stay)
      if (!row.non_expert_modules) EXPECT_FALSE(changed) << name << " is a non-expert weight but changed";
      other_changed += changed;
    }
    EXPECT_EQ(adapter.count(name) > 0, changed || selected_expert_tensors.count(name)) << name;
  }
  if (row.shared_experts) EXPECT_GT(shared_changed, 0);
  if (row.non_expert_modules) EXPECT_GT(other_changed, 5);
  for (auto& [name, t] : adapter) EXPECT_TRUE(at::equal(t, after.at(name))) << name;

  // merge = --save-full; transformers loads it with esft's logits.
  ASSERT_EQ(test::run(bin + " merge --model " + model_dir.string() + " --adapter " + (dir / "run/adapter").string() +
                      " --output " + (dir / "merged").string()),
            0);
  auto merged = tensors_of(dir / "merged");
  ASSERT_EQ(merged.size(), after.size());
  for (auto& [n, t] : after) EXPECT_TRUE(at::equal(merged.at(n), t)) << n;
  const std::string ids = "[[5, 17, 99, 4, 33, 120, 7, 64, 2, 81]]";
  test::run_python("hf_logits.py", (dir / "merged").string() + " '" + ids + "' " + (dir / "hf.safetensors").string());
  auto ref = load_safetensors(dir / "hf.safetensors");
  auto trained = load_model(dir / "merged", LoadOptions{"cpu", at::kFloat});
  at::NoGradGuard ng;
  auto ours = trained->forward(Batch{ref["input_ids"], {}, {}, {}}, {}).logits;
  EXPECT_LT((ours - ref["logits"]).abs().max().item<double>(), 1e-4);
}

INSTANTIATE_TEST_SUITE_P(Families, FamilyPipeline, ::testing::ValuesIn(kRows),
                         [](const ::testing::TestParamInfo<Row>& i) { return i.param.family; });

}  // namespace
