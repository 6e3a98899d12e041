#include "score_output.h"

#include "esft/error.h"
#include "esft/log.h"

#include <regex>

namespace esft {

std::unique_ptr<DirectoryLock> prepare_score_output(const ScoreOptions& opt, bool main_process) {
  if (path_within(opt.model, opt.output))
    fail("--output {} holds --model {}: the run would write into its own input; choose another output directory",
         opt.output.string(), opt.model.string());
  if (path_within(opt.data, opt.output) && path_within(opt.output, opt.data))
    fail("--output {} is --data: choose an output directory", opt.output.string());
  fs::create_directories(opt.output);
  if (!main_process) return nullptr;
  auto lock = std::make_unique<DirectoryLock>(opt.output, "--output");
  std::vector<fs::path> dirs = {opt.output, opt.output / ".cache"};
  for (auto& e : fs::directory_iterator(opt.output))
    if (e.is_directory() && e.path().filename().string().rfind("rank_", 0) == 0) dirs.push_back(e.path());
  for (auto& d : dirs)
    for (auto& what : remove_stale_temporaries(d)) log_info("cleaning up after an interrupted run: " + what);
  // This run's results replace the previous ones as a whole: none of those may outlive a failure.
  for (auto name : {"summary.json", "score_config.json"}) fs::remove(opt.output / name);
  static const std::regex log_re(R"(expert_weights_\d+\.txt)");
  for (auto& d : dirs)
    if (d != opt.output / ".cache")
      for (auto& e : fs::directory_iterator(d))
        if (e.is_regular_file() && std::regex_match(e.path().filename().string(), log_re)) fs::remove(e.path());
  return lock;
}

}  // namespace esft
