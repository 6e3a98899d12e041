// esft report: scores (and optionally expert configs and training runs) -> one HTML page.
#include <cxxopts.hpp>

#include "esft/cli.h"
#include "esft/error.h"
#include "esft/fs.h"
#include "esft/log.h"
#include "esft/report.h"
#include "flags.h"

namespace esft {
namespace {

int cmd_report(int argc, char** argv) {
  cxxopts::Options o(argv[0], "Write one self-contained HTML page (no scripts, nothing fetched) showing expert scores "
                              "per layer with the selected experts marked, the cumulative score against top_p, the "
                              "experts selected per layer, training and eval loss curves, and with several --scores "
                              "the overlap of the experts each task selects.");
  // clang-format off
  o.add_options()
    ("scores", "an `esft score` output directory; repeat for several tasks", cxxopts::value<std::vector<std::string>>())
    ("name", "the task names, in --scores order (default: each directory's name)", cxxopts::value<std::vector<std::string>>())
    ("expert-config", "the expert_config.json of each --scores, in order (default: selected from the scores with "
                      "--score-function and --top-p, as esft select does)", cxxopts::value<std::vector<std::string>>())
    ("run", "a training run directory (metrics.jsonl) or a metrics.jsonl file; may repeat", cxxopts::value<std::vector<std::string>>())
    ("score-function", "token or gate", cxxopts::value<std::string>()->default_value("token"))
    ("top-p", "selection threshold (default 0.2 for token, 0.1 for gate)", cxxopts::value<double>())
    ("title", "page title", cxxopts::value<std::string>()->default_value("ESFT report"))
    ("output", "HTML file to write", cxxopts::value<std::string>())
    ("h,help", "show this help");
  // clang-format on
  auto a = cli::parse_flags(o, argc, argv);
  if (a.count("help")) {
    std::printf("%s\n", o.help().c_str());
    return 0;
  }
  cli::require_flags(a, {"scores", "output"});
  ReportOptions r;
  auto scores = a["scores"].as<std::vector<std::string>>();
  std::vector<std::string> names, configs;
  if (a.count("name")) names = a["name"].as<std::vector<std::string>>();
  if (a.count("expert-config")) configs = a["expert-config"].as<std::vector<std::string>>();
  if (!names.empty() && names.size() != scores.size())
    fail("--name given {} times for {} --scores: give one per scores directory", names.size(), scores.size());
  if (!configs.empty() && configs.size() != scores.size())
    fail("--expert-config given {} times for {} --scores: give one per scores directory", configs.size(), scores.size());
  for (size_t i = 0; i < scores.size(); ++i) {
    if (!fs::is_directory(scores[i])) fail("--scores {}: not a directory", scores[i]);
    r.tasks.push_back({names.empty() ? "" : names[i], scores[i], configs.empty() ? "" : configs[i]});
  }
  if (a.count("run"))
    for (auto& p : a["run"].as<std::vector<std::string>>()) r.runs.push_back(p);
  r.score_function = a["score-function"].as<std::string>();
  if (a.count("top-p")) r.top_p = cli::flag_number(a, "top-p", 0, 1);
  r.title = a["title"].as<std::string>();
  const fs::path out = a["output"].as<std::string>();
  for (auto& s : scores)
    if (fs::exists(out) && fs::equivalent(out, s)) fail("--output {} is a --scores directory", out.string());
  write_file_atomic(out, make_report(r));
  log_info("wrote " + out.string());
  return 0;
}

}  // namespace
ESFT_SUBCOMMAND("report", "an HTML page of expert scores, selections and training curves", cmd_report);
}  // namespace esft
