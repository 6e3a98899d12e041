// Multi-head latent attention (DeepSeek-V2 / V3) as a spec, beside gqa_attention:
//
//   q      = q_proj(x)                                    q_lora_rank null (V2-Lite)
//          | q_b_proj(rms_norm(q_a_proj(x)))              otherwise
//   q      = [q_nope | q_pe] per head (qk_nope + qk_rope channels)
//   latent, k_pe = kv_a_proj_with_mqa(x)                  [kv_lora_rank | qk_rope], k_pe one head for all
//   k_nope, v = kv_b_proj(rms_norm(latent)) per head      [qk_nope | v_head]
//   q_pe, k_pe rotated (V2: complex pairs in fp32; V3: interleaved pairs, or halves)
//   out    = o_proj(softmax(scale * [q_nope|q_pe] . [k_nope|k_pe]) v)
//
// q_a_proj, kv_a_proj_with_mqa and o_proj carry biases with attention_bias; the two latent norms
// use eps 1e-6 whatever rms_norm_eps says (transformers builds them with its RMSNorm default).
// The softmax scale is qk_head_dim^-0.5 times YaRN's mscale(factor, mscale_all_dim)^2 for
// scaled rope (transformers 5.17's yarn_apply_mscale).
// Shapes: B batch, S sequence, N heads, H hidden.
#pragma once
#include <ATen/ATen.h>

#include <nlohmann/json.hpp>
#include <string>

#include "esft/nn/attention.h"
#include "esft/nn/rope.h"

namespace esft::nn {

class ConfigReader;
class ParamStore;
class WeightSource;

struct MlaSpec {
  int64_t hidden = 0, n_heads = 0;
  int64_t q_lora_rank = 0;  // 0: q_proj straight from the hidden state
  int64_t kv_lora_rank = 0, qk_nope_dim = 0, qk_rope_dim = 0, v_head_dim = 0;
  bool bias = false;             // attention_bias
  double latent_norm_eps = 1e-6;  // q_a_layernorm, kv_a_layernorm
  RopeStyle rope_style = RopeStyle::Complex;
  double scale = 0;  // softmax scale (mla_softmax_scale)
  int64_t qk_head_dim() const { return qk_nope_dim + qk_rope_dim; }
};

// The MLA keys of a DeepSeek config.json: num_attention_heads (num_key_value_heads does not
// apply: kv_b_proj gives keys and values for every head), q_lora_rank (required; null = none), kv_lora_rank, qk_nope_head_dim,
// qk_rope_head_dim, v_head_dim (required), attention_bias; the scale from mla_softmax_scale.
// Errors name the file and the key.
MlaSpec read_mla_spec(const ConfigReader& r, int64_t hidden, RopeStyle style);

// qk_head_dim^-0.5, times yarn_get_mscale(factor, mscale_all_dim)^2 when the rope type is not
// "default" and mscale_all_dim is set and non-zero.
double mla_softmax_scale(const nlohmann::json& config, int64_t qk_head_dim, const std::string& where = "config.json");

// Loads prefix{q_proj | q_a_proj, q_a_layernorm, q_b_proj}, prefix{kv_a_proj_with_mqa,
// kv_a_layernorm, kv_b_proj, o_proj} (prefix ends in "self_attn.").
void load_mla_weights(const MlaSpec& spec, const std::string& prefix, WeightSource& src, ParamStore& store);

// The attention block on x_BSH; cos/sin [B,S,qk_rope] from a Rope of width qk_rope (fp32 for
// RopeStyle::Complex); who attends to whom as the layout says.
at::Tensor mla_attention(const MlaSpec& spec, const std::string& prefix, const ParamStore& w, const at::Tensor& x_BSH,
                         const at::Tensor& cos, const at::Tensor& sin, const AttentionLayout& layout);

}  // namespace esft::nn
