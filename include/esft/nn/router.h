// The router as a spec. Every family's routing is one RouterSpec (as torchtitan's router config
// and llama.cpp's build_moe_ffn parameters express it), run by one function, route().
//
//   scores  = softmax(logits) | sigmoid(logits) | logits (GPT-OSS: softmax over the k chosen)
//   choice  = scores (+ selection bias), limited to the best topk_group of n_group groups
//   ids     = top-k of choice
//   weights = scores at ids (GPT-OSS: softmax of the k logits), optionally renormalised, scaled
//
// The weights returned are exactly the ones that multiply the expert outputs: the routing logs
// record them.
#pragma once
#include <ATen/ATen.h>

#include <string>

namespace esft::nn {

enum class RouterScore {
  Softmax,        // Qwen2/3-MoE, Mixtral, OLMoE, DeepSeek-V2
  Sigmoid,        // DeepSeek-V3, GLM-4.5
  SoftmaxOfTopK,  // GPT-OSS: top-k on the raw logits, softmax over the k chosen
};
enum class GroupScore {
  Max,      // DeepSeek-V2 group_limited_greedy: a group scores its best expert
  Top2Sum,  // DeepSeek-V3 / GLM-4.5: a group scores the sum of its best two
};

struct RouterSpec {
  int64_t n_experts = 0, top_k = 0;
  RouterScore score = RouterScore::Softmax;
  bool logits_fp32 = false;     // the router matmul in fp32 (DeepSeek, GLM); else in the model dtype
  bool weights_fp32 = false;    // weights stay fp32 (Mixtral, DeepSeek, GLM); else cast to the logits dtype
  bool sorted_topk = true;      // torch.topk(sorted=...) as the family calls it: fixes the order of ids
  bool norm_topk_prob = false;  // renormalise the k weights to sum to 1
  double norm_eps = 0;          // added to that sum (DeepSeek-V3 / GLM: 1e-20)
  double routed_scaling = 1.0;  // multiplies the weights after renormalisation
  int64_t n_group = 1, topk_group = 1;  // n_group > 1: choose only among the best topk_group groups
  GroupScore group_score = GroupScore::Max;
  double masked_value = 0.0;    // what experts of dropped groups score (V2: 0.0, V3/GLM: -inf)
  bool selection_bias = false;  // e_score_correction_bias: added for the choice only, not to weights
  bool router_bias = false;     // the router linear has a bias (GPT-OSS)

  std::string describe() const;  // one line for logs and errors
};

// The router's tensors: weight [E,H]; bias [E] (router_bias); selection bias [E] fp32.
struct RouterWeights {
  at::Tensor weight_EH, bias_E, selection_bias_E;
};

struct RouterOutput {
  at::Tensor logits_TE;   // raw router logits (bias included), for the load-balancing loss
  at::Tensor weights_TK;  // gate weights exactly as they multiply the expert outputs
  at::Tensor ids_TK;      // int64 global expert ids
};

RouterOutput route(const RouterSpec& spec, const at::Tensor& x_TH, const RouterWeights& w);

// Switch-style load-balancing loss over the router logits of every MoE layer (HF
// load_balancing_loss_func on raw logits). valid_T: optional mask of real (non-padding) tokens.
at::Tensor load_balancing_loss(const std::vector<at::Tensor>& logits_per_layer_TE, int64_t n_experts, int64_t k,
                               const at::Tensor& valid_T);

}  // namespace esft::nn
