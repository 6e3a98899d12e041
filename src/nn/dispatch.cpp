#include "esft/nn/dispatch.h"

#include <torch/csrc/autograd/custom_function.h>

namespace esft::nn {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

struct GatherTokenRows : public torch::autograd::Function<GatherTokenRows> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& row_source,
                            const at::Tensor& copy_row, int64_t K) {
    ctx->saved_data["copy_row"] = copy_row;
    ctx->saved_data["K"] = K;
    return x.index_select(0, at::floor_divide(row_source, K));
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto copy_row = ctx->saved_data["copy_row"].toTensor();
    const int64_t K = ctx->saved_data["K"].toInt(), H = grads[0].size(1);
    auto g = grads[0].index_select(0, copy_row).view({-1, K, H}).sum(1);
    return {g, at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

// Rows reordered by a permutation; the backward is the inverse permutation, another gather (the
// default backward of index_select is an index_add with atomics, far slower).
struct PermuteRows : public torch::autograd::Function<PermuteRows> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& y, const at::Tensor& perm, const at::Tensor& inverse) {
    ctx->saved_data["inverse"] = inverse;
    return y.index_select(0, perm);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    return {grads[0].index_select(0, ctx->saved_data["inverse"].toTensor()), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

void sort_copies_by_slot(const at::Tensor& slot, int64_t n_tokens, int64_t n_slots, bool need_host_counts,
                         DispatchPlan* plan) {
  auto flat = slot.reshape({-1});
  plan->n_tokens = n_tokens;
  plan->top_k = slot.size(1);
  // Stable, so rows of one expert keep token order (as HF's per-expert loop sees them).
  plan->row_source_M = std::get<1>(at::sort(flat, /*stable=*/true, 0, false));
  plan->copy_row_TK = at::empty_like(plan->row_source_M)
                          .scatter_(0, plan->row_source_M, at::arange(flat.size(0), plan->row_source_M.options()));
  // scatter_add, not bincount: CUDA's bincount reads the maximum back to size its output (a sync).
  plan->counts_E = at::zeros({n_slots}, flat.options()).scatter_add_(0, flat, at::ones_like(flat));
  plan->host_counts.clear();
  if (need_host_counts) {
    auto c = plan->counts_E.to(at::kCPU);
    plan->host_counts.assign(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + n_slots);
  }
}

at::Tensor gather_token_rows(const at::Tensor& x, const DispatchPlan& plan) {
  return GatherTokenRows::apply(x, plan.row_source_M, plan.copy_row_TK, plan.top_k);
}

at::Tensor weighted_sum_of_copies(const at::Tensor& y, const at::Tensor& w, const DispatchPlan& plan) {
  const int64_t T = plan.n_tokens, K = plan.top_k, H = y.size(1);
  auto copies = PermuteRows::apply(y, plan.copy_row_TK, plan.row_source_M).view({T, K, H});  // back in (token, slot) order
  if (y.is_cuda())  // one pass over the copies, accumulating in fp32 inside the batched matmul
    return at::bmm(w.to(y.scalar_type()).unsqueeze(1), copies).squeeze(1);
  // Weights multiply in their own precision (fp32 for some routers) and the sum is cast back,
  // like HF's `y * w` followed by index_add into the model dtype.
  return (copies * w.unsqueeze(-1)).sum(1).to(y.scalar_type());
}

at::Tensor LocalDispatcher::dispatch(const at::Tensor& x, const at::Tensor& slot, int64_t n_slots, bool need_host_counts,
                                     DispatchPlan* plan) {
  sort_copies_by_slot(slot, x.size(0), n_slots, need_host_counts, plan);
  return gather_token_rows(x, *plan);
}

at::Tensor LocalDispatcher::combine(const at::Tensor& y, const at::Tensor& w, const DispatchPlan& plan) {
  return weighted_sum_of_copies(y, w, plan);
}

}  // namespace esft::nn
