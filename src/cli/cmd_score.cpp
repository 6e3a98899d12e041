// esft score: run the model over (a shuffled sample of) the training data, one sample per
// forward pass, and record which experts every token of every MoE layer goes to and with
// what gate weight, in the ESFT reference log format plus summary.json.
#include <cxxopts.hpp>

#include "esft/cli.h"
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

int cmd_score(int argc, char** argv) {
  cxxopts::Options o(argv[0], "Record per-layer expert routing statistics of a model over training data.\n"
                              "Writes OUT/rank_{r}/expert_weights_{L}.txt (ESFT reference format) and OUT/summary.json.");
  // clang-format off
  o.add_options()
    ("model", "HF checkpoint directory (config.json, safetensors, tokenizer files)", cxxopts::value<std::string>())
    ("data", "training data, jsonl (any format `esft tokenize` accepts)", cxxopts::value<std::string>())
    ("output", "output directory for the routing logs and summary.json", cxxopts::value<std::string>())
    ("n-sample-tokens", "stop after the sample that brings the logged token count to N (split over --world-size); 0 = all data", cxxopts::value<int64_t>()->default_value("131072"))
    ("seed", "shuffle seed (Python random.shuffle order; the ESFT reference uses 5934875)", cxxopts::value<uint64_t>()->default_value("5934875"))
    ("device", "cpu, cuda or cuda:N (default: cuda when available, else cpu)", cxxopts::value<std::string>()->default_value(""))
    ("dtype", "fp32, bf16 or fp16 (default: bf16 on cuda, fp32 on cpu)", cxxopts::value<std::string>()->default_value(""))
    ("chat-format", "chat format for conversation records: auto, esft, qwen, deepseek, glm4, gpt-oss, mixtral", cxxopts::value<std::string>()->default_value("auto"))
    ("max-length", "truncate longer samples to this many tokens (keeps the head); 0 = no limit", cxxopts::value<int64_t>()->default_value("0"))
    ("skip-bad-lines", "skip malformed jsonl lines (counted and reported) instead of stopping")
    ("rank", "this process's shard: it scores samples rank, rank+W, ... of the shuffled data", cxxopts::value<int>()->default_value("0"))
    ("world-size", "number of scoring processes W sharing the data", cxxopts::value<int>()->default_value("1"))
    ("h,help", "show this help");
  // clang-format on
  auto a = o.parse(argc, argv);
  if (a.count("help")) {
    std::printf("%s\n", o.help().c_str());
    return 0;
  }
  for (auto req : {"model", "data", "output"})
    if (!a.count(req)) fail("--{} is required (see --help)", req);
  fs::path model_dir = a["model"].as<std::string>(), data = a["data"].as<std::string>(),
           out = a["output"].as<std::string>();
  int rank = a["rank"].as<int>(), world = a["world-size"].as<int>();
  ESFT_CHECK(world >= 1 && rank >= 0 && rank < world, "--rank must be in [0, --world-size)");

  auto rt = resolve_runtime(a["device"].as<std::string>(), a["dtype"].as<std::string>());
  fs::create_directories(out);

  DataOptions dopt;
  dopt.model_dir = model_dir;
  dopt.chat_format = a["chat-format"].as<std::string>();
  dopt.skip_bad_lines = a.count("skip-bad-lines") > 0;
  dopt.cache_dir = out / ".cache";
  auto samples = load_samples(data, dopt);
  ESFT_CHECK(!samples.empty(), "{}: no samples", data.string());

  // Reference order: shuffle everything with the seed, shard round-robin, take whole samples
  // until this shard's token budget is reached.
  std::vector<size_t> order(samples.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  python_shuffle(order, a["seed"].as<uint64_t>());
  int64_t budget = a["n-sample-tokens"].as<int64_t>() / world, max_len = a["max-length"].as<int64_t>();
  std::vector<size_t> picked;
  int64_t planned = 0;
  for (size_t i = rank; i < order.size(); i += world) {
    if (budget > 0 && planned >= budget) break;
    picked.push_back(order[i]);
    int64_t n = samples[order[i]].input_ids.size();
    planned += max_len > 0 ? std::min(n, max_len) : n;
  }

  log_info(fmt::format("loading {} on {} ({})", model_dir.string(), rt.device, at::toString(rt.dtype)));
  auto model = load_model(model_dir, LoadOptions{rt.device, rt.dtype});
  RoutingStats stats(model->n_routed_experts(), model->top_k(), out / fmt::format("rank_{}", rank));
  StatsObserver observer(stats);

  at::InferenceMode im;
  ProgressBar bar("score", planned, "tok");
  int64_t done = 0;
  double loss_sum = 0;
  int64_t loss_tokens = 0;
  double t_first = 0;  // the first forward pays one-off CUDA/cuBLAS set-up: report throughput without it too
  int64_t n_first = 0;
  for (size_t idx : picked) {
    const auto& s = samples[idx];
    int64_t n = max_len > 0 ? std::min<int64_t>(s.input_ids.size(), max_len) : s.input_ids.size();
    if (n == 0) continue;
    auto ids = at::tensor(std::vector<int64_t>(s.input_ids.begin(), s.input_ids.begin() + n), at::kLong).unsqueeze(0);
    auto labels = at::tensor(std::vector<int64_t>(s.labels.begin(), s.labels.begin() + n), at::kLong).unsqueeze(0);
    ForwardOptions fo;
    fo.return_logits = false;
    fo.observer = &observer;
    auto r = model->forward(Batch{ids, labels, {}, {}}, fo);
    if (r.n_loss_tokens > 0) loss_sum += r.loss_sum.item<double>(), loss_tokens += r.n_loss_tokens;
    done += n;
    if (!n_first) n_first = done, t_first = bar.elapsed_s();
    bar.update(done);
  }
  bar.finish();
  stats.finish();

  auto summary = summarize_routing_logs(out, model->top_k());
  write_file_atomic(out / "summary.json", dump_json(summary));
  nlohmann::json meta = {{"model", fs::absolute(model_dir).string()},
                         {"data", fs::absolute(data).string()},
                         {"architecture", model->architecture()},
                         {"n_routed_experts", model->n_routed_experts()},
                         {"top_k", model->top_k()},
                         {"moe_layers", model->moe_layers()},
                         {"seed", a["seed"].as<uint64_t>()},
                         {"world_size", world}};
  write_file_atomic(out / "score_config.json", meta.dump(2) + "\n");
  double steady = done > n_first ? (done - n_first) / std::max(bar.elapsed_s() - t_first, 1e-9) : 0;
  log_info(fmt::format("scored {} samples, {} tokens in {:.1f}s ({:.0f} tok/s{}){}; wrote {}", picked.size(), done,
                       bar.elapsed_s(), done / std::max(bar.elapsed_s(), 1e-9),
                       steady > 0 ? fmt::format(", {:.0f} tok/s after the first sample", steady) : "",
                       loss_tokens ? fmt::format(", mean loss {:.4f}", loss_sum / loss_tokens) : "",
                       (out / "summary.json").string()));
  return 0;
}

}  // namespace
ESFT_SUBCOMMAND("score", "record expert routing statistics over training data", cmd_score);
}  // namespace esft
