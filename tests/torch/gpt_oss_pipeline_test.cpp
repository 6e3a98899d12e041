// GPT-OSS end to end through the esft binary from an MXFP4 checkpoint (tiny, with the real
// GPT-OSS tokenizer): harmony conversations, score -> select -> train -> merge. The adapter holds
// the trained experts in bf16 under HF names; the merged checkpoint (bf16 experts, no
// quantization_config) loads in transformers with logits equal to esft's base + adapter.
#include <gtest/gtest.h>

#include <fstream>

#include "esft/model.h"
#include "esft/safetensors.h"
#include "esft/tensor_io.h"
#include "test_util.h"

using namespace esft;
using json = nlohmann::json;

namespace {

double max_abs_diff(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

// Conversations in the messages format, some with a system prompt, analysis ("thinking") and
// several turns: the harmony renderer turns them into GPT-OSS's chat format.
void write_conversations(const fs::path& path, int n) {
  const char* questions[] = {"What is 2+2?", "Name a colour.", "Translate 'cat' to French.", "Play some jazz",
                             "How tall is Everest?", "Set an alarm for 7"};
  const char* answers[] = {"4", "Blue.", "chat", "Playing jazz.", "8849 m", "Alarm set for 7:00."};
  std::ofstream f(path);
  for (int i = 0; i < n; ++i) {
    json msgs = json::array();
    if (i % 3 == 0) msgs.push_back({{"role", "system"}, {"content", "Answer briefly."}});
    for (int t = 0; t <= i % 2; ++t) {
      int k = (i + 2 * t) % 6;
      msgs.push_back({{"role", "user"}, {"content", questions[k]}});
      json a = {{"role", "assistant"}, {"content", answers[k]}};
      if (i % 4 == 1) a["thinking"] = "The user asks: " + std::string(questions[k]);
      msgs.push_back(a);
    }
    f << json{{"messages", msgs}}.dump() << "\n";
  }
}

TEST(GptOssPipeline, Mxfp4ScoreSelectTrainMerge) {
  auto out = test::temp_dir("gpt-oss-pipeline");
  auto model = out / "model";
  test::run_python("tiny_models.py", "--family gpt_oss --config base --mxfp4 --vocab 201088 --out " + model.string());
  for (auto name : {"tokenizer.json", "tokenizer_config.json"})
    fs::copy_file(test::shared_dir() / "tokenizers/gpt-oss" / name, model / name);
  write_conversations(out / "chat.jsonl", 12);
  const auto bin = test::esft_bin();
  const std::string m = " --model " + model.string() + " --data " + (out / "chat.jsonl").string() + " --device cpu";

  ASSERT_EQ(test::run(bin + " score" + m + " --n-sample-tokens 0 --output " + (out / "scores").string()), 0);
  auto summary = json::parse(read_file(out / "scores/summary.json"));
  EXPECT_EQ(summary["token_scores"].size(), 3u) << "every layer is MoE";
  auto cfg_path = out / "expert_config.json";
  ASSERT_EQ(test::run(bin + " select --scores " + (out / "scores").string() + " --top-p 0.3 --output " + cfg_path.string()), 0);
  ASSERT_EQ(test::run(bin + " train" + m + " --expert-config " + cfg_path.string() + " --output " + (out / "train").string() +
                      " --max-steps 1 --micro-batch-size 4 --max-length 160 --learning-rate 1e-2"),
            0);
  ASSERT_EQ(test::run(bin + " merge --model " + model.string() + " --adapter " + (out / "train/adapter").string() +
                      " --output " + (out / "merged").string()),
            0);

  // The adapter: each selected expert as HF's fused tensors sliced at it, bf16, trained away from the base.
  auto sel = ExpertSelection::from_json_file(cfg_path);
  auto adapter = load_safetensors(out / "train/adapter/model.safetensors");
  size_t n_selected = 0;
  for (auto& [layer, ids] : sel.experts)
    for (int e : ids) {
      ++n_selected;
      auto p = "model.layers." + std::to_string(layer) + ".mlp.experts." + std::to_string(e) + ".";
      for (auto part : {"gate_up_proj", "gate_up_proj_bias", "down_proj", "down_proj_bias"}) {
        ASSERT_TRUE(adapter.count(p + part)) << p + part;
        // weights as transformers dequantizes MXFP4 (bf16), biases in the checkpoint's dtype (fp32 here)
        EXPECT_EQ(adapter[p + part].scalar_type(), std::string(part).find("bias") != std::string::npos ? at::kFloat : at::kBFloat16) << p + part;
      }
      EXPECT_EQ(adapter[p + "gate_up_proj"].sizes(), at::IntArrayRef({32, 64}));
    }
  EXPECT_EQ(adapter.size(), 4 * n_selected) << "nothing but the selected experts";

  // The merged checkpoint: dequantized experts in transformers' bf16 layout, no quantization_config.
  auto merged_cfg = json::parse(read_file(out / "merged/config.json"));
  EXPECT_FALSE(merged_cfg.contains("quantization_config"));
  EXPECT_TRUE(json::parse(read_file(model / "config.json")).contains("quantization_config"));
  Checkpoint merged(out / "merged");
  EXPECT_FALSE(merged.has("model.layers.0.mlp.experts.gate_up_proj_blocks"));
  auto gu = load_tensor(merged, "model.layers.0.mlp.experts.gate_up_proj");
  EXPECT_EQ(gu.scalar_type(), at::kBFloat16);
  EXPECT_EQ(gu.sizes(), at::IntArrayRef({8, 32, 64}));

  // esft: the MXFP4 base with the adapter, in memory; transformers: the merged checkpoint.
  auto ids = at::tensor(std::vector<int64_t>{200006, 1428, 200008, 3575, 553, 17554, 200007, 200006, 173781, 200005,
                                             17196, 200008, 19, 200002},
                        at::kLong)
                 .unsqueeze(0);
  test::run_python("hf_logits.py", (out / "merged").string() + " '" + json(std::vector<std::vector<int64_t>>{
                                                                         std::vector<int64_t>(ids.data_ptr<int64_t>(),
                                                                                              ids.data_ptr<int64_t>() + ids.numel())})
                                                                         .dump() +
                                       "' " + (out / "hf.safetensors").string());
  auto hf = load_safetensors(out / "hf.safetensors")["logits"];
  at::NoGradGuard ng;
  auto ours = load_model(model, LoadOptions{"cpu", at::kFloat});
  ours->configure_training(sel);
  ours->load_adapter_tensors(adapter);
  auto logits = ours->forward(Batch{ids, {}, {}, {}}, {}).logits;
  EXPECT_LT(max_abs_diff(logits, hf), 1e-4) << "esft (MXFP4 base + adapter) vs transformers (merged)";
  auto reloaded = load_model(out / "merged", LoadOptions{"cpu", at::kFloat})->forward(Batch{ids, {}, {}, {}}, {}).logits;
  EXPECT_LT(max_abs_diff(reloaded, logits), 1e-5) << "esft on the merged checkpoint";
  auto untrained = load_model(model, LoadOptions{"cpu", at::kFloat})->forward(Batch{ids, {}, {}, {}}, {}).logits;
  EXPECT_GT(max_abs_diff(untrained, logits), 1e-4) << "training changed the selected experts";
}

}  // namespace
