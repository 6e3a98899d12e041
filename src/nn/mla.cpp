#include "esft/nn/mla.h"

#include <cmath>

#include "esft/error.h"
#include "esft/nn/attention.h"
#include "esft/nn/config.h"
#include "esft/nn/ops.h"
#include "esft/nn/param_store.h"
#include "esft/nn/weight_source.h"

namespace esft::nn {

MlaSpec read_mla_spec(const ConfigReader& r, int64_t hidden, RopeStyle style) {
  MlaSpec m;
  m.hidden = hidden;
  m.n_heads = r.req_int("num_attention_heads", 1);  // num_key_value_heads: unused, keys and values have every head
  // q_lora_rank must be stated: null means a plain q_proj (V2-Lite), a number the low-rank path.
  if (!r.json().contains("q_lora_rank"))
    fail("{}: required key \"q_lora_rank\" is missing (null for a plain q_proj)", r.where());
  m.q_lora_rank = r.get_int("q_lora_rank", 0, 1);
  m.kv_lora_rank = r.req_int("kv_lora_rank", 1);
  m.qk_nope_dim = r.req_int("qk_nope_head_dim", 1);
  m.qk_rope_dim = r.req_int("qk_rope_head_dim", 2);
  if (m.qk_rope_dim % 2) fail("{}: \"qk_rope_head_dim\" must be even, not {}", r.where(), m.qk_rope_dim);
  m.v_head_dim = r.req_int("v_head_dim", 1);
  m.bias = r.get_bool("attention_bias", false);
  m.rope_style = style;
  m.scale = mla_softmax_scale(r.json(), m.qk_head_dim(), r.where());
  return m;
}

double mla_softmax_scale(const nlohmann::json& cfg, int64_t qk_head_dim, const std::string& where) {
  double scale = 1.0 / std::sqrt(double(qk_head_dim));
  if (rope_type(cfg, where) != "default") {
    const double mscale_all_dim = rope_setting(cfg, "mscale_all_dim", 0, where);
    if (mscale_all_dim != 0) {
      const double m = yarn_get_mscale(rope_setting(cfg, "factor", 1.0, where), mscale_all_dim);
      scale *= m * m;
    }
  }
  return scale;
}

void load_mla_weights(const MlaSpec& s, const std::string& p, WeightSource& src, ParamStore& store) {
  const int64_t H = s.hidden, N = s.n_heads;
  auto add = [&](const std::string& name, std::vector<int64_t> shape) { store.add(p + name, src.take(p + name, shape)); };
  if (s.q_lora_rank == 0) {
    add("q_proj.weight", {N * s.qk_head_dim(), H});
  } else {
    add("q_a_proj.weight", {s.q_lora_rank, H});
    if (s.bias) add("q_a_proj.bias", {s.q_lora_rank});
    add("q_a_layernorm.weight", {s.q_lora_rank});
    add("q_b_proj.weight", {N * s.qk_head_dim(), s.q_lora_rank});
  }
  add("kv_a_proj_with_mqa.weight", {s.kv_lora_rank + s.qk_rope_dim, H});
  if (s.bias) add("kv_a_proj_with_mqa.bias", {s.kv_lora_rank + s.qk_rope_dim});
  add("kv_a_layernorm.weight", {s.kv_lora_rank});
  add("kv_b_proj.weight", {N * (s.qk_nope_dim + s.v_head_dim), s.kv_lora_rank});
  add("o_proj.weight", {H, N * s.v_head_dim});
  if (s.bias) add("o_proj.bias", {H});
}

at::Tensor mla_attention(const MlaSpec& s, const std::string& p, const ParamStore& w, const at::Tensor& x,
                         const at::Tensor& cos, const at::Tensor& sin, const AttentionLayout& layout) {
  const int64_t B = x.size(0), S = x.size(1), N = s.n_heads, nope = s.qk_nope_dim, rope = s.qk_rope_dim;
  at::Tensor q;
  if (s.q_lora_rank == 0) {
    q = nn::linear(x, w.get(p + "q_proj.weight"));
  } else {
    auto qa = linear(x, w.get(p + "q_a_proj.weight"), w.get_opt(p + "q_a_proj.bias"));
    q = nn::linear(rms_norm(qa, w.get(p + "q_a_layernorm.weight"), s.latent_norm_eps), w.get(p + "q_b_proj.weight"));
  }
  q = q.view({B, S, N, s.qk_head_dim()});  // [B,S,N,Dqk]
  auto q_pe = apply_rope(q.narrow(-1, nope, rope), cos, sin, s.rope_style);

  auto ckv = linear(x, w.get(p + "kv_a_proj_with_mqa.weight"), w.get_opt(p + "kv_a_proj_with_mqa.bias"));
  auto latent = rms_norm(ckv.narrow(-1, 0, s.kv_lora_rank), w.get(p + "kv_a_layernorm.weight"), s.latent_norm_eps);
  // The rope key is one head shared by all: rotated once, then broadcast.
  auto k_pe = apply_rope(ckv.narrow(-1, s.kv_lora_rank, rope).unsqueeze(2), cos, sin, s.rope_style);  // [B,S,1,R]

  auto kv = nn::linear(latent, w.get(p + "kv_b_proj.weight")).view({B, S, N, nope + s.v_head_dim});
  auto k = at::cat(std::vector<at::Tensor>{kv.narrow(-1, 0, nope), k_pe.expand({B, S, N, rope})}, -1);
  auto v = kv.narrow(-1, nope, s.v_head_dim);
  auto o = attention(at::cat({q.narrow(-1, 0, nope), q_pe}, -1), k, v, layout, s.scale);
  return linear(o, w.get(p + "o_proj.weight"), w.get_opt(p + "o_proj.bias"));
}

}  // namespace esft::nn
