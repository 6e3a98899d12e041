// One optimizer step over a global batch of micro-batches, shared by the trainer and esft bench:
// loss = token cross-entropy summed over the global batch / its label-token count (HF's
// num_items_in_batch, so accumulation is exact), backward per micro-batch, global-norm clipping,
// AdamW.
#pragma once
#include <vector>

#include "esft/model.h"
#include "esft/optim.h"

namespace esft {

struct StepResult {
  double loss_sum = 0;           // summed token losses (divide by loss_tokens for the mean)
  int64_t loss_tokens = 0;       // label tokens the model counted
  double grad_norm = 0;          // before clipping
  int64_t trained_expert_rows = 0;
};

// n_items: label tokens of the whole global batch (known before any forward, as HF's Trainer
// counts them). Batches are moved to the device one at a time.
StepResult train_step(MoeModel& model, AdamW& optim, const std::vector<Batch>& micro_batches, int64_t n_items, double lr,
                      double max_grad_norm, const ForwardOptions& forward);

// Waits for the model's device (timing).
void synchronize(const at::Device& device);

}  // namespace esft
