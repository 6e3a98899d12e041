// Routed experts: the expert spec and the banks that compute them.
//
// Every family's experts are a gated MLP, y = down(act(gate(x)) * up(x)) (+ biases), held in one
// internal layout: gate_up [E, 2I, H] (gate rows first, then up rows), down [E, H, I], optional
// biases gate_up_bias [E, 2I], down_bias [E, H]. Checkpoint layouts (per-expert keys, fused v5
// tensors, GPT-OSS's interleaved transposed tensors) are translated by the family's
// ExpertCodec (expert_codec.h); the banks never see names.
//
// The experts of one MoE layer live in two stacked banks: a trainable one (fp32 master copies,
// leaf tensors that require grad) and a frozen one (model dtype, no grad), so frozen experts
// never get weight gradients or optimizer state. The frozen bank may hold its weights packed
// (packed_experts.h: MXFP4 for GPT-OSS), expanded only for the matmul that uses them.
// A slot is an expert's position in
// [trainable ids..., frozen ids...]; the dispatcher groups rows by slot.
//
// Expert parallelism: the banks may hold a subset of the layer's experts (those an
// ExpertPlacement gives this rank). Slots then number the experts of all ranks, rank by rank,
// each rank's in the order above; slot_of_expert() covers every global id, so the router's
// choice maps to a slot wherever the expert lives, and slots_per_rank() tells the all-to-all
// dispatcher which slots go where. compute() sees only this rank's slots.
#pragma once
#include <ATen/ATen.h>

#include <memory>
#include <string>
#include <vector>

#include "esft/model.h"

namespace esft::nn {

class PackedExperts;  // packed_experts.h

enum class ExpertActivation {
  SwiGLU,         // silu(gate) * up
  ClampedSwiGLU,  // GPT-OSS: gate = min(gate, limit), up = clamp(up, -limit, limit), (up + 1) * gate * sigmoid(alpha * gate)
};

struct ExpertsSpec {
  int64_t n_experts = 0, hidden = 0, inter = 0;
  ExpertActivation activation = ExpertActivation::SwiGLU;
  double alpha = 1.702, limit = 7.0;  // ClampedSwiGLU only
  bool bias = false;                  // gate_up and down biases (GPT-OSS)
};

// One expert's weights, or a stack of them ([E, ...] leading dim), in the internal layout.
struct ExpertWeights {
  at::Tensor gate_up, down, gate_up_bias, down_bias;  // biases undefined without ExpertsSpec::bias
  // Set instead of gate_up / down for a stack held packed (packed_experts.h): the frozen bank
  // then keeps them packed and expands them per matmul.
  std::shared_ptr<const PackedExperts> packed = nullptr;
};

// act(gate) * up over [M, 2I] pre-activations (gate columns first). Shared with dense MLPs.
at::Tensor gated_activation(const ExpertsSpec& spec, const at::Tensor& h_MF);

class ExpertBanks {
 public:
  // held: the experts placement.held() gives this rank (all of them by default), stacked in
  // ascending global id order, already on the device in the storage dtype, dense or packed.
  // orig_dtype: the checkpoint's dtype, restored on export.
  ExpertBanks(ExpertsSpec spec, ExpertWeights held, at::ScalarType orig_dtype, ExpertPlacement placement = {});

  const ExpertsSpec& spec() const { return spec_; }
  at::ScalarType orig_dtype() const { return orig_dtype_; }
  const ExpertPlacement& placement() const { return placement_; }
  // Moves the given global ids into the trainable bank (fp32 master copies), the rest frozen.
  // Ids this rank does not hold are trainable on their own rank: they only order the slots.
  // A packed frozen bank stays packed; an expert once trainable cannot return to it.
  void split(const std::vector<int>& trainable_ids);
  // The trainable experts held here, in bank row order (ascending).
  const std::vector<int64_t>& trainable_ids() const { return train_.ids; }
  bool holds(int64_t e) const;
  int64_t n_slots() const { return spec_.n_experts; }  // over all ranks
  // Slots of each rank of the placement (their sum is n_slots()); this rank's are its own.
  const std::vector<int64_t>& slots_per_rank() const { return slots_per_rank_; }
  // [E] int64 on the device: global expert id -> slot.
  const at::Tensor& slot_of_expert() const { return slot_of_expert_; }
  // Whether compute() needs the per-slot row counts on the host.
  bool needs_host_counts(const at::Tensor& x) const;

  // Expert outputs for rows grouped by slot; counts_E per slot (device), host_counts when needed.
  at::Tensor compute(const at::Tensor& x_MH, const at::Tensor& counts_E, const std::vector<int64_t>& host_counts) const;

  // Rows of the last compute() that went to trained experts (for FLOP counts).
  int64_t last_trained_rows() const { return last_trained_rows_; }

  // The trainable bank's leaf tensors: gate_up, down (and biases), fp32.
  ExpertWeights trainable() const;
  // One expert's weights in the storage precision (trainable ones: their fp32 master copy;
  // packed ones expanded to the model dtype).
  ExpertWeights expert(int64_t e) const;
  // Overwrites one expert's weights (any bank but a packed one); shapes must match.
  void set_expert(int64_t e, const ExpertWeights& w);

 private:
  struct Bank {
    std::vector<int64_t> ids;  // global expert ids, in bank order
    ExpertWeights w;
  };
  std::pair<const Bank*, int64_t> locate(int64_t e) const;
  void rebuild_slots();
  void split_packed(const std::vector<char>& is_train);
  at::Tensor frozen_forward(const at::Tensor& x, const at::Tensor& counts_E, const int64_t* host_counts) const;

  ExpertsSpec spec_;
  at::ScalarType orig_dtype_;
  ExpertPlacement placement_;
  Bank train_, frozen_;
  std::vector<char> trainable_;  // [E] over all ranks
  at::Tensor slot_of_expert_;
  std::vector<int64_t> slots_per_rank_;
  mutable int64_t last_trained_rows_ = 0;
};

}  // namespace esft::nn
