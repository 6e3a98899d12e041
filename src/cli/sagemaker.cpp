// SageMaker training-container entrypoint. SageMaker starts the image as `IMAGE train`; with
// ENTRYPOINT ["esft"] that is `esft train` with no flags. In that case (and only when
// ROOT/input/config/hyperparameters.json exists) the flags come from SageMaker's contract. ROOT is
// /opt/ml, or ESFT_SAGEMAKER_ROOT (tests); SageMaker's own variables override the parts they name
// (SM_INPUT_CONFIG_DIR, SM_CHANNEL_<NAME>, SM_MODEL_DIR, SM_OUTPUT_DATA_DIR).
//
// Hyperparameters (all values strings, as SageMaker passes them): the names of the AWS ESFT
// sample's notebook (model, train_dataset, eval_dataset, n_sample_tokens, score_function,
// score_threshold, train_shared_experts, train_non_expert_modules, expert_config_dir, mode,
// train_epochs, micro_batch_size, global_batch_size, learning_rate, warmup_ratio, weight_decay,
// min_learning_rate, lr_decay_style, max_length, save_interval, expert_parallel, world_size,
// gpus_per_process, use_wandb, pipeline_parallel; see kSampleNames), next to esft's own flags of
// score / select / train (dashes or underscores). Options esft has no use for are accepted, with a
// warning, only when they ask for nothing (use_wandb false, pipeline_parallel 1, a world_size x
// gpus_per_process equal to the job's GPUs); any other name or value fails, listing what is accepted.
//
// Inputs: channel model (the HF checkpoint; `model` given as a hub id needs it: nothing is
// downloaded), train and eval (train_dataset / eval_dataset name a file in them, else the single
// .jsonl there), expert_config (optional; or expert_config_dir).
// Outputs: ROOT/model (SM_MODEL_DIR): adapter/ (and full/); ROOT/output/data (SM_OUTPUT_DATA_DIR):
// expert_scores/, expert_config.json, metrics.jsonl; ROOT/output/tensorboard: event files (the
// TensorBoardOutputConfig's default local path); ROOT/checkpoints: checkpoints, which SageMaker
// syncs to S3 (spot training); a restarted job resumes from the newest usable one by itself.
//
// mode: scoring (score + select), training (needs an expert config) or both (the default; with an
// expert config given, training only, as in the sample).
//
// Several GPUs and hosts: SageMaker starts this entrypoint once per host (SM_HOSTS,
// SM_CURRENT_HOST); each becomes the launcher of one worker per GPU (SM_NUM_GPUS, or the
// hyperparameter nproc-per-node), ranks numbered host by host with the first host (sorted) as
// rank 0. The workers run this same pipeline together: scoring shares the samples and rank 0
// merges the scores, rank 0 selects and sends the expert config to all, training is data (and
// with expert_parallel, expert) parallel, and rank 0 writes the outputs.
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdlib>
#include <map>
#include <set>

#include "esft/cli.h"
#include "esft/dist/launch.h"
#include "esft/dist/parallel.h"
#include "esft/error.h"
#include "esft/fs.h"
#include "esft/log.h"
#include "flags.h"

namespace esft::cli {
namespace {

std::string env_or(const char* name, const std::string& dflt) {
  const char* v = std::getenv(name);
  return v && *v ? v : dflt;
}

fs::path root() { return env_or("ESFT_SAGEMAKER_ROOT", "/opt/ml"); }
fs::path hyperparameters_file() {
  return fs::path(env_or("SM_INPUT_CONFIG_DIR", (root() / "input/config").string())) / "hyperparameters.json";
}
fs::path channel(const std::string& name) {
  std::string upper;
  for (char c : name) upper += char(std::toupper(static_cast<unsigned char>(c)));
  return env_or(("SM_CHANNEL_" + upper).c_str(), (root() / "input/data" / name).string());
}

// The AWS ESFT sample's hyperparameters: where each goes. "" as flag: handled by the entrypoint.
struct SampleName {
  const char* name;
  const char* command;  // score | select | train | "" (entrypoint)
  const char* flag;
};
const SampleName kSampleNames[] = {
    {"model", "", ""},
    {"train_dataset", "", ""},
    {"eval_dataset", "", ""},
    {"mode", "", ""},
    {"expert_config_dir", "", ""},
    {"world_size", "", ""},
    {"gpus_per_process", "", ""},
    {"use_wandb", "", ""},
    {"pipeline_parallel", "", ""},
    {"expert_parallel", "", ""},
    {"n_sample_tokens", "score", "n-sample-tokens"},
    {"score_function", "select", "score-function"},
    {"score_threshold", "select", "top-p"},
    {"train_shared_experts", "select", "train-shared-experts"},
    {"train_non_expert_modules", "select", "train-non-expert-modules"},
    {"train_epochs", "train", "epochs"},
    {"micro_batch_size", "train", "micro-batch-size"},
    {"global_batch_size", "train", "global-batch-size"},
    {"learning_rate", "train", "learning-rate"},
    {"warmup_ratio", "train", "warmup-ratio"},
    {"weight_decay", "train", "weight-decay"},
    {"min_learning_rate", "train", "min-lr"},
    {"lr_decay_style", "train", "lr-scheduler"},
    {"max_length", "train", "max-length"},
    {"save_interval", "train", "save-steps"},
};

// esft flags the entrypoint sets itself: a hyperparameter may not.
const std::set<std::string> kSetByEntrypoint = {
    "data", "output", "expert-config", "eval-dataset", "resume", "checkpoint-dir", "tensorboard-dir", "metrics-file",
    "cache-dir", "scores", "summary-output", "help", "rank", "world-size"};

bool is_true(const std::string& key, const std::string& v) {
  if (v == "true" || v == "True" || v == "1") return true;
  if (v == "false" || v == "False" || v == "0" || v.empty()) return false;
  fail("SageMaker hyperparameter {}=\"{}\": expected true or false", key, v);
}

int positive_int(const std::string& key, const std::string& v) {
  char* end = nullptr;
  long x = std::strtol(v.c_str(), &end, 10);
  if (v.empty() || *end || x < 1 || x > 1 << 20) fail("SageMaker hyperparameter {}=\"{}\": expected a positive integer", key, v);
  return int(x);
}

// A dataset hyperparameter: a path that exists, or a file in the channel (by its relative path or
// its name); without the hyperparameter, the single .jsonl of the channel.
fs::path dataset(const std::string& key, const std::string& value, const std::string& name, bool required) {
  const fs::path ch = channel(name);
  if (!value.empty()) {
    if (fs::is_regular_file(value)) return value;
    for (auto candidate : {ch / value, ch / fs::path(value).filename()})
      if (fs::is_regular_file(candidate)) return candidate;
    std::vector<std::string> files;
    if (fs::is_directory(ch))
      for (auto& e : fs::recursive_directory_iterator(ch))
        if (e.is_regular_file()) files.push_back(fs::relative(e.path(), ch).string());
    fail("SageMaker hyperparameter {}=\"{}\": no such file here or in the {} channel ({}: {}); give the data as the {} "
         "channel (nothing is downloaded)",
         key, value, name, ch.string(), files.empty() ? "missing or empty" : fmt::format("{}", fmt::join(files, ", ")), name);
  }
  if (fs::is_regular_file(ch)) return ch;
  std::vector<fs::path> found;
  if (fs::is_directory(ch))
    for (auto& e : fs::directory_iterator(ch))
      if (e.is_regular_file() && e.path().extension() == ".jsonl") found.push_back(e.path());
  if (found.size() == 1) return found[0];
  if (!required && !fs::exists(ch)) return {};
  fail("SageMaker channel {} ({}) must hold exactly one .jsonl file, found {}; or name the file with {}", name,
       ch.string(), found.size(), key);
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

// Flags for one subcommand: --key value, switches only when true.
std::vector<std::string> to_flags(const std::map<std::string, std::string>& kv, const std::map<std::string, bool>& known) {
  std::vector<std::string> a;
  for (auto& [k, v] : kv) {
    if (known.at(k)) {
      if (is_true(k, v)) a.push_back("--" + k);
    } else {
      a.insert(a.end(), {"--" + k, v});
    }
  }
  return a;
}

}  // namespace

bool sagemaker_mode() { return fs::exists(hyperparameters_file()); }

int sagemaker_train() {
  nlohmann::json hp;
  try {
    hp = nlohmann::json::parse(read_file(hyperparameters_file()));
  } catch (const nlohmann::json::exception& e) {
    fail("{}: not valid JSON: {}", hyperparameters_file().string(), e.what());
  }
  if (!hp.is_object()) fail("{}: expected a JSON object of hyperparameters", hyperparameters_file().string());

  const auto train_known = flag_names(train_flags()), score_known = flag_names(score_flags()),
             select_known = flag_names(select_flags());
  std::map<std::string, std::string> sample;             // the sample's names, as given
  std::map<std::string, std::string> train, score, select;  // esft flags per subcommand
  std::string nproc_hp;
  auto accepted = [&] {
    std::set<std::string> names;
    for (auto& s : kSampleNames) names.insert(s.name);
    for (auto* m : {&train_known, &score_known, &select_known})
      for (auto& [k, b] : *m)
        if (!kSetByEntrypoint.count(k)) names.insert(k);
    names.insert({"nproc-per-node", "score-seed"});
    return fmt::format("{}", fmt::join(names, ", "));
  };
  for (auto& [k, v] : hp.items()) {
    std::string value = v.is_string() ? v.get<std::string>() : v.dump();
    // The SDK's framework estimators (PyTorch, HuggingFace) JSON-encode every value, so "cosine"
    // arrives as "\"cosine\"" (sagemaker-training decodes it for Python scripts): decode it here.
    if (value.size() >= 2 && value.front() == '"' && value.back() == '"')
      if (auto j = nlohmann::json::parse(value, nullptr, false); j.is_string()) value = j.get<std::string>();
    if (std::any_of(std::begin(kSampleNames), std::end(kSampleNames), [&](auto& s) { return k == s.name; })) {
      sample[k] = value;
      continue;
    }
    std::string key = k;
    for (auto& c : key) c = c == '_' ? '-' : c;
    if (key == "model") {
      sample["model"] = value;
    } else if (key == "nproc-per-node") {
      nproc_hp = value;
    } else if (key == "score-seed") {
      score["seed"] = value;
    } else if (kSetByEntrypoint.count(key)) {
      fail("SageMaker hyperparameter {}: the entrypoint sets --{} itself (inputs come from the channels, outputs go "
           "where SageMaker expects them)", k, key);
    } else if (train_known.count(key) || score_known.count(key) || select_known.count(key)) {
      // A flag of several subcommands goes to each (device, dtype, chat-format, ...); seed and
      // max-length are training's (score-seed is scoring's seed).
      if (train_known.count(key)) train[key] = value;
      if (score_known.count(key) && !train_known.count(key)) score[key] = value;
      if (score_known.count(key) && train_known.count(key) && key != "seed" && key != "max-length" &&
          key != "skip-bad-lines" && key != "nproc-per-node")
        score[key] = value;
      if (select_known.count(key)) select[key] = value;
    } else {
      fail("SageMaker hyperparameter \"{}\" is not known. Accepted: {}", k, accepted());
    }
  }
  // The sample's names onto esft's flags.
  for (auto& s : kSampleNames) {
    if (!sample.count(s.name) || !*s.command) continue;
    auto& target = std::string(s.command) == "train" ? train : std::string(s.command) == "score" ? score : select;
    std::string v = sample[s.name];
    if (std::string(s.name) == "lr_decay_style" && v != "cosine" && v != "linear" && v != "constant")
      fail("SageMaker hyperparameter lr_decay_style=\"{}\": esft has cosine, linear and constant", v);
    target[s.flag] = v;
  }
  // Options esft has no use for: fine when they ask for nothing.
  if (sample.count("use_wandb")) {
    if (is_true("use_wandb", sample["use_wandb"]))
      fail("SageMaker hyperparameter use_wandb=true: esft does not log to Weights & Biases; it writes TensorBoard "
           "events to {} (set use_wandb to false)", (root() / "output/tensorboard").string());
    log_warn("sagemaker: use_wandb=false: nothing to do (TensorBoard events go to " + (root() / "output/tensorboard").string() + ")");
  }
  if (sample.count("pipeline_parallel")) {
    if (positive_int("pipeline_parallel", sample["pipeline_parallel"]) != 1)
      fail("SageMaker hyperparameter pipeline_parallel={}: esft has no pipeline parallelism; use expert_parallel (and "
           "data parallelism over the remaining GPUs) with pipeline_parallel 1", sample["pipeline_parallel"]);
    log_warn("sagemaker: pipeline_parallel=1: nothing to do");
  }

  // Process layout: one worker per GPU of every host (SM_NUM_GPUS, at least one on the CPU).
  int n_hosts = 1;
  if (auto hosts = nlohmann::json::parse(env_or("SM_HOSTS", "[]"), nullptr, false); hosts.is_array() && !hosts.empty())
    n_hosts = int(hosts.size());
  int nproc = std::max(1, std::atoi(env_or("SM_NUM_GPUS", "1").c_str()));
  if (!nproc_hp.empty()) nproc = positive_int("nproc-per-node", nproc_hp);
  if (sample.count("world_size") || sample.count("gpus_per_process")) {
    // The reference runs world_size processes of gpus_per_process GPUs each; esft runs one worker
    // per GPU, expert parallel over them. The product must be the job's GPUs.
    const int ws = sample.count("world_size") ? positive_int("world_size", sample["world_size"]) : 1;
    const int gpp = sample.count("gpus_per_process") ? positive_int("gpus_per_process", sample["gpus_per_process"]) : 1;
    if (ws * gpp != n_hosts * nproc)
      fail("SageMaker hyperparameters world_size={} x gpus_per_process={} = {} GPUs, but this job has {} ({} host(s) x "
           "{} worker(s)); esft runs one worker per GPU: make them match (or leave them out)",
           ws, gpp, ws * gpp, n_hosts * nproc, n_hosts, nproc);
    log_warn(fmt::format("sagemaker: world_size={} x gpus_per_process={}: esft runs one worker per GPU, {} in all", ws,
                         gpp, n_hosts * nproc));
  }
  // expert_parallel: "" means gpus_per_process, as in the sample.
  std::string ep = sample.count("expert_parallel") ? sample["expert_parallel"] : "";
  if (ep.empty() && sample.count("gpus_per_process")) ep = sample["gpus_per_process"];
  if (!ep.empty()) {
    positive_int("expert_parallel", ep);
    train["expert-parallel"] = score["expert-parallel"] = ep;
  }

  const std::string mode = sample.count("mode") ? sample["mode"] : "both";
  if (mode != "scoring" && mode != "training" && mode != "both")
    fail("SageMaker hyperparameter mode=\"{}\": expected scoring, training or both", mode);

  // Inputs. `model` may name the checkpoint (a hub id) that the model channel holds.
  const fs::path model_channel = channel("model");
  fs::path model;
  if (sample.count("model") && !sample["model"].empty() && fs::is_directory(sample["model"])) {
    model = sample["model"];
  } else if (fs::is_directory(model_channel)) {
    model = model_channel;
    if (sample.count("model") && !sample["model"].empty())
      log_info(fmt::format("sagemaker: model=\"{}\" is not a directory here: using the model channel {}", sample["model"],
                           model_channel.string()));
  } else if (sample.count("model") && !sample["model"].empty()) {
    fail("SageMaker hyperparameter model=\"{}\" is not a directory in the container, and there is no model channel "
         "({}): esft downloads nothing from a model hub; pass the checkpoint (config.json, safetensors, tokenizer "
         "files) as the training job's model channel, e.g. inputs={{\"model\": \"s3://bucket/Qwen3-30B-A3B/\", ...}}",
         sample["model"], model_channel.string());
  } else {
    fail("no model: pass the checkpoint as the model channel ({})", model_channel.string());
  }
  const fs::path data = dataset("train_dataset", sample.count("train_dataset") ? sample["train_dataset"] : "", "train", true);
  const fs::path eval = dataset("eval_dataset", sample.count("eval_dataset") ? sample["eval_dataset"] : "", "eval", false);
  fs::path expert_config;
  if (sample.count("expert_config_dir") && !sample["expert_config_dir"].empty()) {
    const fs::path p = sample["expert_config_dir"];
    for (auto c : {p, channel("expert_config") / p, channel("expert_config") / p.filename()})
      if (fs::is_regular_file(c)) expert_config = c;
    if (expert_config.empty() && fs::is_directory(p)) {
      std::vector<fs::path> found;
      for (auto& e : fs::directory_iterator(p))
        if (e.path().extension() == ".json") found.push_back(e.path());
      if (found.size() == 1) expert_config = found[0];
    }
    if (expert_config.empty())
      fail("SageMaker hyperparameter expert_config_dir=\"{}\": no expert config file there (a path in the container, "
           "in the expert_config channel, or a directory holding one .json)", p.string());
  } else if (const fs::path ch = channel("expert_config"); fs::exists(ch)) {
    std::vector<fs::path> found;
    if (fs::is_regular_file(ch)) found.push_back(ch);
    else
      for (auto& e : fs::directory_iterator(ch))
        if (e.is_regular_file() && e.path().extension() == ".json") found.push_back(e.path());
    if (found.size() != 1)
      fail("SageMaker channel expert_config ({}) must hold exactly one .json file, found {}", ch.string(), found.size());
    expert_config = found[0];
  }
  if (mode == "training" && expert_config.empty())
    fail("SageMaker mode=training needs an expert config: the hyperparameter expert_config_dir or the expert_config "
         "channel (or mode=both to score and select first)");
  const bool do_score = mode == "scoring" || (mode == "both" && expert_config.empty());
  const bool do_train = mode != "scoring";
  if (mode == "both" && !expert_config.empty())
    log_info("sagemaker: an expert config is given (" + expert_config.string() + "): skipping scoring, training only");

  // Outputs where SageMaker expects them.
  const fs::path model_dir = env_or("SM_MODEL_DIR", (root() / "model").string());
  const fs::path output_data = env_or("SM_OUTPUT_DATA_DIR", (root() / "output/data").string());
  const fs::path tensorboard = root() / "output/tensorboard", checkpoints = root() / "checkpoints";
  const fs::path cache = fs::temp_directory_path() / "esft-cache";  // not uploaded with the outputs

  // One process per host: spawn the workers of this host (they come back here as workers).
  if (auto rc = dist::launch_if_asked(nproc, {"train"})) return *rc;
  if (auto w = dist::world_from_env(dist::process_env()); w.launched()) set_log_rank(w.rank);  // rank 0 speaks

  const std::vector<std::string> common = {"--model", model.string(), "--data", data.string(), "--cache-dir", cache.string()};
  if (do_score) {
    const fs::path scores = output_data / "expert_scores";
    auto a = common;
    a.insert(a.end(), {"--output", scores.string()});
    for (auto& f : to_flags(score, score_known)) a.push_back(f);
    if (int rc = run_subcommand("score", a)) return rc;
    expert_config = output_data / "expert_config.json";
    std::vector<std::string> s = {"--scores", scores.string(), "--output", expert_config.string()};
    for (auto& f : to_flags(select, select_known)) s.push_back(f);
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
  } else if (!select.empty()) {
    log_warn(fmt::format("sagemaker: no scoring in this job: the selection hyperparameters ({}) do nothing",
                         fmt::join([&] {
                           std::vector<std::string> k;
                           for (auto& [key, v] : select) k.push_back(key);
                           return k;
                         }(), ", ")));
  }
  if (!do_train) return 0;
  auto a = common;
  a.insert(a.end(), {"--expert-config", expert_config.string(), "--output", model_dir.string(), "--checkpoint-dir",
                     checkpoints.string(), "--tensorboard-dir", tensorboard.string(), "--metrics-file",
                     (output_data / "metrics.jsonl").string(), "--resume", "auto"});
  if (!eval.empty()) a.insert(a.end(), {"--eval-dataset", eval.string()});
  for (auto& f : to_flags(train, train_known)) a.push_back(f);
  return run_subcommand("train", a);
}

}  // namespace esft::cli
