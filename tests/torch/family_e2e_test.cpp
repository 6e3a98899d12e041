// End to end per family through the esft binary, on a tiny random checkpoint of tiny_models.py:
// score -> select -> train -> merge.
// - score writes a routing log for every MoE layer and none for dense layers; it holds the routed
//   experts only (top-k distinct ids below the routed expert count, one weight each), with the
//   weights that multiply the expert outputs (renormalised routers: each token's sum is the
//   routed scaling factor);
// - "shared_experts": true trains exactly the selected and the shared experts, "non_expert_modules":
//   true exactly the selected experts and everything that is no expert (attention, norms,
//   routers, dense MLPs, embeddings, lm_head), never a selection bias; the adapter holds exactly
//   the trained tensors and everything else stays bitwise;
// - the merged checkpoint loads in transformers with esft's logits.
// Block-FP8 checkpoints (DeepSeek-V3) load dequantized exactly as a Python dequantization and
// export in bf16. A family adds a row to kFamilies.
#include <gtest/gtest.h>

#include <fstream>
#include <regex>
#include <set>
#include <sstream>

#include "esft/model.h"
#include "esft/tensor_io.h"
#include "test_util.h"

using namespace esft;

namespace {

struct FamilyCase {
  std::string family, config;     // a tiny_models.py entry
  size_t shared_tensors_per_layer;  // what "shared_experts": true trains in each MoE layer
  double token_weight_sum = 0;    // each token's logged weights sum to this (renormalised routers); 0: no fixed sum
};
void PrintTo(const FamilyCase& c, std::ostream* os) { *os << c.family << "/" << c.config; }

const FamilyCase kFamilies[] = {
    {"qwen3_moe", "base", 0, 1.0},    // renormalised (norm_topk_prob)
    {"qwen2_moe", "base", 4},         // shared_expert gate, up, down and shared_expert_gate; raw top-k weights
    {"mixtral", "base", 0, 1.0},      // always renormalised
    {"olmoe", "clip", 0, 1.0},        // renormalised
    {"deepseek_v2", "lite", 3},       // gate, up, down of mlp.shared_experts
    {"deepseek_v3", "base", 3, 2.5},  // renormalised, routed_scaling_factor 2.5
    {"glm4_moe", "base", 3, 2.5},
};

std::map<std::string, at::Tensor> checkpoint_tensors(const fs::path& dir) {
  Checkpoint c(dir);
  std::map<std::string, at::Tensor> out;
  for (auto& n : c.names()) out[n] = load_tensor(c, n);
  return out;
}

std::vector<std::string> lines_of(const fs::path& p) {
  std::ifstream in(p);
  std::vector<std::string> out;
  for (std::string l; std::getline(in, l);) out.push_back(l);
  return out;
}

// The bundled tokenized intent data with ids folded into the model's vocabulary.
fs::path write_data(const fs::path& dir, int64_t vocab, size_t n_lines) {
  auto rows = test::read_jsonl(test::source_dir() / "tests/data/tiny-intent-train.tokens.jsonl");
  std::string out;
  for (size_t i = 0; i < std::min(n_lines, rows.size()); ++i) {
    auto r = rows[i];
    for (auto& id : r["input_ids"]) id = id.get<int64_t>() % vocab;
    if (r.contains("labels"))
      for (auto& id : r["labels"])
        if (id.get<int64_t>() >= 0) id = id.get<int64_t>() % vocab;
    out += r.dump() + "\n";
  }
  write_file_atomic(dir / "data.jsonl", out);
  return dir / "data.jsonl";
}

// Which expert_config.json switch trains a checkpoint tensor.
enum class Kind { RoutedExpert, SharedExpert, SelectionBias, NonExpert };
Kind kind_of(const std::string& name, int* layer, int* expert) {
  static const std::regex routed(R"(model\.layers\.(\d+)\.\w+\.experts\.(\d+)\..*)");
  std::smatch m;
  if (std::regex_match(name, m, routed)) {
    *layer = std::stoi(m[1]), *expert = std::stoi(m[2]);
    return Kind::RoutedExpert;
  }
  if (name.find(".shared_expert") != std::string::npos) return Kind::SharedExpert;  // shared_experts, shared_expert(_gate)
  if (name.find("e_score_correction_bias") != std::string::npos) return Kind::SelectionBias;
  return Kind::NonExpert;
}

// The checkpoint tensors an expert config trains (none under mtp_prefix: esft leaves those layers).
std::set<std::string> trained_by(const std::map<std::string, at::Tensor>& base, const nlohmann::json& cfg,
                                 const std::string& mtp_prefix) {
  std::set<std::string> out;
  for (auto& [name, t] : base) {
    if (name.compare(0, mtp_prefix.size(), mtp_prefix) == 0) continue;
    int layer = -1, expert = -1;
    auto k = kind_of(name, &layer, &expert);
    bool trained = false;
    if (k == Kind::RoutedExpert) {
      auto key = std::to_string(layer);
      if (cfg["experts"].contains(key))
        for (auto& e : cfg["experts"][key]) trained |= e.get<int>() == expert;
    } else if (k == Kind::SharedExpert) {
      trained = cfg.value("shared_experts", false);
    } else if (k == Kind::NonExpert) {
      trained = cfg.value("non_expert_modules", false);
    }
    if (trained) out.insert(name);
  }
  return out;
}

// Every tensor of the base (but the ones esft knowingly drops) is in `after`; exactly `trained` changed.
void expect_changed_exactly(const std::map<std::string, at::Tensor>& base, const std::map<std::string, at::Tensor>& after,
                            const std::set<std::string>& trained, const std::string& mtp_prefix, const std::string& what) {
  size_t compared = 0;
  for (auto& [name, t] : base) {
    if (name.compare(0, mtp_prefix.size(), mtp_prefix) == 0) {
      EXPECT_FALSE(after.count(name)) << what << ": multi-token-prediction tensor " << name << " exported";
      continue;
    }
    ASSERT_TRUE(after.count(name)) << what << ": " << name << " missing";
    EXPECT_EQ(after.at(name).scalar_type(), t.scalar_type()) << what << ": " << name;
    if (trained.count(name))
      EXPECT_FALSE(at::equal(after.at(name), t)) << what << ": " << name << " is trained but did not change";
    else
      EXPECT_TRUE(at::equal(after.at(name), t)) << what << ": " << name << " is frozen but changed";
    ++compared;
  }
  EXPECT_EQ(after.size(), compared) << what << ": tensors the base does not have";
}

int esft(const std::string& args) { return test::run(test::esft_bin() + " " + args); }

class FamilyE2E : public ::testing::TestWithParam<FamilyCase> {};

TEST_P(FamilyE2E, ScoreSelectTrainMerge) {
  const auto& c = GetParam();
  auto dir = test::temp_dir("e2e-" + c.family + "-" + c.config);
  const auto model = dir / "model";
  test::run_python("tiny_models.py", "--family " + c.family + " --config " + c.config + " --out " + model.string());
  auto config = nlohmann::json::parse(read_file(model / "config.json"));
  const auto data = write_data(dir, config["vocab_size"].get<int64_t>(), 32);
  const std::string common = " --model " + model.string() + " --data " + data.string() + " --device cpu";
  const int64_t n_layers = config["num_hidden_layers"].get<int64_t>();
  const std::string mtp_prefix = "model.layers." + std::to_string(n_layers) + ".";

  auto loaded = load_model(model, LoadOptions{"cpu", at::kFloat});
  const auto moe = loaded->moe_layers();
  const int E = loaded->n_routed_experts(), K = loaded->top_k();
  loaded.reset();

  // score: one log per MoE layer, routed experts only, with their gate weights.
  ASSERT_EQ(esft("score" + common + " --output " + (dir / "scores").string()), 0);
  for (int64_t l = 0; l < n_layers; ++l) {
    auto f = dir / "scores/rank_0" / ("expert_weights_" + std::to_string(l) + ".txt");
    bool is_moe = std::find(moe.begin(), moe.end(), l) != moe.end();
    ASSERT_EQ(fs::exists(f), is_moe) << f;
    if (!is_moe) continue;
    auto lines = lines_of(f);
    ASSERT_FALSE(lines.empty()) << f;
    for (auto& line : lines) {
      auto sep = line.find("\t\t");
      ASSERT_NE(sep, std::string::npos) << f;
      std::vector<int> ids;
      std::vector<double> ws;
      std::istringstream a(line.substr(0, sep)), b(line.substr(sep + 2));
      for (int x; a >> x;) ids.push_back(x);
      for (double x; b >> x;) ws.push_back(x);
      ASSERT_EQ(ids.size(), ws.size()) << f;
      ASSERT_EQ(ids.size() % K, 0u) << f;
      for (size_t t = 0; t < ids.size(); t += K) {
        std::set<int> token_ids(ids.begin() + t, ids.begin() + t + K);
        EXPECT_EQ(token_ids.size(), size_t(K)) << f << ": an expert twice for one token";
        EXPECT_GE(*token_ids.begin(), 0);
        EXPECT_LT(*token_ids.rbegin(), E) << f << ": only routed experts are logged";
        double sum = 0;
        for (int j = 0; j < K; ++j) {
          EXPECT_GE(ws[t + j], 0.0) << f;
          sum += ws[t + j];
        }
        if (c.token_weight_sum > 0) EXPECT_NEAR(sum, c.token_weight_sum, K * 5e-5 + 1e-9) << f;
      }
    }
  }

  // select, then train the shared experts in one run and the non-expert modules in another.
  for (auto [name, flag] : {std::pair{"shared", "--train-shared-experts"}, {"rest", "--train-non-expert-modules"}})
    ASSERT_EQ(esft("select --scores " + (dir / "scores").string() + " --top-p 0.3 " + flag + " --output " +
                   (dir / (std::string(name) + ".json")).string()),
              0);
  auto shared_cfg = nlohmann::json::parse(read_file(dir / "shared.json"));
  auto rest_cfg = nlohmann::json::parse(read_file(dir / "rest.json"));
  ASSERT_EQ(shared_cfg["experts"].size(), moe.size());
  EXPECT_TRUE(shared_cfg["shared_experts"].get<bool>());
  EXPECT_TRUE(rest_cfg["non_expert_modules"].get<bool>());
  const std::string train = "train" + common + " --max-steps 2 --micro-batch-size 2 --global-batch-size 4 --max-length 64 "
                            "--learning-rate 1e-2 --expert-config ";
  ASSERT_EQ(esft(train + (dir / "shared.json").string() + " --output " + (dir / "a").string() + " --save-full"), 0);
  ASSERT_EQ(esft(train + (dir / "rest.json").string() + " --output " + (dir / "b").string()), 0);
  ASSERT_EQ(esft("merge --model " + model.string() + " --adapter " + (dir / "b/adapter").string() + " --output " +
                 (dir / "merged").string()),
            0);

  const auto base = checkpoint_tensors(model);
  for (auto [run, cfg, full] : {std::tuple{"a", shared_cfg, dir / "a/full"}, {"b", rest_cfg, dir / "merged"}}) {
    auto trained = trained_by(base, cfg, mtp_prefix);
    ASSERT_FALSE(trained.empty());
    expect_changed_exactly(base, checkpoint_tensors(full), trained, mtp_prefix, run);
    std::set<std::string> adapter;
    for (auto& [n, t] : load_safetensors(dir / run / "adapter/model.safetensors")) adapter.insert(n);
    EXPECT_EQ(adapter, trained) << run << ": the adapter holds exactly the trained tensors";
  }
  size_t n_shared = 0;
  for (auto& n : trained_by(base, shared_cfg, mtp_prefix)) n_shared += n.find(".shared_expert") != std::string::npos;
  EXPECT_EQ(n_shared, c.shared_tensors_per_layer * moe.size()) << "every MoE layer's shared experts are trained";

  // transformers loads the merged checkpoint and computes esft's logits.
  const std::string ids = "[[3, 55, 85, 27, 28, 123, 109, 74, 99, 97, 1]]";
  test::run_python("hf_logits.py", (dir / "merged").string() + " '" + ids + "' " + (dir / "hf.safetensors").string());
  auto ref = load_safetensors(dir / "hf.safetensors");
  auto merged = load_model(dir / "merged", LoadOptions{"cpu", at::kFloat});
  at::NoGradGuard ng;
  auto ours = merged->forward(Batch{ref["input_ids"], {}, {}, {}}, {}).logits;
  EXPECT_LT((ours - ref["logits"]).abs().max().item<double>(), 1e-4);
}

INSTANTIATE_TEST_SUITE_P(Families, FamilyE2E, ::testing::ValuesIn(kFamilies),
                         [](const ::testing::TestParamInfo<FamilyCase>& i) { return i.param.family + "_" + i.param.config; });

// A tiny DeepSeek-V3 as block-FP8 (16x12 blocks, so most scale grids end in partial blocks) and
// its Python dequantization, both in bf16 otherwise.
struct Fp8Checkpoints {
  fs::path dir, fp8, dequant;
};
Fp8Checkpoints make_fp8(const std::string& name) {
  Fp8Checkpoints c{test::temp_dir(name)};
  c.fp8 = c.dir / "fp8", c.dequant = c.dir / "dequant";
  test::run_python("tiny_models.py", "--family deepseek_v3 --config base --out " + (c.dir / "src").string());
  test::run_python("fp8_checkpoint.py", (c.dir / "src").string() + " " + c.fp8.string() + " " + c.dequant.string() +
                                            " --block 16 12");
  return c;
}

TEST(BlockFp8, LoadsAsThePythonDequantization) {
  auto c = make_fp8("fp8-load");
  auto fp8 = load_model(c.fp8, LoadOptions{"cpu", at::kFloat}), ref = load_model(c.dequant, LoadOptions{"cpu", at::kFloat});
  std::map<std::string, at::Tensor> a, b;
  for (auto& t : fp8->full_tensors()) a[t.name] = t.tensor;
  for (auto& t : ref->full_tensors()) b[t.name] = t.tensor;
  ASSERT_EQ(a.size(), b.size());
  for (auto& [n, t] : b) {
    ASSERT_TRUE(a.count(n)) << n;
    EXPECT_EQ(a[n].scalar_type(), t.scalar_type()) << n << ": exported in the dequantized dtype";
    EXPECT_TRUE(at::equal(a[n], t)) << n;
  }
  EXPECT_EQ(a.at("model.layers.0.self_attn.kv_a_proj_with_mqa.weight").scalar_type(), at::kBFloat16);
  at::NoGradGuard ng;
  auto ids = at::randint(0, 128, {2, 9}, at::kLong);
  EXPECT_TRUE(at::equal(fp8->forward(Batch{ids, {}, {}, {}}, {}).logits, ref->forward(Batch{ids, {}, {}, {}}, {}).logits));

  // A scale grid that does not fit the weight, and an FP8 weight without scales, are named.
  auto tensors = load_safetensors(c.fp8 / "model.safetensors");
  const std::string w = "model.layers.0.self_attn.kv_a_proj_with_mqa.weight";
  auto expect_error = [&](const std::string& needle) {
    try {
      load_model(c.fp8, LoadOptions{"cpu", at::kFloat});
      ADD_FAILURE() << "expected an error naming " << needle;
    } catch (const std::exception& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  auto save = [&](const std::map<std::string, at::Tensor>& m) {
    std::vector<HfTensor> v;
    for (auto& [n, t] : m) v.push_back({n, t});
    save_safetensors(c.fp8 / "model.safetensors", v);
  };
  auto bad = tensors;
  bad[w + "_scale_inv"] = at::ones({1, 3});
  save(bad);
  expect_error(w + "_scale_inv has shape [1, 3], expected [2, 3]");
  bad = tensors;
  bad.erase(w + "_scale_inv");
  save(bad);
  expect_error(w + " is F8_E4M3 without a " + w + "_scale_inv");
}

TEST(BlockFp8, TrainedAndMergedInBf16ThatTransformersLoads) {
  auto c = make_fp8("fp8-train");
  const auto data = write_data(c.dir, 128, 16);
  write_file_atomic(c.dir / "cfg.json", R"({"experts": {"1": [0, 3], "2": [5]}, "shared_experts": true, "non_expert_modules": false})");
  ASSERT_EQ(esft("train --model " + c.fp8.string() + " --data " + data.string() + " --device cpu --expert-config " +
                 (c.dir / "cfg.json").string() + " --output " + (c.dir / "run").string() +
                 " --max-steps 2 --max-length 64 --learning-rate 1e-2"),
            0);
  for (auto& [n, t] : load_safetensors(c.dir / "run/adapter/model.safetensors"))
    EXPECT_EQ(t.scalar_type(), at::kBFloat16) << n;
  ASSERT_EQ(esft("merge --model " + c.fp8.string() + " --adapter " + (c.dir / "run/adapter").string() + " --output " +
                 (c.dir / "merged").string()),
            0);
  auto cfg = nlohmann::json::parse(read_file(c.dir / "merged/config.json"));
  EXPECT_FALSE(cfg.contains("quantization_config"));
  // The merge is the dequantized checkpoint with the trained tensors replaced, all in its dtypes.
  auto merged = checkpoint_tensors(c.dir / "merged"), ref = checkpoint_tensors(c.dequant);
  auto trained = trained_by(ref, nlohmann::json::parse(read_file(c.dir / "cfg.json")), "model.layers.3.");
  expect_changed_exactly(ref, merged, trained, "model.layers.3.", "fp8 merge");

  const std::string ids = "[[3, 55, 85, 27, 28, 123, 109, 74, 99, 97, 1]]";
  test::run_python("hf_logits.py", (c.dir / "merged").string() + " '" + ids + "' " + (c.dir / "hf.safetensors").string());
  auto hf = load_safetensors(c.dir / "hf.safetensors");
  auto model = load_model(c.dir / "merged", LoadOptions{"cpu", at::kFloat});
  at::NoGradGuard ng;
  auto ours = model->forward(Batch{hf["input_ids"], {}, {}, {}}, {}).logits;
  EXPECT_LT((ours - hf["logits"]).abs().max().item<double>(), 1e-4);
}

}  // namespace
