// The SageMaker entrypoint as users of the AWS ESFT sample run it: the notebook's hyperparameter
// dictionary (all strings), channels model / train / eval (/ expert_config), in a fake /opt/ml
// tree (ESFT_SAGEMAKER_ROOT), for each mode; outputs where SageMaker expects them; restarts
// resume by themselves; names and values esft cannot honour fail saying why.
#include <gtest/gtest.h>

#include "esft/fs.h"
#include "esft/tensor_io.h"
#include "test_util.h"

using namespace esft;

namespace {

const fs::path kModel = test::source_dir() / "tests/data/tiny-qwen3-moe";

// The sample notebook's dictionary (Qwen3-30B-A3B-Instruct, Cherokee -> English), as strings.
nlohmann::json notebook() {
  return {{"model", "Qwen/Qwen3-30B-A3B-Instruct-2507"},
          {"train_dataset", "datasets/train/tiny-intent-train.jsonl"},
          {"eval_dataset", "datasets/eval/tiny-intent-eval.jsonl"},
          {"n_sample_tokens", "131072"},
          {"score_function", "token"},
          {"score_threshold", "0.2"},
          {"train_shared_experts", "false"},
          {"train_non_expert_modules", "false"},
          {"expert_config_dir", ""},
          {"train_epochs", "1"},
          {"micro_batch_size", "1"},
          {"global_batch_size", "256"},
          {"learning_rate", "7e-6"},
          {"warmup_ratio", "0.1"},
          {"weight_decay", "0.1"},
          {"min_learning_rate", "0.0"},
          {"lr_decay_style", "cosine"},
          {"max_length", "16384"},
          {"save_interval", "100"},
          {"use_wandb", "false"},
          {"expert_parallel", ""},
          {"pipeline_parallel", "1"},
          {"world_size", "1"},
          {"gpus_per_process", "1"},
          {"mode", "both"}};
}

struct FakeSageMaker {
  fs::path root;
  explicit FakeSageMaker(const std::string& name, bool model_channel = true) {
    root = test::temp_dir("sagemaker-" + name) / "opt/ml";
    fs::create_directories(root / "input/config");
    fs::create_directories(root / "input/data/train");
    fs::create_directories(root / "input/data/eval");
    if (model_channel) fs::create_directory_symlink(kModel, root / "input/data/model");
    fs::copy_file(test::source_dir() / "tests/data/tiny-intent-train.jsonl", root / "input/data/train/tiny-intent-train.jsonl");
    fs::copy_file(test::source_dir() / "tests/data/tiny-intent-eval.jsonl", root / "input/data/eval/tiny-intent-eval.jsonl");
  }
  // `esft train` with no flags, as SageMaker starts the container; returns the exit status.
  int run(const nlohmann::json& hp, int gpus = 1, std::string* log = nullptr) {
    write_file_atomic(root / "input/config/hyperparameters.json", hp.dump(2));
    const auto err = root.parent_path().parent_path() / "log.txt";
    int rc = test::run("ESFT_SAGEMAKER_ROOT=" + root.string() + " SM_NUM_GPUS=" + std::to_string(gpus) +
                       " ESFT_COLLECTIVE_TIMEOUT_S=120 " + test::esft_bin() + " train 2> " + err.string());
    if (log) *log = read_file(err);
    return rc;
  }
};

TEST(SageMaker, NotebookDictionaryScoringMode) {
  FakeSageMaker sm("scoring");
  auto hp = notebook();
  hp["mode"] = "scoring";
  // as the SDK's framework estimators write hyperparameters.json: each value JSON-encoded
  for (auto& [k, v] : hp.items()) v = nlohmann::json(v.get<std::string>()).dump();
  std::string log;
  ASSERT_EQ(sm.run(hp, 1, &log), 0) << log;
  EXPECT_TRUE(fs::exists(sm.root / "output/data/expert_scores/summary.json")) << log;
  EXPECT_TRUE(fs::exists(sm.root / "output/data/expert_scores/rank_0/expert_weights_1.txt"));
  auto sel = nlohmann::json::parse(read_file(sm.root / "output/data/expert_config.json"));
  EXPECT_FALSE(sel["experts"].empty());
  EXPECT_FALSE(fs::exists(sm.root / "model/adapter")) << "scoring only";
  // The hub id names the checkpoint the model channel holds; nothing is downloaded.
  EXPECT_NE(log.find("model=\"Qwen/Qwen3-30B-A3B-Instruct-2507\" is not a directory here: using the model channel"),
            std::string::npos)
      << log;
  EXPECT_NE(log.find("use_wandb=false: nothing to do"), std::string::npos) << log;
  EXPECT_NE(log.find("pipeline_parallel=1: nothing to do"), std::string::npos) << log;
  EXPECT_NE(log.find("--top-p 0.2"), std::string::npos) << log;
  EXPECT_NE(log.find("--score-function token"), std::string::npos) << log;
  EXPECT_NE(log.find("--n-sample-tokens 131072"), std::string::npos) << log;
}

TEST(SageMaker, NotebookDictionaryTrainingModeWritesWhereSageMakerExpectsAndResumesByItself) {
  FakeSageMaker sm("training");
  fs::create_directories(sm.root / "input/data/expert_config");
  write_file_atomic(sm.root / "input/data/expert_config/intent.json", R"({"experts": {"1": [0, 7], "3": [12]}})");
  auto hp = notebook();
  hp["mode"] = "training";
  hp["expert_config_dir"] = "intent.json";  // found in the expert_config channel
  hp["global_batch_size"] = "2";            // a few steps on the tiny data
  hp["max_length"] = "512";
  hp["save_interval"] = "3";
  std::string log;
  ASSERT_EQ(sm.run(hp, 1, &log), 0) << log;
  for (auto flag : {"--learning-rate 7e-6", "--lr-scheduler cosine", "--min-lr 0.0", "--warmup-ratio 0.1",
                    "--weight-decay 0.1", "--epochs 1", "--micro-batch-size 1", "--global-batch-size 2", "--max-length 512",
                    "--save-steps 3", "--resume auto"})
    EXPECT_NE(log.find(flag), std::string::npos) << flag << "\n" << log;
  EXPECT_EQ(log.find("esft score"), std::string::npos) << "no scoring in mode training";
  // adapter under SM_MODEL_DIR, logs under SM_OUTPUT_DATA_DIR, TensorBoard and checkpoints where
  // SageMaker looks for them
  EXPECT_EQ(load_safetensors(sm.root / "model/adapter/model.safetensors").size(), 9u);
  auto metrics = test::read_jsonl(sm.root / "output/data/metrics.jsonl");
  EXPECT_FALSE(metrics.empty());
  EXPECT_TRUE(metrics.back().contains("eval_loss")) << "the eval channel is evaluated";
  bool events = false;
  for (auto& e : fs::directory_iterator(sm.root / "output/tensorboard"))
    events |= e.path().filename().string().rfind("events.out.tfevents.", 0) == 0;
  EXPECT_TRUE(events);
  std::vector<std::string> ckpts;
  for (auto& e : fs::directory_iterator(sm.root / "checkpoints")) ckpts.push_back(e.path().filename().string());
  EXPECT_FALSE(ckpts.empty());
  EXPECT_FALSE(fs::exists(sm.root / "model/checkpoints")) << "checkpoints are not model artifacts";
  EXPECT_FALSE(fs::exists(sm.root / "model/.cache")) << "the dataset cache is not uploaded";
  // A restarted job (spot interruption): resumes from /opt/ml/checkpoints by itself.
  ASSERT_EQ(sm.run(hp, 1, &log), 0) << log;
  EXPECT_NE(log.find("resumed from " + (sm.root / "checkpoints").string()), std::string::npos) << log;
}

TEST(SageMaker, NotebookDictionaryBothModeOnTwoWorkers) {
  // gpus_per_process 2 on a "machine" with two GPUs: two workers, expert_parallel "" -> 2 as in
  // the sample.
  FakeSageMaker sm("both");
  auto hp = notebook();
  hp["gpus_per_process"] = "2";
  std::string log;
  ASSERT_EQ(sm.run(hp, 2, &log), 0) << log;
  EXPECT_NE(log.find("launching 2 worker(s)"), std::string::npos) << log;
  EXPECT_NE(log.find("--expert-parallel 2"), std::string::npos) << log;
  EXPECT_TRUE(fs::exists(sm.root / "output/data/expert_scores/summary.json"));
  auto sel = nlohmann::json::parse(read_file(sm.root / "output/data/expert_config.json"));
  size_t n = 0;
  for (auto& [l, ids] : sel["experts"].items()) n += ids.size();
  EXPECT_EQ(load_safetensors(sm.root / "model/adapter/model.safetensors").size(), 3 * n);
  EXPECT_EQ(read_file(sm.root / "model/adapter/expert_config.json"), read_file(sm.root / "output/data/expert_config.json"));
}

TEST(SageMaker, WhatCannotBeHonouredFailsSayingWhy) {
  FakeSageMaker sm("errors", /*model_channel=*/false);
  struct Case {
    std::string key, value, expected;
  };
  const Case cases[] = {
      {"", "", "esft downloads nothing from a model hub; pass the checkpoint"},
      {"learning_rat", "1e-5", "\"learning_rat\" is not known. Accepted: "},
      {"use_wandb", "true", "use_wandb=true: esft does not log to Weights & Biases"},
      {"pipeline_parallel", "2", "pipeline_parallel=2: esft has no pipeline parallelism"},
      {"lr_decay_style", "WSD", "lr_decay_style=\"WSD\""},
      {"world_size", "4", "world_size=4 x gpus_per_process=1 = 4 GPUs, but this job has 1"},
      {"mode", "eval", "mode=\"eval\""},
      {"output", "/tmp/x", "the entrypoint sets --output itself"},
      {"train_dataset", "nope.jsonl", "train_dataset=\"nope.jsonl\": no such file here or in the train channel"},
  };
  for (auto& c : cases) {
    auto hp = notebook();
    if (!c.key.empty()) {
      hp[c.key] = c.value;
      hp["model"] = kModel.string();  // only the hub-id case lacks a model
    }
    std::string log;
    EXPECT_NE(sm.run(hp, 1, &log), 0) << c.key;
    EXPECT_NE(log.find(c.expected), std::string::npos) << c.key << "\n" << log;
    if (c.key == "learning_rat") {
      for (auto name : {"score_threshold", "lr_decay_style", "learning-rate", "max-steps"})
        EXPECT_NE(log.find(name), std::string::npos) << name;
    }
    EXPECT_EQ(log.find("Exception raised from"), std::string::npos) << log;
  }
  EXPECT_FALSE(fs::exists(sm.root / "model/adapter"));
}

}  // namespace
