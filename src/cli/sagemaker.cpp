// SageMaker training-container entrypoint. SageMaker starts the image as `IMAGE train`; with
// ENTRYPOINT ["esft"] that is `esft train` with no flags. In that case (and only when
// /opt/ml/input/config/hyperparameters.json exists; SM_INPUT_CONFIG_DIR moves it) the flags come
// from SageMaker's contract:
//   hyperparameters.json  {"learning-rate": "1e-5", "save-full": "true", ...} -> --learning-rate 1e-5 --save-full
//                         (underscores may be used for dashes; "false" drops a switch)
//   channel model         the HF checkpoint directory            -> --model
//   channel train         a directory holding one .jsonl         -> --data
//   channel eval          (optional) one .jsonl                  -> --eval-dataset
//   channel expert_config (optional) one expert_config.json      -> --expert-config
//   /opt/ml/model         the output directory (SM_MODEL_DIR)     -> --output
// Without an expert config the job runs the whole pipeline: score the training data, select
// experts (hyperparameters score-function, top-p, n-sample-tokens apply), then train.
//
// Several GPUs and hosts: SageMaker starts this entrypoint once per host (SM_HOSTS,
// SM_CURRENT_HOST); each becomes the launcher of one worker per GPU (SM_NUM_GPUS, or the
// hyperparameter nproc-per-node), ranks numbered host by host with the first host (sorted) as
// rank 0. The workers run this same pipeline together: scoring shares the samples and rank 0
// merges the scores, rank 0 selects and sends the expert config to all, training is data (and
// with the hyperparameter expert-parallel, expert) parallel, and rank 0 writes /opt/ml/model.
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdlib>

#include "esft/cli.h"
#include "esft/dist/launch.h"
#include "esft/dist/parallel.h"
#include "esft/error.h"
#include "esft/fs.h"
#include "esft/log.h"

namespace esft::cli {
namespace {

std::string env_or(const char* name, const std::string& dflt) {
  const char* v = std::getenv(name);
  return v && *v ? v : dflt;
}

fs::path channel(const std::string& name) {
  std::string upper;
  for (char c : name) upper += char(std::toupper(static_cast<unsigned char>(c)));
  return env_or(("SM_CHANNEL_" + upper).c_str(), "/opt/ml/input/data/" + name);
}

// The single file with extension ext in a channel directory (or the path itself if a file).
fs::path single_file(const fs::path& dir, const std::string& ext, const std::string& what) {
  if (fs::is_regular_file(dir)) return dir;
  std::vector<fs::path> found;
  if (fs::is_directory(dir))
    for (auto& e : fs::directory_iterator(dir))
      if (e.is_regular_file() && e.path().extension() == ext) found.push_back(e.path());
  if (found.size() != 1)
    fail("SageMaker channel {} ({}) must hold exactly one {} file, found {}", what, dir.string(), ext, found.size());
  return found[0];
}

int run_subcommand(const std::string& name, std::vector<std::string> args) {
  args.insert(args.begin(), "esft " + name);
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  std::string line;
  for (auto& a : args) line += a + " ";
  log_info("sagemaker: " + line);
  for (auto& c : subcommands())
    if (c.name == name) return c.fn(int(argv.size()), argv.data());
  fail("no subcommand {}", name);
}

}  // namespace

namespace {
fs::path hyperparameters_file() { return fs::path(env_or("SM_INPUT_CONFIG_DIR", "/opt/ml/input/config")) / "hyperparameters.json"; }
}  // namespace

bool sagemaker_mode() { return fs::exists(hyperparameters_file()); }

int sagemaker_train() {
  auto hp = nlohmann::json::parse(read_file(hyperparameters_file()));
  std::map<std::string, std::string> kv;
  for (auto& [k, v] : hp.items()) {
    std::string key = k;
    for (auto& c : key) c = c == '_' ? '-' : c;
    kv[key] = v.is_string() ? v.get<std::string>() : v.dump();
  }
  // One process per host: spawn the workers of this host (they come back here as workers).
  int nproc = std::max(1, std::atoi(env_or("SM_NUM_GPUS", "1").c_str()));
  if (kv.count("nproc-per-node")) nproc = std::atoi(kv["nproc-per-node"].c_str());
  kv.erase("nproc-per-node");
  if (auto rc = dist::launch_if_asked(nproc, {"train"})) return *rc;
  if (auto w = dist::world_from_env(dist::process_env()); w.launched()) set_log_rank(w.rank);  // rank 0 speaks

  fs::path model = kv.count("model") ? fs::path(kv["model"]) : channel("model");
  fs::path out = env_or("SM_MODEL_DIR", "/opt/ml/model");
  fs::path data = single_file(channel("train"), ".jsonl", "train");
  std::vector<std::string> common = {"--model", model.string(), "--data", data.string()};
  for (auto k : {"model", "data", "output", "expert-config", "eval-dataset"}) kv.erase(k);

  // Pipeline hyperparameters consumed by score/select, the rest go to train.
  std::map<std::string, std::string> score_kv, select_kv;
  for (auto k : {"n-sample-tokens", "score-seed"})
    if (kv.count(k)) score_kv[k == std::string("score-seed") ? "seed" : k] = kv[k], kv.erase(k);
  if (kv.count("expert-parallel")) score_kv["expert-parallel"] = kv["expert-parallel"];  // scoring a large model too
  for (auto k : {"score-function", "top-p", "train-shared-experts", "train-non-expert-modules"})
    if (kv.count(k)) select_kv[k] = kv[k], kv.erase(k);
  auto flags = [](const std::map<std::string, std::string>& m) {
    std::vector<std::string> a;
    for (auto& [k, v] : m) {
      if (v == "false" || v == "False") continue;
      a.push_back("--" + k);
      if (v != "true" && v != "True") a.push_back(v);
    }
    return a;
  };

  fs::path expert_config;
  if (fs::exists(channel("expert_config"))) expert_config = single_file(channel("expert_config"), ".json", "expert_config");
  if (expert_config.empty()) {
    fs::path scores = out / "expert_scores";
    auto a = common;
    a.insert(a.end(), {"--output", scores.string()});
    for (auto k : {"chat-format", "device", "dtype"})
      if (kv.count(k)) a.insert(a.end(), {std::string("--") + k, kv[k]});
    for (auto& f : flags(score_kv)) a.push_back(f);
    if (int rc = run_subcommand("score", a)) return rc;
    expert_config = out / "expert_config.json";
    std::vector<std::string> s = {"--scores", scores.string(), "--output", expert_config.string()};
    for (auto& f : flags(select_kv)) s.push_back(f);
    auto* par = dist::ParallelContext::get();
    if (!par || par->is_main())
      if (int rc = run_subcommand("select", s)) return rc;
    if (par && par->world_size() > 1) {
      // Only rank 0's host has the merged scores: it sends the selection to every rank.
      auto text = par->broadcast_text(par->is_main() ? read_file(expert_config) : "");
      if (!par->is_main()) {
        fs::create_directories(expert_config.parent_path());
        write_file_atomic(expert_config, text);
      }
    }
  }
  auto a = common;
  a.insert(a.end(), {"--expert-config", expert_config.string(), "--output", out.string()});
  if (fs::exists(channel("eval"))) a.insert(a.end(), {"--eval-dataset", single_file(channel("eval"), ".jsonl", "eval").string()});
  for (auto& f : flags(kv)) a.push_back(f);
  return run_subcommand("train", a);
}

}  // namespace esft::cli
