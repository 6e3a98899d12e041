// One optimizer step over a global batch of micro-batches, shared by the trainer and esft bench:
// loss = token cross-entropy summed over the global batch / its label-token count (HF's
// num_items_in_batch, so accumulation is exact), backward per micro-batch, gradients reduced over
// the parallel groups, global-norm clipping, AdamW. Under data/expert parallelism the micro
// batches are shared round-robin over the ranks (ParallelContext::my_share) and the result equals
// one process running the whole global batch.
#pragma once
#include <functional>

#include "esft/model.h"
#include "esft/optim.h"

namespace esft {

namespace dist {
class ParallelContext;
}

struct StepResult {
  double loss_sum = 0;           // summed token losses over all ranks (divide by loss_tokens)
  int64_t loss_tokens = 0;       // label tokens the model counted, all ranks
  int64_t tokens = 0;            // tokens of the micro-batches, all ranks
  double grad_norm = 0;          // before clipping
  int64_t trained_expert_rows = 0;  // (token, slot) rows routed to trained experts, all ranks
  double comm_seconds = 0;       // all-to-all time per rank (mean)
  // Loss and gradient norm are finite. When not, the optimizer step was not taken (a NaN/Inf
  // would poison the weights and the optimizer state): the caller stops or skips the step.
  bool finite = true;
};

// micro_batch(k, &tokens) builds micro-batch k of n_micro (single-process order) and its token
// count. n_items: label tokens of the whole global batch (known before any forward, as HF's
// Trainer counts them). par: null for a plain single process.
StepResult train_step(MoeModel& model, AdamW& optim, int64_t n_micro,
                      const std::function<Batch(int64_t k, int64_t* tokens)>& micro_batch, int64_t n_items, double lr,
                      double max_grad_norm, const ForwardOptions& forward, dist::ParallelContext* par);

// A one-token batch that trains nothing: a rank out of work runs it so that every rank joins the
// expert-parallel exchanges of a step.
Batch idle_batch();

// Waits for the model's device (timing).
void synchronize(const at::Device& device);

}  // namespace esft
