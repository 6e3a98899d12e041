// Building blocks shared by the model families, each matching HF transformers' eager maths.
// Shapes: B batch, S sequence, V vocab.
#pragma once
#include <ATen/ATen.h>

namespace esft::nn {

// Llama-style RMSNorm: normalise in fp32, cast back to the input dtype, then scale by weight.
at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps);
// GPT-OSS's RMSNorm: the weight multiplies in fp32 and the product is cast to the input dtype.
at::Tensor rms_norm_fp32_weight(const at::Tensor& x, const at::Tensor& weight, double eps);

// Sum of next-token cross-entropies in fp32 over positions whose shifted label != -100
// (HF ForCausalLMLoss with reduction "sum"). *n_tokens receives the number of such positions.
at::Tensor causal_lm_loss_sum(const at::Tensor& logits_BSV, const at::Tensor& labels_BS, int64_t* n_tokens);

// Linear with an optional bias (undefined tensor = none).
inline at::Tensor linear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b = {}) {
  return b.defined() ? at::linear(x, w, b) : at::linear(x, w);
}

}  // namespace esft::nn
