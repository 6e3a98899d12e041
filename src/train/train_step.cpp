#include "esft/train_step.h"

#include <c10/core/impl/DeviceGuardImplInterface.h>

namespace esft {

StepResult train_step(MoeModel& model, AdamW& optim, const std::vector<Batch>& micro_batches, int64_t n_items, double lr,
                      double max_grad_norm, const ForwardOptions& forward) {
  StepResult r;
  optim.zero_grad();
  model.take_trained_expert_rows();  // count this step's only
  for (const auto& b : micro_batches) {
    auto out = model.forward(b, forward);
    r.loss_tokens += out.n_loss_tokens;
    if (n_items == 0) continue;
    auto loss = out.loss_sum / double(n_items);
    // A micro-batch whose tokens reach no trained weight has nothing to differentiate.
    if (loss.requires_grad()) loss.backward();
    r.loss_sum += out.loss_sum.item<double>();
  }
  r.trained_expert_rows = model.take_trained_expert_rows();
  r.grad_norm = clip_grad_norm(optim.params(), max_grad_norm);
  optim.step(lr);
  return r;
}

void synchronize(const at::Device& device) {
  if (device.is_cpu()) return;
  c10::impl::getDeviceGuardImpl(device.type())->synchronizeDevice(device.has_index() ? device.index() : 0);
}

}  // namespace esft
