// The output directory of esft score, made safe before a run writes it.
#pragma once
#include <memory>

#include "esft/run_control.h"
#include "esft/score.h"

namespace esft {

// Refuses an output that holds the model or is the data file; on the main process locks the
// directory (one run at a time), removes what a killed run left half-written and the previous
// summary.json / score_config.json; every rank removes its own earlier routing logs (rank_RANK/),
// so that a run that fails leaves nothing that looks like a complete result (its own logs are
// renamed into place only when complete, the summary written after them).
// Returns the lock, held until the run ends (null on other ranks).
std::unique_ptr<DirectoryLock> prepare_score_output(const ScoreOptions& opt, bool main_process, int rank);

}  // namespace esft
