#include "esft/train.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <sys/resource.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <fstream>
#include <optional>

#include "esft/data.h"
#include "esft/dist/parallel.h"
#include "esft/error.h"
#include "esft/log.h"
#include "esft/model.h"
#include "esft/progress.h"
#include "esft/run_control.h"
#include "esft/runtime.h"
#include "esft/tensor_io.h"
#include "esft/tfevents.h"
#include "esft/train_step.h"

namespace esft {

namespace {

// Rows -> a right-padded micro batch. Padding: doc -1, label -100, input id 0 (never attended).
Batch make_batch(const std::vector<PackedRow>& rows, const std::vector<size_t>& idx, int64_t* n_tokens) {
  size_t S = 0;
  for (auto i : idx) S = std::max(S, rows[i].input_ids.size());
  const int64_t B = idx.size();
  auto ids = at::zeros({B, int64_t(S)}, at::kLong), labels = at::full({B, int64_t(S)}, kIgnoreIndex, at::kLong),
       pos = at::zeros({B, int64_t(S)}, at::kLong), doc = at::full({B, int64_t(S)}, -1, at::kLong);
  auto a_ids = ids.accessor<int64_t, 2>(), a_lab = labels.accessor<int64_t, 2>(), a_pos = pos.accessor<int64_t, 2>(),
       a_doc = doc.accessor<int64_t, 2>();
  *n_tokens = 0;
  for (int64_t b = 0; b < B; ++b) {
    const auto& r = rows[idx[b]];
    for (size_t t = 0; t < r.input_ids.size(); ++t)
      a_ids[b][t] = r.input_ids[t], a_lab[b][t] = r.labels[t], a_pos[b][t] = r.position_ids[t], a_doc[b][t] = r.doc_ids[t];
    *n_tokens += r.input_ids.size();
  }
  Batch batch{ids, labels, pos, doc};
  add_document_layout(batch);
  return batch;
}

// The documents of a row (runs of equal doc ids; padding is none), for FLOP counts.
void append_doc_lengths(const PackedRow& r, std::vector<int64_t>& out) {
  for (size_t t = 0; t < r.doc_ids.size();) {
    size_t e = t;
    while (e < r.doc_ids.size() && r.doc_ids[e] == r.doc_ids[t]) ++e;
    if (r.doc_ids[t] >= 0) out.push_back(int64_t(e - t));
    t = e;
  }
}

// A forward pass with nothing to learn from (one token, a document of its own, no label). Under
// expert parallelism every pass is a collective, so a rank out of micro batches runs this one.

// Label tokens that count in the loss (labels shifted by one, as the model shifts them).
int64_t loss_tokens(const PackedRow& r) {
  int64_t n = 0;
  for (size_t t = 1; t < r.labels.size(); ++t) n += r.labels[t] != kIgnoreIndex;
  return n;
}

double eval_loss(MoeModel& model, const std::vector<PackedRow>& rows, int64_t micro, const dist::ParallelContext& par) {
  at::NoGradGuard ng;
  double sum = 0;
  int64_t n = 0;
  const int64_t n_micro = (int64_t(rows.size()) + micro - 1) / micro;
  const auto mine = par.my_share(n_micro);
  const int64_t passes = par.lockstep() ? par.rounds(n_micro) : int64_t(mine.size());
  for (int64_t k = 0; k < passes; ++k) {
    Batch batch = idle_batch();
    if (k < int64_t(mine.size())) {
      std::vector<size_t> idx;
      for (size_t i = mine[k] * micro; i < std::min(rows.size(), size_t((mine[k] + 1) * micro)); ++i) idx.push_back(i);
      int64_t tok;
      batch = make_batch(rows, idx, &tok);
    }
    auto out = model.forward(batch, ForwardOptions{false, nullptr, false});
    sum += out.loss_sum.item<double>();
    n += out.n_loss_tokens;
  }
  auto total = par.sum({sum, double(n)});
  return total[1] ? total[0] / total[1] : 0.0;
}

void copy_model_files(const fs::path& from, const fs::path& to) {
  for (auto name : {"config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
                    "tokenizer.model", "special_tokens_map.json", "vocab.json", "merges.txt", "chat_template.jinja"})
    if (fs::exists(from / name)) fs::copy_file(from / name, to / name, fs::copy_options::overwrite_existing);
}

fs::path fresh_tmp(const fs::path& dir) {
  fs::path tmp = pid_sibling(dir);
  fs::remove_all(tmp);
  fs::create_directories(tmp);
  return tmp;
}

void write_adapter(const std::vector<HfTensor>& tensors, const fs::path& expert_config, const fs::path& dir) {
  auto tmp = fresh_tmp(dir);
  save_safetensors(tmp / "model.safetensors", tensors, {{"format", "pt"}, {"esft", "adapter"}});
  fs::copy_file(expert_config, tmp / "expert_config.json");
  replace_directory(tmp, dir);
}

// "step-N" -> N; -1 for anything else in checkpoints/ (temporaries, directories moved aside).
int64_t checkpoint_step(const fs::path& dir) {
  auto n = dir.filename().string();
  if (n.size() <= 5 || n.compare(0, 5, "step-") != 0) return -1;
  for (size_t i = 5; i < n.size(); ++i)
    if (n[i] < '0' || n[i] > '9') return -1;
  return std::stoll(n.substr(5));
}

// Everything that fixes which rows a step sees and which learning rate it uses. Saved with every
// checkpoint; a resumed run compares it with its own so a changed flag does not go unnoticed.
nlohmann::json run_position(const TrainOptions& opt, const LrSchedule& sched, int64_t n_rows, int64_t steps_per_epoch,
                            int64_t global, int64_t micro, int64_t step) {
  const int64_t next_batch = step % steps_per_epoch;
  return {
      {"step", step},
      // the next step's place in the data: epoch (data order = python random.shuffle(seed + epoch)) and
      // the first row of the next global batch within that order
      {"epoch", step / steps_per_epoch},
      {"batch_in_epoch", next_batch},
      {"row_in_epoch", std::min(n_rows, next_batch * global)},
      {"data_order", {{"seed", opt.seed}, {"shuffle", "python random.shuffle, seeded with seed + epoch"},
                      {"rows", n_rows}, {"global_batch_size", global}, {"micro_batch_size", micro},
                      {"steps_per_epoch", steps_per_epoch}, {"packing", opt.packing}, {"max_length", opt.max_length},
                      {"truncation", opt.truncation}}},
      {"lr_schedule", {{"kind", sched.kind}, {"peak", sched.peak}, {"min_lr", sched.min_lr},
                       {"warmup_steps", sched.warmup_steps}, {"total_steps", sched.total_steps},
                       {"next_lr", step < sched.total_steps ? sched.at(step) : 0.0}}},
      // Training draws no random numbers (no dropout, deterministic routing), so the data order is
      // the only random state, and it is a function of seed and epoch.
      {"rng", "none besides the data order"},
      {"optimizer", {{"name", "adamw"}, {"beta1", opt.adamw.beta1}, {"beta2", opt.adamw.beta2}, {"eps", opt.adamw.eps},
                     {"weight_decay", opt.adamw.weight_decay}, {"max_grad_norm", opt.max_grad_norm}}},
      {"model", fs::absolute(opt.model).string()},
      // informational: the state is saved per expert, so a run may resume at another world size
      {"parallel", {{"world_size", dist::ParallelContext::get()->world_size()}, {"expert_parallel", opt.expert_parallel}}},
      {"data", fs::absolute(opt.data).string()},
      {"expert_config", fs::absolute(opt.expert_config).string()},
  };
}

void save_checkpoint(MoeModel& model, const AdamW& optim, const TrainOptions& opt, const fs::path& checkpoints,
                     const nlohmann::json& position, const dist::ParallelContext& par) {
  const int64_t step = position["step"].get<int64_t>();
  auto dir = checkpoints / fmt::format("step-{}", step);
  // Exact fp32 master weights and optimizer state: what resume needs to continue bit for bit;
  // every rank's part, gathered on rank 0, which alone writes.
  auto state = par.gather_train_state(optim);
  auto adapter = par.gather_adapter(model);
  if (!par.is_main()) return;
  auto tmp = fresh_tmp(dir);
  save_safetensors(tmp / "train_state.safetensors", state);
  save_safetensors(tmp / "adapter.safetensors", adapter);
  write_file_atomic(tmp / "trainer_state.json", position.dump(2) + "\n");
  fs::copy_file(opt.expert_config, tmp / "expert_config.json");
  replace_directory(tmp, dir);
  // Keep the newest save_total_limit checkpoints.
  std::vector<std::pair<int64_t, fs::path>> all;
  for (auto& e : fs::directory_iterator(checkpoints))
    if (e.is_directory() && checkpoint_step(e.path()) >= 0) all.push_back({checkpoint_step(e.path()), e.path()});
  std::sort(all.begin(), all.end());
  for (size_t i = 0; opt.save_total_limit > 0 && i + opt.save_total_limit < all.size(); ++i) fs::remove_all(all[i].second);
}

// A resumed run continues exactly only under the settings the checkpoint was written with; name
// every one that differs (the user may mean it, e.g. more steps, so this warns, not fails).
void compare_run_position(const nlohmann::json& saved, const nlohmann::json& now, const fs::path& file) {
  for (auto group : {"data_order", "lr_schedule", "optimizer"}) {
    if (!saved.contains(group)) continue;
    for (auto& [k, v] : now[group].items())
      if (k != "next_lr" && saved[group].contains(k) && saved[group][k] != v)
        log_warn(fmt::format("{}: {}.{} was {} when saved and is {} now: the run will not match an uninterrupted one",
                             file.string(), group, k, saved[group][k].dump(), v.dump()));
  }
}

// metrics.jsonl of a resumed run: drop the records of steps after the checkpoint (they are redone).
void truncate_metrics(const fs::path& path, int64_t last_step) {
  if (!fs::exists(path)) return;
  std::ifstream in(path);
  std::string kept;
  for (std::string l; std::getline(in, l);) {
    if (l.empty()) continue;
    auto j = nlohmann::json::parse(l, nullptr, false);
    if (!j.is_discarded() && j.contains("step") && j["step"].is_number_integer() && j["step"].get<int64_t>() <= last_step)
      kept += l + "\n";
  }
  write_file_atomic(path, kept);
}

// A checkpoint that resume may use: its trainer_state.json and train_state.safetensors load, and
// every saved tensor is finite.
struct ResumePoint {
  fs::path dir;
  nlohmann::json state;  // trainer_state.json
  std::map<std::string, at::Tensor> tensors;
};

// Why dir cannot be resumed from ("" when it can); fills *out when it can.
std::string checkpoint_problem(const fs::path& dir, ResumePoint* out) {
  try {
    if (!fs::exists(dir / "train_state.safetensors")) return "no train_state.safetensors";
    if (!fs::exists(dir / "trainer_state.json")) return "no trainer_state.json";
    auto state = nlohmann::json::parse(read_file(dir / "trainer_state.json"), nullptr, false);
    if (state.is_discarded() || !state.is_object() || !state.contains("step") || !state["step"].is_number_integer())
      return "trainer_state.json is damaged (no integer \"step\")";
    auto tensors = load_safetensors(dir / "train_state.safetensors");
    for (auto& [name, t] : tensors)
      if (t.is_floating_point() && !at::isfinite(t).all().item<bool>())
        return fmt::format("train_state.safetensors: {} holds NaN or Inf", name);
    *out = {dir, std::move(state), std::move(tensors)};
    return "";
  } catch (const std::exception& e) {
    return e.what();
  }
}

// --resume: a step-N checkpoint (used as it is), or a run / checkpoint directory, or "auto" (the
// checkpoint directory of this run): the newest usable checkpoint there, saying which newer ones
// were passed over and why. Nothing usable: fails, except for "auto" (a fresh start).
std::optional<ResumePoint> find_resume_point(const fs::path& p, const fs::path& checkpoints) {
  ResumePoint rp;
  const bool automatic = p == "auto";
  if (!automatic && fs::exists(p / "train_state.safetensors")) {
    if (auto why = checkpoint_problem(p, &rp); !why.empty()) fail("--resume {}: cannot resume from it: {}", p.string(), why);
    return rp;
  }
  const fs::path dir = automatic ? checkpoints : fs::is_directory(p / "checkpoints") ? p / "checkpoints" : p;
  std::vector<std::pair<int64_t, fs::path>> found;
  if (fs::is_directory(dir))
    for (auto& e : fs::directory_iterator(dir))
      if (checkpoint_step(e.path()) >= 0 && e.is_directory()) found.push_back({checkpoint_step(e.path()), e.path()});
  std::sort(found.rbegin(), found.rend());
  std::vector<std::string> passed_over;
  for (auto& [step, d] : found) {
    if (auto why = checkpoint_problem(d, &rp); !why.empty()) {
      passed_over.push_back(fmt::format("{} ({})", d.string(), why));
      continue;
    }
    if (!passed_over.empty())
      log_warn(fmt::format("resuming from {}, the newest usable checkpoint; passed over: {}", d.string(),
                           fmt::join(passed_over, "; ")));
    return rp;
  }
  if (automatic) {
    if (!passed_over.empty())
      log_warn(fmt::format("--resume auto: no usable checkpoint in {} ({}): starting from the beginning", dir.string(),
                           fmt::join(passed_over, "; ")));
    return std::nullopt;
  }
  if (!passed_over.empty()) fail("--resume {}: no usable checkpoint: {}", p.string(), fmt::join(passed_over, "; "));
  fail("--resume {}: no checkpoint (train_state.safetensors) there or in a checkpoints/step-N/ under it", p.string());
}

// Refuses outputs that would overwrite an input: the output directory holding the model, or an
// input file inside a directory the run replaces.
void refuse_overwriting_inputs(const TrainOptions& opt, const std::vector<std::pair<std::string, fs::path>>& written) {
  for (auto& [flag, dir] : std::vector<std::pair<std::string, fs::path>>{{"--output", opt.output}, written[0]})
    if (path_within(opt.model, dir))
      fail("{} {} holds --model {}: the run would write into its own input; choose another output directory", flag,
           dir.string(), opt.model.string());
  for (auto& [in_flag, in] : std::vector<std::pair<std::string, fs::path>>{
           {"--data", opt.data}, {"--eval-dataset", opt.eval_data}, {"--expert-config", opt.expert_config}})
    for (auto& [out_flag, out] : written)
      if (!in.empty() && path_within(in, out))
        fail("{} {} lies in {}, which the run replaces ({}): it would be overwritten; move it or choose another output",
             in_flag, in.string(), out.string(), out_flag);
}

// Peak memory for the log: the CUDA allocator's peak on a GPU, the process's peak resident size
// on the CPU.
double peak_memory_gib(const std::string& device) {
  if (device != "cpu") return peak_device_memory_gib(device);
  struct rusage ru {};
  ::getrusage(RUSAGE_SELF, &ru);
  return double(ru.ru_maxrss) / (1024.0 * 1024.0);  // KiB -> GiB
}

}  // namespace

void write_full_checkpoint(MoeModel& model, const fs::path& model_dir, const fs::path& dir, size_t max_shard_bytes) {
  auto tmp = fresh_tmp(dir);
  save_checkpoint_tensors(tmp, model.full_tensors(), max_shard_bytes);
  copy_model_files(model_dir, tmp);
  auto cfg = nlohmann::json::parse(read_file(tmp / "config.json"));
  const auto base_cfg = cfg;
  model.export_config(cfg);  // the family's say (GPT-OSS: MXFP4 experts are written dequantized)
  // Block-FP8 weights were dequantized on load and are written in bf16 without scales: the
  // config must not announce FP8, or transformers would look for the scales.
  if (cfg.contains("quantization_config") && cfg["quantization_config"].is_object() &&
      cfg["quantization_config"].value("quant_method", "") == "fp8") {
    cfg.erase("quantization_config");
    log_info("the FP8 checkpoint's weights are written dequantized (bf16); config.json without quantization_config");
  }
  if (cfg != base_cfg) write_file_atomic(tmp / "config.json", cfg.dump(2) + "\n");  // else kept byte for byte
  replace_directory(tmp, dir);
}

void write_merged_checkpoint(const fs::path& model_dir, const std::vector<HfTensor>& adapter, const ExpertSelection& sel,
                             const fs::path& dir, size_t max_shard_bytes) {
  // fp32 on the CPU: exports go back to each tensor's checkpoint dtype, so nothing is lost.
  auto model = load_model(model_dir, LoadOptions{"cpu", at::kFloat});
  model->configure_training(sel);
  std::map<std::string, at::Tensor> tensors;
  for (auto& t : adapter) tensors[t.name] = t.tensor;
  model->load_adapter_tensors(tensors);
  write_full_checkpoint(*model, model_dir, dir, max_shard_bytes);
}

TrainOutcome run_training(const TrainOptions& opt) {
  // SIGTERM/SIGINT from here on finish the current step and write a checkpoint.
  install_stop_handlers();
  struct Handlers {
    ~Handlers() { remove_stop_handlers(); }
  } restore_handlers;
  const fs::path checkpoints = opt.checkpoint_dir.empty() ? opt.output / "checkpoints" : opt.checkpoint_dir;
  const fs::path tb_dir = opt.tensorboard_dir.empty() ? opt.output / "tensorboard" : opt.tensorboard_dir;
  const fs::path metrics_path = opt.metrics_file.empty() ? opt.output / "metrics.jsonl" : opt.metrics_file;
  refuse_overwriting_inputs(opt, {{"--checkpoint-dir", checkpoints},
                                  {"--output", opt.output / "adapter"},
                                  {"--output", opt.output / "full"},
                                  {"--tensorboard-dir", tb_dir},
                                  {"--metrics-file", metrics_path}});
  auto rt = resolve_runtime(opt.device, opt.dtype);
  // Expert and data parallelism (a plain single process when not launched as several).
  auto& par = dist::ParallelContext::init(opt.expert_parallel, rt.device);
  rt.device = par.device();
  const int64_t micro = opt.micro_batch, global = opt.global_batch ? opt.global_batch : opt.micro_batch;
  ESFT_CHECK(micro >= 1 && global >= micro && global % micro == 0,
             "--global-batch-size ({}) must be a multiple of --micro-batch-size ({})", global, micro);
  for (auto& [flag, path] : {std::pair{"--data", opt.data}, {"--model", opt.model}, {"--expert-config", opt.expert_config}})
    if (!fs::exists(path)) fail("{} {}: no such file or directory", flag, path.string());
  if (!opt.eval_data.empty() && !fs::exists(opt.eval_data))
    fail("--eval-dataset {}: no such file", opt.eval_data.string());
  if (!fs::exists(opt.model / "config.json")) fail("--model {}: no config.json (not a Hugging Face checkpoint directory)", opt.model.string());
  auto sel = ExpertSelection::from_json_file(opt.expert_config);  // validate before the slow parts
  fs::create_directories(opt.output);
  // One run per output (and checkpoint) directory: rank 0 writes them and holds the locks.
  std::vector<std::unique_ptr<DirectoryLock>> locks;
  if (par.is_main()) {
    locks.push_back(std::make_unique<DirectoryLock>(opt.output, "--output"));
    if (!path_within(checkpoints, opt.output)) locks.push_back(std::make_unique<DirectoryLock>(checkpoints, "--checkpoint-dir"));
    // What a killed run left half-written (temporary directories and files) goes now.
    for (auto& dir : {opt.output, checkpoints, opt.output / ".cache"})
      for (auto& what : remove_stale_temporaries(dir)) log_info("cleaning up after an interrupted run: " + what);
  }

  DataOptions dopt;
  dopt.model_dir = opt.model;
  dopt.chat_format = opt.chat_format;
  dopt.skip_bad_lines = opt.skip_bad_lines;
  dopt.cache_dir = opt.cache_dir.empty() ? opt.output / ".cache" : opt.cache_dir;
  dopt.vocab_size = config_vocab_size(opt.model);  // token ids and labels must index the embedding
  PackOptions popt;
  popt.packing = opt.packing;
  popt.max_length = opt.max_length;
  popt.truncation = opt.truncation;
  PackStats pst;
  auto rows = pack_samples(load_samples(opt.data, dopt), popt, &pst);
  ESFT_CHECK(!rows.empty(), "{}: no training samples", opt.data.string());
  if (pst.truncated_samples)
    log_warn(fmt::format("{} sample(s) longer than --max-length {} truncated ({} tokens dropped, --truncation {})",
                         pst.truncated_samples, opt.max_length, pst.dropped_tokens, opt.truncation));
  std::vector<PackedRow> eval_rows;
  if (!opt.eval_data.empty()) eval_rows = pack_samples(load_samples(opt.eval_data, dopt), popt);

  log_info(fmt::format("loading {} on {} ({}); {}", opt.model.string(), rt.device, at::toString(rt.dtype), par.describe()));
  LoadOptions load_opt{rt.device, rt.dtype};
  load_opt.expert_placement = par.placement(&sel);  // under expert parallelism, only this rank's experts
  auto model = load_model(opt.model, load_opt);
  sel.check_against(model->moe_layers(), model->n_routed_experts(), model->architecture(), opt.expert_config.string());
  if (opt.router_aux_loss && !model->has_router_aux_loss())
    fail("--router-aux-loss: {} defines no router load-balancing loss", model->architecture());
  model->configure_training(sel);
  par.attach(*model, &sel);
  auto params = model->trainable_tensors();
  // Under expert parallelism a rank may hold nothing to train; the selection as a whole must.
  // Replicated tensors are counted here once, experts once per replica group.
  double n_dense = 0, n_expert = 0;
  for (auto& p : params) (p.expert_ids.empty() ? n_dense : n_expert) += double(p.tensor.numel());
  const int64_t n_trainable = int64_t(n_dense + par.sum({n_expert})[0] / par.edp_size());
  ESFT_CHECK(n_trainable > 0, "{}: selects nothing to train", opt.expert_config.string());
  AdamW optim(params, opt.adamw);

  // Like HF's Trainer without drop_last: the last global batch of an epoch may be short.
  const int64_t n_rows = int64_t(rows.size()), steps_per_epoch = (n_rows + global - 1) / global;
  const int64_t total = opt.max_steps > 0 ? opt.max_steps : opt.epochs * steps_per_epoch;
  LrSchedule sched{opt.lr_scheduler, opt.lr, opt.min_lr, int64_t(std::ceil(opt.warmup_ratio * total)), total};
  sched.at(0);  // validates the scheduler name
  log_info(fmt::format("{} rows ({} packing, max length {}), {} steps of {} rows ({} micro-batches of {}); {} trainable "
                       "parameters in {} tensors",
                       n_rows, opt.packing, opt.max_length, total, global, global / micro, micro, n_trainable,
                       params.size()));

  // Steps whose loss or gradient norm was not finite and that were skipped (never applied).
  int64_t skipped = 0;
  auto position = [&](int64_t step) {
    auto p = run_position(opt, sched, n_rows, steps_per_epoch, global, micro, step);
    p["optimizer_steps"] = optim.steps();
    p["skipped_nonfinite_steps"] = skipped;
    return p;
  };

  int64_t start = 0;
  if (!opt.resume.empty())
    if (auto rp = find_resume_point(opt.resume, checkpoints)) {
      const auto& dir = rp->dir;
      // Every rank takes its own part (its experts) out of the one saved state.
      par.load_train_state(rp->tensors, optim, dir.string());
      start = rp->state["step"].get<int64_t>();
      skipped = rp->state.value("skipped_nonfinite_steps", int64_t(0));
      const int64_t applied = rp->state.value("optimizer_steps", start);
      ESFT_CHECK(applied == optim.steps(), "{}: trainer_state.json says {} optimizer steps, the optimizer state {}",
                 dir.string(), applied, optim.steps());
      compare_run_position(rp->state, position(start), dir / "trainer_state.json");
      ESFT_CHECK(start <= total, "{} is at step {}, past the {} steps of this run", dir.string(), start, total);
      log_info(fmt::format("resumed from {} at step {} (epoch {}, row {} of the epoch's order)", dir.string(), start,
                           start / steps_per_epoch, std::min(n_rows, (start % steps_per_epoch) * global)));
    }

  std::ofstream metrics;  // rank 0 only
  std::optional<EventWriter> events;
  if (par.is_main()) {
    if (start) truncate_metrics(metrics_path, start);
    if (metrics_path.has_parent_path()) fs::create_directories(metrics_path.parent_path());
    metrics.open(metrics_path, start ? std::ios::app : std::ios::trunc);
    ESFT_CHECK(metrics.good(), "{}: cannot write", metrics_path.string());
    events.emplace(tb_dir);
    if (start) events->session_start(start + 1);  // TensorBoard drops the redone steps' old values
  }
  // A stop asked for while loading: nothing new to save. Every rank agrees on stopping (a signal
  // may reach the ranks at different times), at the same point of every step.
  auto agreed_stop = [&] { return int(par.max(double(stop_signal()))); };
  if (int sig = agreed_stop()) {
    log_warn(fmt::format("stopped by signal {} before step {}: nothing new to save", sig, start + 1));
    return {sig, start, skipped};
  }
  ProgressBar bar("train", total - start, "step");
  std::vector<size_t> order;
  int64_t order_epoch = -1;
  for (int64_t step = start; step < total; ++step) {
    const int64_t epoch = step / steps_per_epoch, b = step % steps_per_epoch;
    if (epoch != order_epoch) {
      order.resize(rows.size());
      for (size_t i = 0; i < order.size(); ++i) order[i] = i;
      python_shuffle(order, opt.seed + uint64_t(epoch));
      order_epoch = epoch;
    }
    std::vector<size_t> batch_rows(order.begin() + b * global,
                                   order.begin() + std::min<int64_t>((b + 1) * global, int64_t(order.size())));
    int64_t n_items = 0;
    for (auto i : batch_rows) n_items += loss_tokens(rows[i]);

    auto t0 = std::chrono::steady_clock::now();
    // The step's micro batches in the single-process order (shared round-robin over the ranks).
    const int64_t n_micro = (int64_t(batch_rows.size()) + micro - 1) / micro;
    auto micro_batch = [&](int64_t k, int64_t* tok) {
      const size_t m = k * micro;
      std::vector<size_t> idx(batch_rows.begin() + m, batch_rows.begin() + std::min(batch_rows.size(), size_t(m + micro)));
      return make_batch(rows, idx, tok);
    };
    const double lr = sched.at(step);
    // HF num_items_in_batch semantics: token-sum over the global batch / its label count, so
    // accumulating micro batches gives exactly the gradient of the whole batch (n_items counts
    // the whole global batch, which every rank holds; the all-reduced count checks it).
    auto res = train_step(*model, optim, n_micro, micro_batch, n_items, lr, opt.max_grad_norm,
                          ForwardOptions{false, nullptr, opt.router_aux_loss, opt.checkpoint_layers}, &par);
    ESFT_CHECK(res.loss_tokens == n_items, "step {}: the model counted {} loss tokens, the batch holds {}", step + 1,
               res.loss_tokens, n_items);
    if (n_items == 0) log_warn(fmt::format("step {}: no label tokens in this batch: nothing to learn, the weights stay as they are", step + 1));
    const double loss_sum = res.loss_sum, gnorm = res.grad_norm, a2a_s = res.comm_seconds;
    const int64_t n_tokens = res.tokens, n_counted = res.loss_tokens, trained_rows = res.trained_expert_rows;
    synchronize(model->device());
    double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    double loss = n_items ? loss_sum / n_items : 0, tps = n_tokens / std::max(dt, 1e-9);
    const double tps_gpu = tps / par.world_size();
    nlohmann::json rec = {{"step", step + 1}, {"epoch", epoch}, {"loss", loss}, {"grad_norm", gnorm}, {"lr", lr},
                          {"tokens", n_tokens}, {"loss_tokens", n_items}, {"tokens_per_s", tps}, {"seconds", dt}};
    std::string line = fmt::format("step {}/{} | loss {:.4f} | grad_norm {:.4f} | lr {:.3e} | tok/s {:.0f}", step + 1,
                                   total, loss, gnorm, lr, tps);
    if (par.world_size() > 1) {
      rec["tokens_per_s_per_gpu"] = tps_gpu;
      rec["all_to_all_s"] = a2a_s;
      line += fmt::format(" | tok/s/gpu {:.0f}", tps_gpu);
      if (par.ep_size() > 1) line += fmt::format(" | a2a {:.3f}s", a2a_s);
    }
    {
      // The FLOPs this step needs: forward, input gradients from the first trained layer on,
      // weight gradients of trained tensors only (experts: the rows routed to them), attention
      // over the actual documents; activation-checkpointing recomputation is not counted.
      FlopQuery fq;
      fq.backward = true;
      fq.lm_head_tokens = n_counted;
      fq.trained_expert_rows = trained_rows;  // summed over the ranks, like the documents of the global batch
      for (auto i : batch_rows) append_doc_lengths(rows[i], fq.doc_lengths);
      const double tflops = model->flops(fq) / std::max(dt, 1e-9) / 1e12 / par.world_size();  // per GPU
      line += fmt::format(" | {:.1f} TFLOP/s", tflops);
      rec["tflops"] = tflops;
      if (const double peak = rt.device == "cpu" ? opt.cpu_peak_tflops : opt.peak_tflops; peak > 0) {
        line += fmt::format(" | mfu {:.1f}%", 100 * tflops / peak);
        rec["mfu"] = tflops / peak;
      }
    }
    const bool last = step + 1 == total;
    if (!eval_rows.empty() && ((opt.eval_steps > 0 && (step + 1) % opt.eval_steps == 0) || last)) {
      double el = eval_loss(*model, eval_rows, micro, par);
      line += fmt::format(" | eval_loss {:.4f}", el);
      rec["eval_loss"] = el;
    }
    const double mem_gib = peak_memory_gib(rt.device);
    rec["peak_memory_gib"] = mem_gib;
    if (!res.finite) {
      ++skipped;
      rec["skipped"] = "non-finite loss or gradient norm: the step was not applied";
      line += " | SKIPPED (non-finite)";
    }
    if ((step + 1) % std::max<int64_t>(1, opt.log_steps) == 0 || last || !res.finite) {
      if (stderr_is_tty()) std::fprintf(stderr, "\r\033[K");
      log_info(line);
    }
    if (par.is_main()) {
      metrics << rec.dump() << "\n" << std::flush;
      std::vector<std::pair<std::string, double>> tb = {
          {"train/loss", loss}, {"train/grad_norm", gnorm}, {"train/learning_rate", lr}, {"train/tokens_per_s", tps},
          {"train/tflops", rec["tflops"].get<double>()}, {"train/peak_memory_gib", mem_gib}};
      if (rec.contains("mfu")) tb.push_back({"train/mfu", rec["mfu"].get<double>()});
      if (rec.contains("eval_loss")) tb.push_back({"eval/loss", rec["eval_loss"].get<double>()});
      if (!res.finite) tb.push_back({"train/skipped_nonfinite_steps", double(skipped)});
      events->scalars(step + 1, tb);
      events->flush();
    }
    if (!res.finite && skipped > opt.max_nonfinite_steps) {
      bar.finish();
      std::string last_good = "none was written";
      std::vector<int64_t> steps;
      if (fs::is_directory(checkpoints))
        for (auto& e : fs::directory_iterator(checkpoints))
          if (checkpoint_step(e.path()) >= 0) steps.push_back(checkpoint_step(e.path()));
      if (!steps.empty())
        last_good = fmt::format("{} (continue with --resume {})",
                                (checkpoints / fmt::format("step-{}", *std::max_element(steps.begin(), steps.end()))).string(),
                                opt.output.string());
      fail("step {}: the loss ({}) or the gradient norm ({}) is not finite; the step was not applied and the run stops. "
           "The model's weights, the data or the learning rate produce NaN/Inf. Last good checkpoint: {}. "
           "--max-nonfinite-steps N skips up to N such steps instead",
           step + 1, loss, gnorm, last_good);
    }
    if (!res.finite)
      log_warn(fmt::format("step {}: non-finite loss or gradient norm: step skipped ({} of at most {}, "
                           "--max-nonfinite-steps)", step + 1, skipped, opt.max_nonfinite_steps));
    bar.update(step + 1 - start, fmt::format("loss {:.4f}", loss));
    bool saved = false;
    if (opt.save_steps > 0 && (step + 1) % opt.save_steps == 0 && !last) {
      save_checkpoint(*model, optim, opt, checkpoints, position(step + 1), par);
      saved = true;
    }
    if (opt.stop_after > 0 && step + 1 == opt.stop_after && !last) {
      bar.finish();
      if (!saved) save_checkpoint(*model, optim, opt, checkpoints, position(step + 1), par);
      log_info(fmt::format("stopping after step {} as asked; continue with --resume {}", step + 1, opt.output.string()));
      return {0, step + 1, skipped};
    }
    if (int sig = agreed_stop(); sig && !last) {
      bar.finish();
      if (!saved) save_checkpoint(*model, optim, opt, checkpoints, position(step + 1), par);
      log_warn(fmt::format("stopped by signal {} ({}) after step {}: checkpoint {} written; continue with --resume {} "
                           "(exit status {})",
                           sig, strsignal(sig), step + 1, (checkpoints / fmt::format("step-{}", step + 1)).string(),
                           opt.output.string(), kExitInterrupted));
      return {sig, step + 1, skipped};
    }
  }
  bar.finish();
  if (double gib = peak_device_memory_gib(rt.device)) log_info(fmt::format("peak GPU memory {:.1f} GiB", gib));
  if (opt.save_steps > 0) save_checkpoint(*model, optim, opt, checkpoints, position(total), par);
  if (skipped) log_warn(fmt::format("{} step(s) of {} were skipped for a non-finite loss or gradient norm", skipped, total));
  auto adapter = par.gather_adapter(*model);
  if (!par.is_main()) return {0, total, skipped};
  write_adapter(adapter, opt.expert_config, opt.output / "adapter");
  log_info(fmt::format("wrote the adapter to {}", (opt.output / "adapter").string()));
  if (opt.save_full) {
    if (par.world_size() == 1) write_full_checkpoint(*model, opt.model, opt.output / "full");
    else write_merged_checkpoint(opt.model, adapter, sel, opt.output / "full");  // rank 0 holds only its experts
    log_info(fmt::format("wrote the full checkpoint to {}", (opt.output / "full").string()));
  }
  return {0, total, skipped};
}

}  // namespace esft
