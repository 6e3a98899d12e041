// Token dispatch (Megatron-Core's token dispatcher, torchtitan's token_dispatcher.py): dispatch
// gathers the T*K (token, slot) copies into rows grouped by expert and returns a plan; combine
// takes the expert outputs in that row order plus the plan back to one row per token, weighted
// by the gates. The experts between the two never see tokens or top-k slots, only rows and
// per-expert counts, so an expert-parallel dispatcher (all-to-all) replaces the local one
// without touching router or experts.
//
// Experts are addressed by slot: their position in the local banks ([trainable..., frozen...]).
// Under expert parallelism slots number the experts of all ranks (see experts.h); dispatch then
// returns the rows for this rank's slots and counts_E covers only those.
// Shapes: T tokens, K top-k, H hidden, M = T*K dispatched rows, E local expert slots.
#pragma once
#include <ATen/ATen.h>

#include <memory>
#include <vector>

namespace esft::nn {

struct DispatchPlan {
  at::Tensor row_source_M;  // index into the flattened [T*K] (token, slot) copies of each row
  at::Tensor copy_row_TK;   // the inverse: the row of each (token, slot) copy, flattened [T*K]
  at::Tensor counts_E;      // rows per expert slot, int64 on the device
  int64_t n_tokens = 0, top_k = 0;
  // counts_E on the host; only filled when the experts ask for it (see dispatch's need_host_counts)
  std::vector<int64_t> host_counts;
  // Whatever else a dispatcher needs between its dispatch and combine (the expert-parallel one:
  // all-to-all splits and the regrouping of received rows).
  std::shared_ptr<void> state;
};

class TokenDispatcher {
 public:
  virtual ~TokenDispatcher() = default;
  // x_TH tokens; slot_TK the expert slot of each (token, slot) copy; n_slots experts in the banks.
  // need_host_counts: copy the counts to the host (one device sync) for experts that must know
  // row boundaries on the host (the per-expert CPU loop, two banks on the GPU).
  virtual at::Tensor dispatch(const at::Tensor& x_TH, const at::Tensor& slot_TK, int64_t n_slots, bool need_host_counts,
                              DispatchPlan* plan) = 0;
  // y_MH expert outputs in dispatched row order; weights_TK gate weights. Returns [T,H] in y's dtype.
  virtual at::Tensor combine(const at::Tensor& y_MH, const at::Tensor& weights_TK, const DispatchPlan& plan) = 0;
  // True when the layer must be part of the backward on this process even if nothing here needs
  // a gradient from it (expert parallelism: other ranks' trained experts exchange through it).
  virtual bool in_every_backward() const { return false; }
};

// Sorts the (token, slot) copies by slot: fills the plan's row_source, copy_row, counts (and the
// host counts when asked). The local and the expert-parallel dispatchers share it.
void sort_copies_by_slot(const at::Tensor& slot_TK, int64_t n_tokens, int64_t n_slots, bool need_host_counts,
                         DispatchPlan* plan);
// x's rows in the plan's row order (each token K times). Its backward adds each token's K row
// gradients with a gather and a sum: deterministic, no atomic adds.
at::Tensor gather_token_rows(const at::Tensor& x_TH, const DispatchPlan& plan);
// Each token's K rows of y (in the plan's row order) weighted by its gate weights and summed.
at::Tensor weighted_sum_of_copies(const at::Tensor& y_MH, const at::Tensor& weights_TK, const DispatchPlan& plan);

// All experts on this process: a stable sort of the copies by slot, and back.
class LocalDispatcher final : public TokenDispatcher {
 public:
  at::Tensor dispatch(const at::Tensor& x_TH, const at::Tensor& slot_TK, int64_t n_slots, bool need_host_counts,
                      DispatchPlan* plan) override;
  at::Tensor combine(const at::Tensor& y_MH, const at::Tensor& weights_TK, const DispatchPlan& plan) override;
};

}  // namespace esft::nn
