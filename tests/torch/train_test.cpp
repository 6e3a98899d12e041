// Training invariants through the esft binary on the bundled tiny Qwen3-MoE: frozen weights
// bitwise unchanged, selected experts changed, the loss falls, resume equals an uninterrupted
// run, and the full checkpoint loads in transformers with matching logits.
#include <gtest/gtest.h>

#include <fstream>
#include <set>

#include "esft/model.h"
#include "esft/tensor_io.h"
#include "test_util.h"

using namespace esft;

namespace {

const fs::path kModel = test::source_dir() / "tests/data/tiny-qwen3-moe";
const fs::path kData = test::source_dir() / "tests/data/tiny-intent-train.tokens.jsonl";

std::map<std::string, at::Tensor> checkpoint_tensors(const fs::path& dir) {
  Checkpoint c(dir);
  std::map<std::string, at::Tensor> out;
  for (auto& n : c.names()) out[n] = load_tensor(c, n);
  return out;
}

fs::path write_config(const fs::path& dir, const std::string& json) {
  auto p = dir / "expert_config.json";
  write_file_atomic(p, json);
  return p;
}

int train(const std::string& args) {
  return test::run(test::esft_bin() + " train --model " + kModel.string() + " --device cpu " + args);
}

std::vector<nlohmann::json> metrics(const fs::path& run) { return test::read_jsonl(run / "metrics.jsonl"); }

TEST(Train, FrozenUnchangedSelectedChangedAdapterExact) {
  auto dir = test::temp_dir("train-frozen");
  auto cfg = write_config(dir, R"({"experts": {"1": [0, 7], "3": [12]}, "shared_experts": false, "non_expert_modules": false})");
  ASSERT_EQ(train("--data " + kData.string() + " --expert-config " + cfg.string() + " --output " + (dir / "run").string() +
                  " --max-steps 4 --micro-batch-size 2 --global-batch-size 4 --max-length 128 --learning-rate 1e-2 --save-full"
                  " --eval-dataset " + (test::source_dir() / "tests/data/tiny-intent-eval.tokens.jsonl").string() +
                  " --eval-steps 3"),
            0);
  // Evaluation every 3 steps and at the end; one metrics record per step.
  auto m = metrics(dir / "run");
  ASSERT_EQ(m.size(), 4u);
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(m[i]["step"], i + 1);
    EXPECT_EQ(m[i].contains("eval_loss"), i == 2 || i == 3) << m[i].dump();
  }
  EXPECT_GT(m[2]["eval_loss"].get<double>(), 0);
  EXPECT_NE(m[2]["eval_loss"], m[3]["eval_loss"]) << "the weights changed between the two evaluations";
  auto before = checkpoint_tensors(kModel), after = checkpoint_tensors(dir / "run/full");
  ASSERT_EQ(before.size(), after.size());
  std::set<std::string> selected;
  for (auto [l, e] : std::vector<std::pair<int, int>>{{1, 0}, {1, 7}, {3, 12}})
    for (auto p : {"gate", "up", "down"})
      selected.insert("model.layers." + std::to_string(l) + ".mlp.experts." + std::to_string(e) + "." + p + "_proj.weight");
  for (auto& [name, t] : before) {
    ASSERT_TRUE(after.count(name)) << name;
    EXPECT_EQ(after[name].scalar_type(), t.scalar_type()) << name;
    if (selected.count(name))
      EXPECT_FALSE(at::equal(after[name], t)) << name << " was selected but did not change";
    else
      EXPECT_TRUE(at::equal(after[name], t)) << name << " is frozen but changed";
  }
  auto adapter = load_safetensors(dir / "run/adapter/model.safetensors");
  std::set<std::string> names;
  for (auto& [n, t] : adapter) {
    names.insert(n);
    EXPECT_TRUE(at::equal(t, after[n])) << n;
  }
  EXPECT_EQ(names, selected);
  EXPECT_EQ(read_file(dir / "run/adapter/expert_config.json"), read_file(cfg));

  // esft merge gives the same checkpoint as --save-full.
  ASSERT_EQ(test::run(test::esft_bin() + " merge --model " + kModel.string() + " --adapter " + (dir / "run/adapter").string() +
                      " --output " + (dir / "merged").string()),
            0);
  auto merged = checkpoint_tensors(dir / "merged");
  for (auto& [n, t] : after) EXPECT_TRUE(at::equal(merged[n], t)) << n;

  // Sharded output (model-0000i-of-0000n.safetensors + index) that transformers loads.
  ASSERT_EQ(test::run(test::esft_bin() + " merge --model " + kModel.string() + " --adapter " + (dir / "run/adapter").string() +
                      " --output " + (dir / "sharded").string() + " --max-shard-size 500KB"),
            0);
  EXPECT_TRUE(fs::exists(dir / "sharded/model.safetensors.index.json"));
  EXPECT_FALSE(fs::exists(dir / "sharded/model.safetensors"));
  EXPECT_TRUE(fs::exists(dir / "sharded/model-00001-of-00002.safetensors"));
  const std::string ids = "[[0, 55, 85, 271, 28, 223, 1]]";
  test::run_python("hf_logits.py", (dir / "sharded").string() + " '" + ids + "' " + (dir / "hf_sharded.safetensors").string());
  test::run_python("hf_logits.py", (dir / "merged").string() + " '" + ids + "' " + (dir / "hf_merged.safetensors").string());
  EXPECT_TRUE(at::equal(load_safetensors(dir / "hf_sharded.safetensors")["logits"],
                        load_safetensors(dir / "hf_merged.safetensors")["logits"]));
}

TEST(Train, FullCheckpointLoadsInTransformersWithMatchingLogits) {
  auto dir = test::temp_dir("train-hf");
  auto cfg = write_config(dir, R"({"experts": {"2": [3, 4, 5]}, "shared_experts": false, "non_expert_modules": true})");
  ASSERT_EQ(train("--data " + kData.string() + " --expert-config " + cfg.string() + " --output " + (dir / "run").string() +
                  " --max-steps 2 --max-length 64 --learning-rate 1e-2 --save-full"),
            0);
  const std::string ids = "[[0, 55, 85, 271, 28, 223, 309, 274, 299, 297, 1]]";
  test::run_python("hf_logits.py", (dir / "run/full").string() + " '" + ids + "' " + (dir / "hf.safetensors").string());
  auto ref = load_safetensors(dir / "hf.safetensors");
  auto model = load_model(dir / "run/full", LoadOptions{"cpu", at::kFloat});
  at::NoGradGuard ng;
  auto ours = model->forward(Batch{ref["input_ids"], {}, {}, {}}, {}).logits;
  EXPECT_LT((ours - ref["logits"]).abs().max().item<double>(), 1e-4);
  // non_expert_modules: embeddings, attention and norms trained too.
  auto before = checkpoint_tensors(kModel), after = checkpoint_tensors(dir / "run/full");
  EXPECT_FALSE(at::equal(before["model.layers.0.self_attn.q_proj.weight"], after["model.layers.0.self_attn.q_proj.weight"]));
  EXPECT_TRUE(at::equal(before["model.layers.2.mlp.experts.0.up_proj.weight"], after["model.layers.2.mlp.experts.0.up_proj.weight"]));
}

TEST(Train, LossFallsOnMemorisationSet) {
  auto dir = test::temp_dir("train-memorise");
  {
    std::ifstream in(kData);
    std::ofstream out(dir / "four.jsonl");
    std::string l;
    for (int i = 0; i < 4 && std::getline(in, l); ++i) out << l << "\n";
  }
  auto run = [&](const std::string& name, const std::string& cfg_json, double lr) {
    auto cfg = write_config(dir / name, cfg_json);
    EXPECT_EQ(train("--data " + (dir / "four.jsonl").string() + " --expert-config " + cfg.string() + " --output " +
                    (dir / name / "run").string() + " --max-steps 40 --micro-batch-size 4 --packing none --learning-rate " +
                    std::to_string(lr)),
              0);
    auto m = metrics(dir / name / "run");
    EXPECT_EQ(m.size(), 40u);
    return std::make_pair(m.front()["loss"].get<double>(), m.back()["loss"].get<double>());
  };
  fs::create_directories(dir / "experts");
  fs::create_directories(dir / "all");
  // ESFT proper: a quarter of the experts of every MoE layer; capacity is small in this tiny model.
  auto [f1, l1] = run("experts", R"({"experts": {"1": [0, 1, 2, 3], "2": [0, 1, 2, 3], "3": [0, 1, 2, 3]}})", 2e-2);
  EXPECT_LT(l1, 0.85 * f1) << "experts only: loss " << f1 << " -> " << l1;
  // With the non-expert modules too, four samples are memorised.
  auto [f2, l2] = run("all", R"({"experts": {"1": [0, 1, 2, 3]}, "non_expert_modules": true})", 1e-2);
  EXPECT_LT(l2, 0.1 * f2) << "with non-expert modules: loss " << f2 << " -> " << l2;
}

TEST(Train, ResumeEqualsUninterruptedRun) {
  auto dir = test::temp_dir("train-resume");
  auto cfg = write_config(dir, R"({"experts": {"1": [5], "2": [9, 10]}})");
  std::string common = "--data " + kData.string() + " --expert-config " + cfg.string() +
                       " --max-steps 6 --micro-batch-size 2 --global-batch-size 4 --max-length 96 --learning-rate 5e-3 "
                       "--lr-scheduler cosine --warmup-ratio 0.2 --packing causal --save-steps 3 --save-total-limit 1";
  ASSERT_EQ(train(common + " --output " + (dir / "a").string()), 0);
  ASSERT_TRUE(fs::exists(dir / "a/checkpoints/step-6"));
  EXPECT_FALSE(fs::exists(dir / "a/checkpoints/step-3")) << "--save-total-limit 1 keeps only the newest";
  // An interrupted run: stop after 3 steps, then continue from its checkpoint.
  ASSERT_EQ(train(common + " --output " + (dir / "b").string() + " --stop-after 3"), 0);
  EXPECT_FALSE(fs::exists(dir / "b/adapter")) << "an interrupted run has no final adapter yet";
  ASSERT_TRUE(fs::exists(dir / "b/checkpoints/step-3"));
  // 4 rows a step: after step 3 the next batch starts at row 12 of epoch 0's order.
  auto state = nlohmann::json::parse(read_file(dir / "b/checkpoints/step-3/trainer_state.json"));
  EXPECT_EQ(state["step"], 3);
  EXPECT_EQ(state["epoch"], 0);
  EXPECT_EQ(state["row_in_epoch"], 12);
  EXPECT_EQ(state["data_order"]["seed"], 5934875);
  EXPECT_EQ(state["lr_schedule"]["warmup_steps"], 2);
  EXPECT_EQ(state["lr_schedule"]["total_steps"], 6);
  fs::copy(dir / "b/checkpoints/step-3", dir / "step-3-copy", fs::copy_options::recursive);
  ASSERT_EQ(train(common + " --output " + (dir / "b").string() + " --resume " + (dir / "b").string()), 0);
  auto a = load_safetensors(dir / "a/adapter/model.safetensors"), b = load_safetensors(dir / "b/adapter/model.safetensors");
  ASSERT_EQ(a.size(), b.size());
  for (auto& [n, t] : a) EXPECT_TRUE(at::equal(t, b[n])) << n << " differs after resume";
  auto sa = load_safetensors(dir / "a/checkpoints/step-6/train_state.safetensors"),
       sb = load_safetensors(dir / "b/checkpoints/step-6/train_state.safetensors");
  for (auto& [n, t] : sa) EXPECT_TRUE(at::equal(t, sb[n])) << n << " (fp32 master / optimizer state) differs after resume";
  auto check_metrics = [&](const std::string& what) {
    auto ma = metrics(dir / "a"), mb = metrics(dir / "b");
    ASSERT_EQ(ma.size(), 6u);
    ASSERT_EQ(mb.size(), 6u) << what;
    for (size_t i = 0; i < 6; ++i)
      for (auto k : {"step", "loss", "grad_norm", "lr", "loss_tokens"}) EXPECT_EQ(ma[i][k], mb[i][k]) << what << " step " << i + 1 << " " << k;
  };
  check_metrics("after resume");

  // Resuming the finished run again from the explicit step-3 directory redoes steps 4-6: the
  // metrics of those steps are replaced, not duplicated, and the adapter is the same again.
  ASSERT_EQ(train(common + " --output " + (dir / "b").string() + " --resume " + (dir / "step-3-copy").string()), 0);
  check_metrics("after a second resume");
  b = load_safetensors(dir / "b/adapter/model.safetensors");
  for (auto& [n, t] : a) EXPECT_TRUE(at::equal(t, b[n])) << n << " differs after the second resume";

  // Changing a flag that decides the trajectory is allowed but named.
  auto log = dir / "warn.txt";
  ASSERT_EQ(train(common + " --output " + (dir / "c").string() + " --resume " + (dir / "step-3-copy").string() +
                  " --seed 7 2> " + log.string()),
            0);
  EXPECT_NE(read_file(log).find("data_order.seed was 5934875"), std::string::npos) << read_file(log);
}

TEST(Train, GradientAccumulationIsExact) {
  // HF num_items_in_batch semantics: 4 micro batches of 1 row give the gradient of one batch of 4
  // rows (token-sum / all label tokens of the step), even though the rows hold different numbers
  // of label tokens. Averaging per micro batch would give another gradient norm.
  auto dir = test::temp_dir("train-accum");
  auto cfg = write_config(dir, R"({"experts": {"1": [0, 1], "3": [2]}})");
  std::string common = "--data " + kData.string() + " --expert-config " + cfg.string() +
                       " --max-steps 2 --global-batch-size 4 --packing none --learning-rate 1e-3 --max-grad-norm 0";
  ASSERT_EQ(train(common + " --micro-batch-size 1 --output " + (dir / "accum").string()), 0);
  ASSERT_EQ(train(common + " --micro-batch-size 4 --output " + (dir / "whole").string()), 0);
  auto ma = metrics(dir / "accum"), mw = metrics(dir / "whole");
  ASSERT_EQ(ma.size(), 2u);
  ASSERT_EQ(mw.size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(ma[i]["loss_tokens"], mw[i]["loss_tokens"]);
    for (auto k : {"loss", "grad_norm"}) {
      double x = ma[i][k].get<double>(), y = mw[i][k].get<double>();
      EXPECT_NEAR(x, y, 1e-5 * std::abs(y)) << k << " at step " << i + 1;
    }
  }
}

TEST(Train, ClearErrors) {
  auto dir = test::temp_dir("train-errors");
  auto log = dir / "err.txt";
  auto bad = write_config(dir, R"({"experts": {"0": [1]}})");  // layer 0 is dense in the tiny model
  EXPECT_NE(train("--data " + kData.string() + " --expert-config " + bad.string() + " --output " + (dir / "r").string() +
                  " --max-steps 1 2> " + log.string()),
            0);
  EXPECT_NE(read_file(log).find("layer 0"), std::string::npos) << read_file(log);
  auto dup = write_config(dir, R"({"experts": {"1": [1, 1]}})");
  EXPECT_NE(train("--data " + kData.string() + " --expert-config " + dup.string() + " --output " + (dir / "r").string() +
                  " 2> " + log.string()),
            0);
  EXPECT_NE(read_file(log).find("twice"), std::string::npos) << read_file(log);
  EXPECT_NE(train("--data " + kData.string() + " --expert-config " + dup.string() + " --output x --bogus-flag 2> " + log.string()), 0);
  EXPECT_NE(train("--data " + kData.string() + " --expert-config " + bad.string() + " --output " + (dir / "r").string() +
                  " --global-batch-size 3 --micro-batch-size 2 2> " + log.string()),
            0);
  EXPECT_NE(read_file(log).find("multiple"), std::string::npos) << read_file(log);

  // Expert ids beyond the model's 16 experts: the error names the file and the key.
  fs::create_directories(dir / "range");
  auto range = write_config(dir / "range", R"({"experts": {"2": [3, 16]}})");
  EXPECT_NE(train("--data " + kData.string() + " --expert-config " + range.string() + " --output " + (dir / "r").string() +
                  " --max-steps 1 2> " + log.string()),
            0);
  EXPECT_NE(read_file(log).find(range.string() + ": experts[\"2\"] holds expert 16"), std::string::npos) << read_file(log);
  // Missing files name the flag and the path.
  EXPECT_NE(train("--data " + (dir / "nope.jsonl").string() + " --expert-config " + range.string() + " --output " +
                  (dir / "r").string() + " 2> " + log.string()),
            0);
  EXPECT_NE(read_file(log).find("--data " + (dir / "nope.jsonl").string()), std::string::npos) << read_file(log);
  EXPECT_NE(test::run(test::esft_bin() + " merge --model " + kModel.string() + " --adapter " + (dir / "none").string() +
                      " --output " + (dir / "m").string() + " 2> " + log.string()),
            0);
  EXPECT_NE(read_file(log).find("--adapter " + (dir / "none").string()), std::string::npos) << read_file(log);
  // A bad flag value fails before anything loads.
  EXPECT_NE(train("--data " + kData.string() + " --expert-config " + range.string() + " --output " + (dir / "r").string() +
                  " --lr-scheduler cosin 2> " + log.string()),
            0);
  EXPECT_NE(read_file(log).find("--lr-scheduler \"cosin\""), std::string::npos) << read_file(log);
  EXPECT_FALSE(fs::exists(dir / "r/metrics.jsonl"));
  // --resume of a directory without checkpoints.
  auto ok = write_config(dir / "range", R"({"experts": {"2": [3]}})");
  EXPECT_NE(train("--data " + kData.string() + " --expert-config " + ok.string() + " --output " + (dir / "r").string() +
                  " --resume " + (dir / "range").string() + " 2> " + log.string()),
            0);
  EXPECT_NE(read_file(log).find("--resume " + (dir / "range").string() + ": no checkpoint"), std::string::npos) << read_file(log);
}

TEST(Train, HelpDocumentsDefaults) {
  auto dir = test::temp_dir("train-help");
  ASSERT_EQ(test::run(test::esft_bin() + " train --help > " + (dir / "train.txt").string()), 0);
  ASSERT_EQ(test::run(test::esft_bin() + " merge --help > " + (dir / "merge.txt").string()), 0);
  auto help = read_file(dir / "train.txt");
  for (auto s : {"--adam-beta2 arg", "(default: 0.95)", "(default: 5934875)", "(default: 4096)", "(default: document)",
                 "--max-grad-norm", "--resume", "--save-total-limit", "--warmup-ratio", "--min-lr", "--eval-dataset"})
    EXPECT_NE(help.find(s), std::string::npos) << s;
  EXPECT_NE(read_file(dir / "merge.txt").find("--adapter"), std::string::npos);
}

}  // namespace
