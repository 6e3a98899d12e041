#include "esft/nn/dispatch.h"

namespace esft::nn {

at::Tensor LocalDispatcher::dispatch(const at::Tensor& x, const at::Tensor& slot, int64_t n_slots, bool need_host_counts,
                                     DispatchPlan* plan) {
  const int64_t K = slot.size(1);
  auto flat = slot.reshape({-1});
  plan->n_tokens = x.size(0);
  plan->top_k = K;
  // Stable, so rows of one expert keep token order (as HF's per-expert loop sees them).
  plan->row_source_M = std::get<1>(at::sort(flat, /*stable=*/true, 0, false));
  // scatter_add, not bincount: CUDA's bincount reads the maximum back to size its output (a sync).
  plan->counts_E = at::zeros({n_slots}, flat.options()).scatter_add_(0, flat, at::ones_like(flat));
  plan->host_counts.clear();
  if (need_host_counts) {
    auto c = plan->counts_E.to(at::kCPU);
    plan->host_counts.assign(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + n_slots);
  }
  return x.index_select(0, at::floor_divide(plan->row_source_M, K));
}

at::Tensor LocalDispatcher::combine(const at::Tensor& y, const at::Tensor& w, const DispatchPlan& plan) {
  const int64_t T = plan.n_tokens, K = plan.top_k, H = y.size(1);
  // Un-permute: row r goes back to copy row_source[r]. A permutation scatter, so deterministic
  // (also its backward), unlike index_add with atomics; then each token sums its K copies.
  auto copies = at::empty({T * K, H}, y.options()).index_copy(0, plan.row_source_M, y).view({T, K, H});
  // Weights multiply in their own precision (fp32 for some routers) and the sum is cast back,
  // like HF's `y * w` followed by index_add into the model dtype.
  return (copies * w.unsqueeze(-1)).sum(1).to(y.scalar_type());
}

}  // namespace esft::nn
