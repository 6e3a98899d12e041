// esft report: one self-contained HTML page (inline SVG and CSS, no scripts, nothing fetched)
// that shows what scoring found and what was selected and trained:
//   per task: a heatmap of expert scores (layers x experts) with the selected experts outlined,
//   the cumulative score of each layer's experts in descending order against top_p, and the
//   number and ids of the selected experts per layer;
//   with several tasks: how many selected experts each pair of tasks shares (as in the ESFT
//   paper's figure on task specialisation);
//   with a training run: its training and eval loss curves.
// Torch-free.
#pragma once
#include <string>
#include <vector>

#include "esft/expert_config.h"
#include "esft/fs.h"

namespace esft {

struct ReportTask {
  std::string name;               // shown in titles (default: the scores directory's name)
  fs::path scores;                // esft score output (summary.json, or routing logs)
  fs::path expert_config;         // optional: the selection to mark; else computed from the scores
};

struct ReportOptions {
  std::vector<ReportTask> tasks;  // at least one
  std::string score_function = "token";
  double top_p = -1;              // < 0: 0.2 for token, 0.1 for gate (the paper's)
  std::vector<fs::path> runs;     // training runs (directories with metrics.jsonl, or the files)
  std::string title = "ESFT report";
};

// The page. Errors name the file at fault.
std::string make_report(const ReportOptions& opt);

}  // namespace esft
