// Rotary position embeddings: the tables (default, linear or YaRN inverse frequencies, read from a
// config.json with v4 keys rope_theta / rope_scaling or v5 rope_parameters) and the ways the
// families apply them.
#pragma once
#include <ATen/ATen.h>

#include <nlohmann/json.hpp>
#include <string>

namespace esft::nn {

enum class RopeStyle {
  Half,         // NeoX rotate_half over (j, j + d/2) pairs: Llama, Qwen, Mixtral, OLMoE, GLM, GPT-OSS
  Interleaved,  // DeepSeek-V3 rope_interleave: de-interleave (x[2j], x[2j+1]) -> halves, then Half
  Complex,      // DeepSeek-V2: complex multiply of adjacent pairs, in fp32, output in pair order
};

// A rope setting as the config states it, looked up in rope_parameters (v5), rope_scaling (v4)
// and then the top level: rope_theta, partial_rotary_factor, factor, ... A value that is present
// but not a finite number fails, naming `where` (the config file) and the key.
double rope_setting(const nlohmann::json& config, const std::string& key, double dflt,
                    const std::string& where = "config.json");
std::string rope_type(const nlohmann::json& config, const std::string& where = "config.json");
// YaRN's magnitude correction: 0.1 * mscale * ln(scale) + 1, or 1 for scale <= 1.
double yarn_get_mscale(double scale, double mscale = 1.0);

class Rope {
 public:
  // rotary_dim: channels rotated per head (head_dim, or a part of it with partial_rotary_factor).
  Rope(const nlohmann::json& config, int64_t rotary_dim, const std::string& where);
  int64_t rotary_dim() const { return dim_; }
  double attention_scaling() const { return attention_scaling_; }
  // cos/sin [B,S,rotary_dim] (cat(freqs, freqs)) times attention_scaling, computed in fp32 and cast
  // to dtype as HF does; for RopeStyle::Complex pass kFloat and the first half is used.
  std::pair<at::Tensor, at::Tensor> cos_sin(const at::Tensor& position_ids_BS, at::ScalarType dtype) const;

 private:
  int64_t dim_;
  at::Tensor inv_freq_;  // [rotary_dim/2] float32, CPU
  double attention_scaling_ = 1.0;
};

// Rotates the first cos.size(-1) channels of x_BSND (partial rotary leaves the rest as they are).
at::Tensor apply_rope(const at::Tensor& x_BSND, const at::Tensor& cos_BSD, const at::Tensor& sin_BSD, RopeStyle style);

}  // namespace esft::nn
