// Building blocks shared by the model families, each matching HF transformers' eager maths.
// Shapes: B batch, S sequence, N heads, D head dim, H hidden, V vocab.
#pragma once
#include <ATen/ATen.h>

#include <nlohmann/json.hpp>
#include <string>

namespace esft::nn {

// Llama-style RMSNorm: normalise in fp32, cast back to the input dtype, then scale by weight.
at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps);

// Rotary embedding tables (rope_type default, linear or yarn), read from a config.json that
// carries either v4 keys (rope_theta, rope_scaling) or v5 rope_parameters.
class Rope {
 public:
  Rope(const nlohmann::json& config, int64_t rotary_dim, const std::string& where);
  // cos/sin [B,S,rotary_dim] in `dtype`, computed in fp32 then cast (as HF does).
  std::pair<at::Tensor, at::Tensor> cos_sin(const at::Tensor& position_ids_BS, at::ScalarType dtype) const;

 private:
  at::Tensor inv_freq_;  // [rotary_dim/2] float32, CPU
  double attention_scaling_ = 1.0;
};

// NeoX "rotate_half" rotation of x_BNSD with cos/sin [B,S,D].
at::Tensor apply_rope(const at::Tensor& x_BNSD, const at::Tensor& cos_BSD, const at::Tensor& sin_BSD);

// Boolean attention mask [B,1,S,S] (true = may attend) from doc_ids, or undefined when plain
// causal attention over the whole row suffices. sliding_window > 0 limits keys to the last W.
at::Tensor attention_mask(const at::Tensor& doc_ids_BS, int64_t seq_len, int64_t sliding_window,
                          const at::Device& device);

// Scaled dot-product attention with grouped KV heads. q [B,N,S,D], k/v [B,Nkv,S,D].
// Returns [B,S,N*D].
at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& mask,
                     double scale);

// Sum of next-token cross-entropies in fp32 over positions whose shifted label != -100
// (HF ForCausalLMLoss with reduction "sum"). *n_tokens receives the number of such positions.
at::Tensor causal_lm_loss_sum(const at::Tensor& logits_BSV, const at::Tensor& labels_BS, int64_t* n_tokens);

// Linear with an optional bias (undefined tensor = none).
inline at::Tensor linear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b = {}) {
  return b.defined() ? at::linear(x, w, b) : at::linear(x, w);
}

}  // namespace esft::nn
