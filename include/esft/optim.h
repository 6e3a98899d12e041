// AdamW, learning-rate schedules and gradient clipping with the exact semantics of
// torch.optim.AdamW, HF transformers' schedulers and torch.nn.utils.clip_grad_norm_, so a run
// can be compared step for step with the Python stacks.
#pragma once
#include <ATen/ATen.h>

#include <map>
#include <string>
#include <vector>

#include "esft/model.h"

namespace esft {

struct AdamWOptions {
  double beta1 = 0.9, beta2 = 0.95, eps = 1e-8, weight_decay = 0.1;
};

// Decoupled weight decay (TrainableTensor::decay=false skips it). State is fp32, one exp_avg
// and exp_avg_sq per trained tensor: frozen weights have none.
class AdamW {
 public:
  AdamW(std::vector<TrainableTensor> params, AdamWOptions opt);
  void step(double lr);  // uses each tensor's .grad(); tensors without a grad are skipped
  void zero_grad();
  int64_t steps() const { return step_; }
  const std::vector<TrainableTensor>& params() const { return params_; }
  // "exp_avg.<name>", "exp_avg_sq.<name>" and "step" (as a 1-element int64 tensor).
  std::map<std::string, at::Tensor> state_dict() const;
  void load_state_dict(const std::map<std::string, at::Tensor>& state);

 private:
  std::vector<TrainableTensor> params_;
  AdamWOptions opt_;
  std::vector<at::Tensor> exp_avg_, exp_avg_sq_;
  int64_t step_ = 0;
};

// Global L2 norm over all gradients; scales them by min(1, max_norm / (norm + 1e-6)) when
// max_norm > 0. Returns the norm before clipping.
double clip_grad_norm(const std::vector<TrainableTensor>& params, double max_norm);

// Learning rate at optimizer step `step` (0-based), as HF's schedulers give it.
struct LrSchedule {
  std::string kind = "constant";  // constant | cosine | linear
  double peak = 1e-5, min_lr = 0;
  int64_t warmup_steps = 0, total_steps = 1;
  double at(int64_t step) const;
};

}  // namespace esft
