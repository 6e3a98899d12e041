// Expert parallelism behind the TokenDispatcher interface (nn/dispatch.h): each rank routes its
// own tokens, sends every (token, slot) copy to the rank holding that expert, computes the rows it
// received with its own experts, and sends the results back (Megatron's alltoall dispatcher).
//
// Per layer and call: the per-slot counts go first (an all-to-all of a small int64 tensor; one
// host sync to learn the receive sizes), then the rows. Both row exchanges are autograd nodes
// whose backward is the same exchange with send and receive swapped.
//
// Every rank must run the same collectives in backward. A rank whose part of the graph holds
// nothing trainable upstream would skip the backward exchange of a layer while the others wait
// in it. With `force_backward` (set for every MoE layer at or after the first one with a trained
// expert anywhere), combine makes its exchange part of the graph on every rank.
#pragma once
#include <memory>

#include "esft/dist/comm.h"
#include "esft/nn/dispatch.h"

namespace esft::nn {
class ExpertBanks;
}

namespace esft::dist {

// Host seconds spent in all-to-all exchanges (forward and backward), for the step log.
struct CommTimer {
  double seconds = 0;
};

// Rows along dim 0 of x go send_rows[q] to rank q; the result holds recv_rows[p] from rank p.
// Differentiable: the gradient takes the way back.
at::Tensor all_to_all_rows(const Group& group, const at::Tensor& x, const std::vector<int64_t>& send_rows,
                           const std::vector<int64_t>& recv_rows, CommTimer* timer = nullptr);

class AllToAllDispatcher final : public nn::TokenDispatcher {
 public:
  // banks: the layer's banks (slots per rank, read at every call); group: its expert-parallel group.
  AllToAllDispatcher(Group group, const nn::ExpertBanks* banks, bool force_backward, std::shared_ptr<CommTimer> timer);
  at::Tensor dispatch(const at::Tensor& x_TH, const at::Tensor& slot_TK, int64_t n_slots, bool need_host_counts,
                      nn::DispatchPlan* plan) override;
  at::Tensor combine(const at::Tensor& y_MH, const at::Tensor& weights_TK, const nn::DispatchPlan& plan) override;
  bool in_every_backward() const override { return force_backward_; }

 private:
  Group group_;
  const nn::ExpertBanks* banks_;
  bool force_backward_;
  std::shared_ptr<CommTimer> timer_;
  nn::LocalDispatcher local_;  // the per-token sort and the weighted sum are the local ones
};

}  // namespace esft::dist
