// MoE components, Megatron-Core style, behind narrow interfaces:
//   router      x_TH -> top-k expert ids and gate weights
//   dispatcher  groups the T*K (token, slot) rows by expert and scatters results back
//   experts     stacked SwiGLU banks run as one grouped GEMM per bank
// Routed experts are held as two stacked banks, a trainable one (fp32 master copies, requires
// grad) and a frozen one (model dtype, no grad), so frozen experts never get gradients or
// optimizer state.
// Shapes: T tokens, H hidden, I expert intermediate, F = 2I (gate rows then up rows), E experts,
// K top-k, M dispatched rows (= T*K).
#pragma once
#include <ATen/ATen.h>

#include <string>
#include <vector>

#include "esft/model.h"

namespace esft::nn {

struct RouterOutput {
  at::Tensor logits_TE;   // raw router logits (model dtype), for the aux loss
  at::Tensor weights_TK;  // gate weights as the experts use them (model dtype)
  at::Tensor ids_TK;      // int64
};

// softmax(fp32) -> top-k -> optional renormalisation -> cast to model dtype (Qwen2/3-MoE, Mixtral).
RouterOutput softmax_topk_router(const at::Tensor& x_TH, const at::Tensor& w_EH, int64_t k, bool norm_topk_prob);

// Switch-style load-balancing loss over the router logits of every MoE layer (HF
// load_balancing_loss_func with raw logits). valid_T: optional float mask of real tokens.
at::Tensor load_balancing_loss(const std::vector<at::Tensor>& logits_per_layer_TE, int64_t n_experts, int64_t k,
                               const at::Tensor& valid_T);

// SwiGLU over rows grouped by expert: rows [offset_e, offset_e + counts[e]) go to expert e.
// counts_E is a CPU int64 tensor. On CUDA with bf16 this is two at::_grouped_mm calls.
at::Tensor grouped_swiglu(const at::Tensor& x_MH, const at::Tensor& gate_up_EFH, const at::Tensor& down_EHI,
                          const at::Tensor& counts_E);

// The routed experts of one MoE layer, split into a trainable and a frozen bank.
class ExpertBanks {
 public:
  // prefix: HF name prefix of the experts, e.g. "model.layers.3.mlp.experts".
  ExpertBanks(std::string prefix, const at::Tensor& gate_up_EFH, const at::Tensor& down_EHI,
              at::ScalarType orig_dtype);

  int64_t n_experts() const { return n_experts_; }
  // Moves the given experts into the trainable bank (fp32 master copies), the rest frozen.
  void split(const std::vector<int>& trainable_ids);
  const std::vector<int64_t>& trainable_ids() const { return train_.ids; }

  // Routed-expert output for tokens x_TH with router decisions ids_TK / weights_TK.
  at::Tensor forward(const at::Tensor& x_TH, const at::Tensor& ids_TK, const at::Tensor& weights_TK) const;

  std::vector<TrainableTensor> trainable() const;
  // Per-expert HF tensors (prefix.{e}.{gate,up,down}_proj.weight) of all or only trained experts.
  std::vector<HfTensor> export_tensors(bool only_trainable) const;
  // Overwrites one expert's weights (any bank).
  void load_expert(int64_t e, const at::Tensor& gate_IH, const at::Tensor& up_IH, const at::Tensor& down_HI);

 private:
  struct Bank {
    std::vector<int64_t> ids;  // global expert ids, in bank order
    at::Tensor gate_up_EFH, down_EHI;
  };
  void rebuild_position_map();

  std::string prefix_;
  int64_t n_experts_, inter_;
  at::ScalarType orig_dtype_;
  Bank train_, frozen_;
  at::Tensor position_of_E_;  // global id -> row in [train ids..., frozen ids...], int64 on device
};

}  // namespace esft::nn
