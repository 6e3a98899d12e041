#include "esft/score.h"

#include <fmt/format.h>

#include "esft/data.h"
#include "esft/dist/parallel.h"
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
  // Launched as several processes, they share the samples as --rank/--world-size would, and the
  // model may be split over them by expert (a model too large for one GPU).
  auto& par = dist::ParallelContext::init(opt.expert_parallel, rt.device);
  rt.device = par.device();
  int rank = opt.rank, world = opt.world_size;
  if (par.launched()) {
    ESFT_CHECK(opt.world_size == 1 || opt.world_size == par.world_size(),
               "--world-size {} contradicts the {} processes launched", opt.world_size, par.world_size());
    rank = par.rank(), world = par.world_size();
  }
  fs::create_directories(opt.output);

  DataOptions dopt;
  dopt.model_dir = opt.model;
  dopt.chat_format = opt.chat_format;
  dopt.skip_bad_lines = opt.skip_bad_lines;
  dopt.cache_dir = opt.output / ".cache";
  auto samples = load_samples(opt.data, dopt);
  ESFT_CHECK(!samples.empty(), "{}: no samples", opt.data.string());
  int64_t planned = 0;
  auto picked = select_scoring_samples(samples, opt.n_sample_tokens, opt.seed, rank, world, opt.max_length, &planned);

  log_info(fmt::format("loading {} on {} ({}); {}", opt.model.string(), rt.device, at::toString(rt.dtype), par.describe()));
  LoadOptions load_opt{rt.device, rt.dtype};
  load_opt.expert_placement = par.placement(nullptr);
  auto model = load_model(opt.model, load_opt);
  par.attach(*model, nullptr);
  const auto rank_dir = opt.output / fmt::format("rank_{}", rank);
  RoutingStats stats(model->n_routed_experts(), model->top_k(), rank_dir);
  StatsObserver observer(stats);

  at::InferenceMode im;
  ProgressBar bar("score", planned, "tok");
  ScoreResult res;
  double loss_sum = 0, t_first = 0;  // the first forward pays one-off set-up: throughput is reported without it too
  int64_t loss_tokens = 0, n_first = 0;
  // Under expert parallelism every forward is a collective: all ranks run as many as the busiest.
  const int64_t passes = par.lockstep() ? int64_t(par.max(double(picked.size()))) : int64_t(picked.size());
  for (int64_t k = 0; k < passes; ++k) {
    const int64_t n_here = k < int64_t(picked.size()) ? int64_t(samples[picked[k]].input_ids.size()) : 0;
    if (n_here == 0) {
      if (par.lockstep()) model->forward(Batch{at::zeros({1, 1}, at::kLong), {}, {}, {}}, ForwardOptions{false, nullptr, false});
      continue;
    }
    const auto& s = samples[picked[k]];
    int64_t n = opt.max_length > 0 ? std::min<int64_t>(s.input_ids.size(), opt.max_length) : s.input_ids.size();
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

  if (world > 1 && par.launched()) {
    // Rank 0 merges: it gets every rank's logs (hosts need not share a file system).
    std::vector<std::pair<std::string, std::string>> files;
    for (auto& e : fs::directory_iterator(rank_dir))
      if (e.is_regular_file())
        files.push_back({(fs::path(rank_dir.filename()) / e.path().filename()).string(), read_file(e.path())});
    auto all = par.gather_blobs(files);
    auto counts = par.sum({double(res.samples), double(res.tokens), loss_sum, double(loss_tokens)});
    if (!par.is_main()) return res;
    for (auto& [name, bytes] : all) {
      fs::create_directories((opt.output / name).parent_path());
      write_file_atomic(opt.output / name, bytes);
    }
    res.samples = int64_t(counts[0]), res.tokens = int64_t(counts[1]), loss_sum = counts[2], loss_tokens = int64_t(counts[3]);
  }

  auto summary = summarize_routing_logs(opt.output, model->top_k());
  write_file_atomic(opt.output / "summary.json", dump_json(summary));
  nlohmann::json meta = {{"model", fs::absolute(opt.model).string()},
                         {"data", fs::absolute(opt.data).string()},
                         {"architecture", model->architecture()},
                         {"n_routed_experts", model->n_routed_experts()},
                         {"top_k", model->top_k()},
                         {"moe_layers", model->moe_layers()},
                         {"seed", opt.seed},
                         {"world_size", world},
                         {"expert_parallel", par.ep_size()}};
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
