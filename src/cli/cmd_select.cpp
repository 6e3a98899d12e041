// esft select: routing statistics -> expert_config.json (per layer, the experts that together
// hold top_p of the token or gate score), exactly as the ESFT reference selects them.
#include <cxxopts.hpp>

#include <cstdlib>
#include <map>

#include "esft/cli.h"
#include "esft/error.h"
#include "esft/log.h"
#include "esft/routing_stats.h"
#include "esft/run_control.h"
#include "flags.h"

namespace esft {
namespace {

bool has_logs(const fs::path& dir) {
  // Same names summarize_routing_logs reads (not the .tmp.<pid> leftovers of an interrupted run).
  auto is_log = [](const fs::path& p) { return routing_log_layer(p.filename().string()) >= 0; };
  for (auto& e : fs::directory_iterator(dir)) {
    if (e.is_regular_file() && is_log(e.path())) return true;
    if (e.is_directory() && e.path().filename().string().rfind("rank_", 0) == 0)
      for (auto& f : fs::directory_iterator(e.path()))
        if (is_log(f.path())) return true;
  }
  return false;
}

cxxopts::Options select_options(const std::string& prog) {
  cxxopts::Options o(prog, "Select the experts to train from routing statistics; writes expert_config.json.");
  // clang-format off
  o.add_options()
    ("scores", "`esft score` output, or a folder of official expert_weights_{L}.txt logs (also rank_*/ subfolders)", cxxopts::value<std::string>())
    ("output", "expert_config.json to write", cxxopts::value<std::string>())
    ("score-function", "token (share of routed slots) or gate (mean gate weight)", cxxopts::value<std::string>()->default_value("token"))
    ("top-p", "per layer, take experts by descending score until their scores sum to at least P (default 0.2 for token, 0.1 for gate, as in the paper)", cxxopts::value<double>())
    ("train-shared-experts", "also train the shared experts (families that have them)")
    ("train-non-expert-modules", "also train attention, norms, embeddings, lm_head and routers")
    ("top-k", "experts per token (default: from score_config.json beside the logs, else inferred from them)", cxxopts::value<int>())
    ("n-experts", "routed experts per layer (default: from score_config.json, else the largest id seen + 1)", cxxopts::value<int>())
    ("summary-output", "also write the computed summary.json here", cxxopts::value<std::string>())
    ("h,help", "show this help");
  // clang-format on
  return o;
}

int cmd_select(int argc, char** argv) {
  auto o = select_options(argv[0]);
  auto a = cli::parse_flags(o, argc, argv);
  if (a.count("help")) {
    std::printf("%s\n", o.help().c_str());
    return 0;
  }
  cli::require_flags(a, {"scores", "output"});
  fs::path dir = a["scores"].as<std::string>();
  if (!fs::is_directory(dir)) fail("--scores {}: not a directory", dir.string());

  SelectOptions opt;
  opt.score_function = a["score-function"].as<std::string>();
  if (opt.score_function != "token" && opt.score_function != "gate")
    fail("--score-function must be token or gate, not \"{}\"", opt.score_function);
  opt.top_p = a.count("top-p") ? cli::flag_number(a, "top-p", -1e9, 1e9) : (opt.score_function == "token" ? 0.2 : 0.1);
  opt.train_shared_experts = a.count("train-shared-experts") > 0;
  opt.train_non_expert_modules = a.count("train-non-expert-modules") > 0;

  if (opt.top_p <= 0 || opt.top_p > 1)
    log_warn(fmt::format("--top-p {} selects {}", opt.top_p, opt.top_p <= 0 ? "no expert in any layer" : "every expert of every layer"));
  const int top_k = a.count("top-k") ? a["top-k"].as<int>() : 0;            // 0: infer
  const int n_experts = a.count("n-experts") ? a["n-experts"].as<int>() : 0;  // 0: infer
  if (top_k < 0 || n_experts < 0) fail("--top-k and --n-experts must be positive");

  // Logs when present (exact recomputation, K and E checked), else the summary they produced.
  nlohmann::json summary;
  if (has_logs(dir)) {
    summary = summarize_routing_logs(dir, top_k, n_experts);
  } else if (fs::exists(dir / "summary.json")) {
    try {
      summary = nlohmann::json::parse(read_file(dir / "summary.json"));
    } catch (const nlohmann::json::exception& e) {
      fail("{}: not valid JSON: {}", (dir / "summary.json").string(), e.what());
    }
  } else {
    fail("{}: neither expert_weights_{{L}}.txt logs nor a summary.json", dir.string());
  }
  // The outputs must not replace what was read (the summary or score_config.json beside the logs).
  for (auto flag : {"output", "summary-output"}) {
    if (!a.count(flag)) continue;
    const fs::path out = a[flag].as<std::string>();
    const auto name = out.filename().string();
    if (path_within(out, dir) && (name == "summary.json" || name == "score_config.json" || routing_log_layer(name) >= 0))
      fail("--{} {} is one of the files --scores {} holds and this command reads; choose another path", flag,
           out.string(), dir.string());
  }
  if (a.count("summary-output")) write_file_atomic(a["summary-output"].as<std::string>(), dump_json(summary));
  auto sel = select_experts(summary, opt);
  fs::path out = a["output"].as<std::string>();
  write_file_atomic(out, dump_json(sel.to_json()));

  // Per-layer counts in numeric layer order (the JSON keeps the reference's string order).
  std::string per_layer;
  for (auto& [layer, ids] : sel.experts) per_layer += fmt::format(" {}:{}", layer, ids.size());
  log_info(fmt::format("{} score, top_p {}: {} experts over {} layers (layer:count{}); wrote {}", opt.score_function,
                       opt.top_p, sel.n_experts(), sel.experts.size(), per_layer, out.string()));
  return 0;
}

}  // namespace
ESFT_SUBCOMMAND("select", "choose the experts to train from routing statistics", cmd_select);
namespace cli {
cxxopts::Options select_flags() { return select_options("esft select"); }
}  // namespace cli
}  // namespace esft
