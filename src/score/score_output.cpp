#include "score_output.h"

#include "esft/error.h"
#include "esft/log.h"
#include "esft/routing_stats.h"


namespace esft {

std::unique_ptr<DirectoryLock> prepare_score_output(const ScoreOptions& opt, bool main_process, int rank) {
  if (path_within(opt.model, opt.output))
    fail("--output {} holds --model {}: the run would write into its own input; choose another output directory",
         opt.output.string(), opt.model.string());
  if (path_within(opt.data, opt.output) && path_within(opt.output, opt.data))
    fail("--output {} is --data: choose an output directory", opt.output.string());
  fs::create_directories(opt.output);
  // This rank's earlier routing logs go before it scores: none may outlive a failure of this run.
  // Only this rank's: ranks run by hand (--rank/--world-size, the reference's way) are separate
  // runs into one directory, and each keeps the others' logs for the summary.
  const auto own = opt.output / ("rank_" + std::to_string(rank));
  if (fs::is_directory(own))
    for (auto& e : fs::directory_iterator(own))
      if (e.is_regular_file() && routing_log_layer(e.path().filename().string()) >= 0) fs::remove(e.path());
  if (!main_process) return nullptr;
  auto lock = std::make_unique<DirectoryLock>(opt.output, "--output");
  std::vector<fs::path> dirs = {opt.output, opt.output / ".cache"};
  for (auto& e : fs::directory_iterator(opt.output))
    if (e.is_directory() && e.path().filename().string().rfind("rank_", 0) == 0) dirs.push_back(e.path());
  for (auto& d : dirs)
    for (auto& what : remove_stale_temporaries(d)) log_info("cleaning up after an interrupted run: " + what);
  // The summary is rewritten after the logs: an old one must not outlive a failure of this run.
  for (auto name : {"summary.json", "score_config.json"}) fs::remove(opt.output / name);
  return lock;
}

}  // namespace esft
