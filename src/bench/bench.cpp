#include <fmt/format.h>
#include <torch/csrc/autograd/profiler_kineto.h>

#include <chrono>

#include "esft/bench.h"
#include "esft/error.h"
#include "esft/log.h"
#include "esft/model.h"
#include "esft/routing_capture.h"
#include "esft/runtime.h"
#include "esft/train_step.h"

namespace esft {
namespace {

using Clock = std::chrono::steady_clock;

// The timed steps under the kineto profiler (CPU ops and CUDA kernels), saved as a Chrome trace.
class Profile {
 public:
  Profile(const std::string& path, const at::Device& dev) : path_(path) {
    if (path_.empty()) return;
    namespace prof = torch::profiler::impl;
    std::set<prof::ActivityType> act{prof::ActivityType::CPU};
    if (dev.is_cuda()) act.insert(prof::ActivityType::CUDA);
    prof::ProfilerConfig cfg(prof::ProfilerState::KINETO);
    torch::autograd::profiler::prepareProfiler(cfg, act);
    torch::autograd::profiler::enableProfiler(cfg, act);
  }
  void finish() {
    if (path_.empty()) return;
    torch::autograd::profiler::disableProfiler()->save(path_);
    log_info("wrote the profile " + path_);
    path_.clear();
  }

 private:
  std::string path_;
};
double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

nlohmann::json report(const BenchOptions& opt, const std::string& task, int64_t layers, double tokens, double flops,
                      double seconds, const std::string& device) {
  const double tflops = flops / seconds / 1e12;
  nlohmann::json j = {{"task", task}, {"shape", opt.shape}, {"layers", layers}, {"device", device},
                      {"tokens_per_s", tokens / seconds}, {"tflops", tflops},
                      {"mfu", opt.peak_tflops > 0 ? tflops / opt.peak_tflops : 0.0},
                      {"peak_gib", peak_device_memory_gib(device)}, {"seconds", seconds}};
  if (task == "train_ckpt") j["checkpoint_layers"] = checkpointed_layer_count(opt.checkpoint_layers, layers);
  std::printf("%s\n", j.dump().c_str());
  std::fflush(stdout);
  return j;
}

// Scoring: forwards of samples packed with document masking, routing captured and copied to the
// host after each (what esft score does, minus writing the log files, which a thread overlaps).
nlohmann::json bench_score(const BenchOptions& opt, MoeModel& model, int64_t layers, const std::string& device) {
  const int64_t per_forward = opt.score_tokens > 0 ? opt.score_tokens : opt.batch * opt.seq;
  const int64_t docs = std::max<int64_t>(1, per_forward / opt.seq), T = docs * opt.seq;
  std::vector<int64_t> pos(T), doc(T);
  for (int64_t t = 0; t < T; ++t) pos[t] = t % opt.seq, doc[t] = t / opt.seq;
  const at::Device dev(device);
  const auto moe = model.moe_layers();
  at::InferenceMode im;
  auto run = [&](int64_t i, std::optional<HostRouting>& pending) {
    Batch b{at::randint(0, model.vocab_size(), {1, T}, at::kLong), {}, at::tensor(pos, at::kLong).view({1, T}),
            at::tensor(doc, at::kLong).view({1, T})};
    if (docs > 1) add_document_layout(b);
    else b.position_ids = b.doc_ids = at::Tensor();
    RoutingCapture capture;
    ForwardOptions fo;
    fo.return_logits = false;
    fo.observer = &capture;
    model.forward(b, fo);
    if (pending) pending->wait();  // the previous batch's routing reached the host
    pending = capture.to_host(moe, dev);
  };
  std::optional<HostRouting> pending;
  for (int64_t i = 0; i < opt.warmup; ++i) run(i, pending);
  synchronize(dev);
  reset_peak_device_memory(device);
  Profile prof(opt.profile.empty() ? "" : opt.profile + ".score.json", dev);
  auto t0 = Clock::now();
  for (int64_t i = 0; i < opt.steps; ++i) run(i, pending);
  if (pending) pending->wait();
  synchronize(dev);
  const double dt = since(t0);
  prof.finish();
  FlopQuery q;
  q.doc_lengths.assign(docs, opt.seq);
  return report(opt, "score", layers, double(T) * opt.steps, model.flops(q) * opt.steps, dt, device);
}

// ESFT training: micro-batch of batch rows x seq tokens, every token labelled, experts_per_layer
// experts trained per MoE layer, AdamW, clipping.
nlohmann::json bench_train(const BenchOptions& opt, MoeModel& model, int64_t layers, const std::string& device) {
  const int E = model.n_routed_experts();
  ExpertSelection sel;
  for (int l : model.moe_layers())
    for (int64_t j = 0; j < std::min<int64_t>(opt.experts_per_layer, E); ++j)
      sel.experts[l].push_back(int((j * E / std::max<int64_t>(opt.experts_per_layer, 1) + l) % E));
  model.configure_training(sel);
  AdamW optim(model.trainable_tensors(), AdamWOptions{});
  const at::Device dev(device);
  ForwardOptions fo;
  fo.return_logits = false;
  fo.checkpoint_layers = opt.checkpoint_layers;
  double flops = 0;
  auto step = [&](bool timed) {
    auto ids = at::randint(0, model.vocab_size(), {opt.batch, opt.seq}, at::kLong);
    int64_t n_items = opt.batch * (opt.seq - 1);
    auto r = train_step(model, optim, 1, [&](int64_t, int64_t* tok) { *tok = ids.numel(); return Batch{ids, ids, {}, {}}; },
                        n_items, 1e-5, 1.0, fo, nullptr);
    if (!timed) return;
    FlopQuery q;
    q.doc_lengths.assign(opt.batch, opt.seq);
    q.backward = true;
    q.lm_head_tokens = r.loss_tokens;
    q.trained_expert_rows = r.trained_expert_rows;
    flops += model.flops(q);
  };
  for (int64_t i = 0; i < opt.warmup; ++i) step(false);
  synchronize(dev);
  reset_peak_device_memory(device);
  const std::string task = opt.checkpoint_layers != 0 ? "train_ckpt" : "train";
  Profile prof(opt.profile.empty() ? "" : opt.profile + "." + task + ".json", dev);
  auto t0 = Clock::now();
  for (int64_t i = 0; i < opt.steps; ++i) step(true);
  synchronize(dev);
  const double dt = since(t0);
  prof.finish();
  return report(opt, task, layers, double(opt.batch * opt.seq * opt.steps), flops, dt, device);
}

}  // namespace

std::vector<nlohmann::json> run_bench(const BenchOptions& opt) {
  auto cfg = shape_config(opt.shape);
  if (opt.layers > 0) cfg["num_hidden_layers"] = opt.layers;
  if (opt.vocab > 0) cfg["vocab_size"] = opt.vocab;
  ESFT_CHECK(opt.seq > 1 && opt.batch > 0 && opt.steps > 0 && opt.warmup >= 0, "--seq > 1, --batch > 0, --steps > 0 and --warmup >= 0");
  auto rt = resolve_runtime(opt.device, opt.dtype);
  const int64_t layers = cfg["num_hidden_layers"].get<int64_t>();
  std::vector<nlohmann::json> out;
  for (auto& task : opt.tasks) {
    ESFT_CHECK(task == "score" || task == "train", "--tasks: unknown task \"{}\" (score, train)", task);
    log_info(fmt::format("{}: building a random {} with {} layers on {} ({})", task, opt.shape, layers, rt.device,
                         at::toString(rt.dtype)));
    reset_peak_device_memory(rt.device);
    auto model = build_random_model(cfg, LoadOptions{rt.device, rt.dtype}, opt.seed);
    out.push_back(task == "score" ? bench_score(opt, *model, layers, rt.device) : bench_train(opt, *model, layers, rt.device));
  }
  return out;
}

}  // namespace esft
