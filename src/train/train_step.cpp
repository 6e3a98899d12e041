#include "esft/train_step.h"

#include <c10/core/impl/DeviceGuardImplInterface.h>

#include <cmath>

#include "esft/data.h"
#include "esft/dist/parallel.h"

namespace esft {

Batch idle_batch() {
  auto one = [](int64_t v) { return at::full({1, 1}, v, at::kLong); };
  Batch batch{one(0), one(kIgnoreIndex), one(0), one(0)};
  add_document_layout(batch);
  return batch;
}

StepResult train_step(MoeModel& model, AdamW& optim, int64_t n_micro,
                      const std::function<Batch(int64_t, int64_t*)>& micro_batch, int64_t n_items, double lr,
                      double max_grad_norm, const ForwardOptions& forward, dist::ParallelContext* par) {
  if (par) par->take_comm_seconds();  // this step's all-to-all time only
  optim.zero_grad();
  model.take_trained_expert_rows();  // count this step's only
  std::vector<int64_t> mine;
  if (par) mine = par->my_share(n_micro);
  else for (int64_t k = 0; k < n_micro; ++k) mine.push_back(k);
  const int64_t passes = par && par->lockstep() ? par->rounds(n_micro) : int64_t(mine.size());
  double loss_sum = 0;
  int64_t tokens = 0, counted = 0;
  for (int64_t k = 0; k < passes; ++k) {
    int64_t tok = 0;
    Batch batch = k < int64_t(mine.size()) ? micro_batch(mine[k], &tok) : idle_batch();
    auto out = model.forward(batch, forward);
    tokens += tok;
    counted += out.n_loss_tokens;
    if (n_items == 0) continue;
    auto loss = out.loss_sum / double(n_items);
    // A micro-batch whose tokens reach no trained weight has nothing to differentiate.
    if (loss.requires_grad()) loss.backward();
    loss_sum += out.loss_sum.item<double>();
  }
  StepResult r;
  std::vector<double> totals{loss_sum, double(counted), double(tokens), par ? par->take_comm_seconds() : 0.0,
                             double(model.take_trained_expert_rows())};
  if (par) totals = par->sum(totals);
  r.loss_sum = totals[0], r.loss_tokens = int64_t(totals[1]), r.tokens = int64_t(totals[2]);
  r.comm_seconds = par ? totals[3] / par->world_size() : 0.0;
  r.trained_expert_rows = int64_t(totals[4]);
  if (par) {
    par->reduce_gradients(optim.params());  // dense tensors over all ranks, experts over their replicas
    r.grad_norm = par->clip_grad_norm(optim.params(), max_grad_norm);
  } else {
    r.grad_norm = clip_grad_norm(optim.params(), max_grad_norm);
  }
  // Every rank sees the same summed loss and global norm, so all take or all skip the step.
  r.finite = std::isfinite(r.loss_sum) && std::isfinite(r.grad_norm);
  if (r.finite) optim.step(lr);
  return r;
}

void synchronize(const at::Device& device) {
  if (device.is_cpu()) return;
  c10::impl::getDeviceGuardImpl(device.type())->synchronizeDevice(device.has_index() ? device.index() : 0);
}

}  // namespace esft
