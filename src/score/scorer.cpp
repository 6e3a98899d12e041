// The scoring engine. Samples are packed into batches of up to --batch-tokens tokens, one row with
// document masking (attention and positions restart per sample), so each sample is routed as if
// it ran alone. The router hook only keeps each layer's decision on the device; after a forward
// they are copied to pinned host memory in one go, without waiting, and a writer thread turns
// them into the reference's log lines (one per sample and layer, layers in parallel) while the
// device runs the next batch.
#include "esft/score.h"

#include <ATen/Parallel.h>
#include <fmt/format.h>

#include <condition_variable>
#include <deque>
#include <exception>
#include <mutex>
#include <thread>

#include "esft/data.h"
#include "esft/dist/parallel.h"
#include "esft/error.h"
#include "esft/log.h"
#include "esft/model.h"
#include "esft/progress.h"
#include "esft/routing_capture.h"
#include "esft/routing_stats.h"
#include "esft/runtime.h"
#include "score_output.h"

namespace esft {
namespace {

// One batch's routing on its way to the logs, and where each sample's tokens are.
struct HostBatch {
  HostRouting routing;
  std::vector<std::pair<int64_t, int64_t>> samples;  // (first token, tokens)
};

// Writes batches in order on its own thread; the queue holds at most two, so the device runs at
// most two batches ahead of the logs.
class LogWriter {
 public:
  LogWriter(RoutingStats& stats, std::vector<int> layers) : stats_(stats), layers_(std::move(layers)) {
    stats_.prepare_layers(layers_);
    thread_ = std::thread([this] { run(); });
  }
  ~LogWriter() { close(); }
  void push(HostBatch b) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return queue_.size() < 2 || error_; });
    rethrow();
    queue_.push_back(std::move(b));
    cv_.notify_all();
  }
  // Waits for everything written; rethrows a writer error.
  void close() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      done_ = true;
      cv_.notify_all();
    }
    if (thread_.joinable()) thread_.join();
    rethrow();
  }

 private:
  void rethrow() {
    if (error_) std::rethrow_exception(std::exchange(error_, nullptr));
  }
  void run() {
    try {
      for (;;) {
        HostBatch b;
        {
          std::unique_lock<std::mutex> lock(mu_);
          cv_.wait(lock, [&] { return !queue_.empty() || done_; });
          if (queue_.empty()) return;
          b = std::move(queue_.front());
          queue_.pop_front();
          cv_.notify_all();
        }
        b.routing.wait();
        const int64_t T = b.routing.ids.size(1), K = b.routing.ids.size(2);
        const int64_t* ids = b.routing.ids.data_ptr<int64_t>();
        const float* w = b.routing.weights.data_ptr<float>();
        at::parallel_for(0, int64_t(layers_.size()), 1, [&](int64_t lo, int64_t hi) {
          for (int64_t l = lo; l < hi; ++l)
            for (auto [first, n] : b.samples)
              stats_.add(layers_[l], ids + (l * T + first) * K, w + (l * T + first) * K, n);
        });
      }
    } catch (...) {
      std::lock_guard<std::mutex> lock(mu_);
      error_ = std::current_exception();
      cv_.notify_all();
    }
  }

  RoutingStats& stats_;
  std::vector<int> layers_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<HostBatch> queue_;
  bool done_ = false;
  std::exception_ptr error_;
  std::thread thread_;
};

// Consecutive samples packed into batches of at most batch_tokens (a longer sample goes alone);
// batch_tokens 0: one sample per batch.
std::vector<std::vector<size_t>> make_batches(const std::vector<Sample>& samples, const std::vector<size_t>& picked,
                                              int64_t max_length, int64_t batch_tokens) {
  std::vector<std::vector<size_t>> out;
  int64_t filled = 0;
  for (size_t idx : picked) {
    int64_t n = samples[idx].input_ids.size();
    if (max_length > 0) n = std::min(n, max_length);
    if (n == 0) continue;
    if (out.empty() || batch_tokens <= 0 || filled + n > batch_tokens) out.emplace_back(), filled = 0;
    out.back().push_back(idx);
    filled += n;
  }
  return out;
}

}  // namespace

ScoreResult run_scoring(const ScoreOptions& opt) {
  ESFT_CHECK(opt.world_size >= 1 && opt.rank >= 0 && opt.rank < opt.world_size, "--rank must be in [0, --world-size)");
  ESFT_CHECK(opt.n_sample_tokens >= 0, "--n-sample-tokens must be >= 0 (0 = all data)");
  ESFT_CHECK(opt.max_length >= 0, "--max-length must be >= 0 (0 = no limit)");
  ESFT_CHECK(opt.batch_tokens >= 0, "--batch-tokens must be >= 0 (0 = one sample per forward)");
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
  auto output_lock = prepare_score_output(opt, par.is_main(), rank);

  DataOptions dopt;
  dopt.model_dir = opt.model;
  dopt.chat_format = opt.chat_format;
  dopt.skip_bad_lines = opt.skip_bad_lines;
  dopt.cache_dir = opt.cache_dir.empty() ? opt.output / ".cache" : opt.cache_dir;
  dopt.vocab_size = config_vocab_size(opt.model);
  auto samples = load_samples(opt.data, dopt);
  ESFT_CHECK(!samples.empty(), "{}: no samples", opt.data.string());
  int64_t planned = 0;
  auto picked = select_scoring_samples(samples, opt.n_sample_tokens, opt.seed, rank, world, opt.max_length, &planned);

  log_info(fmt::format("loading {} on {} ({}); {}", opt.model.string(), rt.device, at::toString(rt.dtype), par.describe()));
  LoadOptions load_opt{rt.device, rt.dtype};
  load_opt.expert_placement = par.placement(nullptr);
  auto model = load_model(opt.model, load_opt);
  par.attach(*model, nullptr);
  const at::Device dev(rt.device);
  const auto rank_dir = opt.output / fmt::format("rank_{}", rank);
  RoutingStats stats(model->n_routed_experts(), model->top_k(), rank_dir);
  const auto layers = model->moe_layers();
  LogWriter writer(stats, layers);

  at::InferenceMode im;
  ProgressBar bar("score", planned, "tok");
  ScoreResult res;
  double loss_sum = 0, t_first = 0;  // the first forward pays one-off set-up: throughput is reported without it too
  int64_t loss_tokens = 0, n_first = 0;
  const auto batches = make_batches(samples, picked, opt.max_length, opt.batch_tokens);
  // Under expert parallelism every forward is a collective: all ranks run as many as the busiest.
  const int64_t passes = par.lockstep() ? int64_t(par.max(double(batches.size()))) : int64_t(batches.size());
  for (int64_t k = 0; k < passes; ++k) {
    if (k >= int64_t(batches.size())) {
      model->forward(Batch{at::zeros({1, 1}, at::kLong), {}, {}, {}}, ForwardOptions{false, nullptr, false});
      continue;
    }
    const auto& batch = batches[k];
    // One row: the samples end to end, positions restarting, attention only within a sample.
    std::vector<int64_t> ids, labels, pos, doc;
    HostBatch hb;
    for (size_t j = 0; j < batch.size(); ++j) {
      const auto& s = samples[batch[j]];
      const int64_t n = opt.max_length > 0 ? std::min<int64_t>(s.input_ids.size(), opt.max_length) : s.input_ids.size();
      hb.samples.push_back({int64_t(ids.size()), n});
      for (int64_t t = 0; t < n; ++t)
        ids.push_back(s.input_ids[t]), labels.push_back(s.labels[t]), pos.push_back(t), doc.push_back(int64_t(j));
    }
    const int64_t T = ids.size();
    Batch b{at::tensor(ids, at::kLong).view({1, T}), {}, {}, {}};
    if (batch.size() > 1) {
      b.position_ids = at::tensor(pos, at::kLong).view({1, T});
      b.doc_ids = at::tensor(doc, at::kLong).view({1, T});
      add_document_layout(b);
    }
    // The loss is only computed when asked for: without labels the LM head does not run at all.
    // Labels restart per sample (a sample's first label predicted from another sample is masked).
    if (opt.report_loss) {
      for (auto [first, n] : hb.samples) labels[first] = kIgnoreIndex;
      b.labels = at::tensor(labels, at::kLong).view({1, T});
    }
    RoutingCapture capture;
    ForwardOptions fo;
    fo.return_logits = false;
    fo.observer = &capture;
    auto r = model->forward(b, fo);
    hb.routing = capture.to_host(layers, dev);
    writer.push(std::move(hb));
    if (r.n_loss_tokens > 0) loss_sum += r.loss_sum.item<double>(), loss_tokens += r.n_loss_tokens;
    res.tokens += T;
    res.samples += batch.size();
    if (!n_first) n_first = res.tokens, t_first = bar.elapsed_s();
    bar.update(res.tokens);
  }
  writer.close();
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
                       res.steady_tokens_per_s > 0 ? fmt::format(", {:.0f} tok/s after the first batch", res.steady_tokens_per_s) : "",
                       loss_tokens ? fmt::format(", mean loss {:.4f}", res.mean_loss) : "",
                       (opt.output / "summary.json").string()));
  return res;
}

}  // namespace esft
