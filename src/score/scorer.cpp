#include "esft/score.h"

#include <fmt/format.h>

#include "esft/data.h"
#include "esft/error.h"
#include "esft/log.h"
#include "esft/model.h"
#include "esft/progress.h"
#include "esft/routing_stats.h"
#include "esft/runtime.h"

namespace esft {
namespace {

// Router hook that feeds the reference-format routing statistics.
class StatsObserver : public RoutingObserver {
 public:
  explicit StatsObserver(RoutingStats& stats) : stats_(stats) {}
  void on_routing(int layer, const at::Tensor& ids_TK, const at::Tensor& w_TK) override {
    auto ids = ids_TK.to(at::kCPU, at::kLong).contiguous();
    auto w = w_TK.to(at::kCPU, at::kFloat).contiguous();
    stats_.add(layer, ids.data_ptr<int64_t>(), w.data_ptr<float>(), ids.size(0));
  }

 private:
  RoutingStats& stats_;
};

}  // namespace

ScoreResult run_scoring(const ScoreOptions& opt) {
  ESFT_CHECK(opt.world_size >= 1 && opt.rank >= 0 && opt.rank < opt.world_size, "--rank must be in [0, --world-size)");
  ESFT_CHECK(opt.n_sample_tokens >= 0, "--n-sample-tokens must be >= 0 (0 = all data)");
  ESFT_CHECK(opt.max_length >= 0, "--max-length must be >= 0 (0 = no limit)");
  auto rt = resolve_runtime(opt.device, opt.dtype);
  fs::create_directories(opt.output);

  DataOptions dopt;
  dopt.model_dir = opt.model;
  dopt.chat_format = opt.chat_format;
  dopt.skip_bad_lines = opt.skip_bad_lines;
  dopt.cache_dir = opt.output / ".cache";
  auto samples = load_samples(opt.data, dopt);
  ESFT_CHECK(!samples.empty(), "{}: no samples", opt.data.string());
  int64_t planned = 0;
  auto picked = select_scoring_samples(samples, opt.n_sample_tokens, opt.seed, opt.rank, opt.world_size, opt.max_length,
                                       &planned);

  log_info(fmt::format("loading {} on {} ({})", opt.model.string(), rt.device, at::toString(rt.dtype)));
  auto model = load_model(opt.model, LoadOptions{rt.device, rt.dtype});
  RoutingStats stats(model->n_routed_experts(), model->top_k(), opt.output / fmt::format("rank_{}", opt.rank));
  StatsObserver observer(stats);

  at::InferenceMode im;
  ProgressBar bar("score", planned, "tok");
  ScoreResult res;
  double loss_sum = 0, t_first = 0;  // the first forward pays one-off set-up: throughput is reported without it too
  int64_t loss_tokens = 0, n_first = 0;
  for (size_t idx : picked) {
    const auto& s = samples[idx];
    int64_t n = opt.max_length > 0 ? std::min<int64_t>(s.input_ids.size(), opt.max_length) : s.input_ids.size();
    if (n == 0) continue;
    auto ids = at::tensor(std::vector<int64_t>(s.input_ids.begin(), s.input_ids.begin() + n), at::kLong).unsqueeze(0);
    auto labels = at::tensor(std::vector<int64_t>(s.labels.begin(), s.labels.begin() + n), at::kLong).unsqueeze(0);
    ForwardOptions fo;
    fo.return_logits = false;
    fo.observer = &observer;
    auto r = model->forward(Batch{ids, labels, {}, {}}, fo);
    if (r.n_loss_tokens > 0) loss_sum += r.loss_sum.item<double>(), loss_tokens += r.n_loss_tokens;
    res.tokens += n;
    ++res.samples;
    if (!n_first) n_first = res.tokens, t_first = bar.elapsed_s();
    bar.update(res.tokens);
  }
  bar.finish();
  stats.finish();

  auto summary = summarize_routing_logs(opt.output, model->top_k());
  write_file_atomic(opt.output / "summary.json", dump_json(summary));
  nlohmann::json meta = {{"model", fs::absolute(opt.model).string()},
                         {"data", fs::absolute(opt.data).string()},
                         {"architecture", model->architecture()},
                         {"n_routed_experts", model->n_routed_experts()},
                         {"top_k", model->top_k()},
                         {"moe_layers", model->moe_layers()},
                         {"seed", opt.seed},
                         {"world_size", opt.world_size}};
  write_file_atomic(opt.output / "score_config.json", meta.dump(2) + "\n");
  res.seconds = bar.elapsed_s();
  res.steady_tokens_per_s = res.tokens > n_first ? (res.tokens - n_first) / std::max(res.seconds - t_first, 1e-9) : 0;
  res.mean_loss = loss_tokens ? loss_sum / loss_tokens : 0;
  log_info(fmt::format("scored {} samples, {} tokens in {:.1f}s ({:.0f} tok/s{}){}; wrote {}", res.samples, res.tokens,
                       res.seconds, res.tokens / std::max(res.seconds, 1e-9),
                       res.steady_tokens_per_s > 0 ? fmt::format(", {:.0f} tok/s after the first sample", res.steady_tokens_per_s) : "",
                       loss_tokens ? fmt::format(", mean loss {:.4f}", res.mean_loss) : "",
                       (opt.output / "summary.json").string()));
  return res;
}

}  // namespace esft
