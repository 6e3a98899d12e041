#include "esft/nn/ops.h"

#include <cmath>

#include "esft/error.h"

namespace esft::nn {

at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  auto x32 = x.to(at::kFloat);
  auto var = x32.pow(2).mean(-1, /*keepdim=*/true);
  auto y = (x32 * at::rsqrt(var + eps)).to(x.scalar_type());
  return weight.to(x.scalar_type()) * y;
}

namespace {
double get_num(const nlohmann::json& j, const char* key, double dflt) {
  return j.contains(key) && j[key].is_number() ? j[key].get<double>() : dflt;
}
double yarn_mscale(double scale, double m) { return scale <= 1 ? 1.0 : 0.1 * m * std::log(scale) + 1.0; }
}  // namespace

Rope::Rope(const nlohmann::json& cfg, int64_t dim, const std::string& where) {
  // v5 configs keep rope_theta and the scaling inside rope_parameters; v4 at the top level.
  nlohmann::json rp = nlohmann::json::object();
  if (cfg.contains("rope_parameters") && cfg["rope_parameters"].is_object()) rp = cfg["rope_parameters"];
  if (cfg.contains("rope_scaling") && cfg["rope_scaling"].is_object())
    for (auto& [k, v] : cfg["rope_scaling"].items()) rp[k] = v;
  double base = get_num(rp, "rope_theta", get_num(cfg, "rope_theta", 10000.0));
  std::string type = rp.value("rope_type", rp.value("type", std::string("default")));

  auto pos_freqs = at::pow(base, at::arange(0, dim, 2, at::kLong).to(at::kFloat) / double(dim));  // [dim/2]
  inv_freq_ = 1.0 / pos_freqs;
  if (type == "default") {
  } else if (type == "linear") {
    inv_freq_ = inv_freq_ / get_num(rp, "factor", 1.0);
  } else if (type == "yarn") {
    double factor = get_num(rp, "factor", 1.0);
    double orig = get_num(rp, "original_max_position_embeddings", get_num(cfg, "max_position_embeddings", 4096));
    double mscale = get_num(rp, "mscale", 0), mscale_all = get_num(rp, "mscale_all_dim", 0);
    if (rp.contains("attention_factor") && rp["attention_factor"].is_number())
      attention_scaling_ = rp["attention_factor"].get<double>();
    else if (mscale != 0 && mscale_all != 0)
      attention_scaling_ = yarn_mscale(factor, mscale) / yarn_mscale(factor, mscale_all);
    else
      attention_scaling_ = yarn_mscale(factor, 1.0);
    double beta_fast = get_num(rp, "beta_fast", 32), beta_slow = get_num(rp, "beta_slow", 1);
    auto corr = [&](double r) { return dim * std::log(orig / (r * 2 * M_PI)) / (2 * std::log(base)); };
    double low = corr(beta_fast), high = corr(beta_slow);
    if (rp.value("truncate", true)) low = std::floor(low), high = std::ceil(high);
    low = std::max(low, 0.0);
    high = std::min(high, double(dim - 1));
    if (low == high) high += 0.001;
    auto ramp = ((at::arange(dim / 2, at::kFloat) - low) / (high - low)).clamp(0, 1);
    auto extra = 1 - ramp;
    inv_freq_ = (1.0 / (factor * pos_freqs)) * (1 - extra) + (1.0 / pos_freqs) * extra;
  } else {
    fail("{}: rope type \"{}\" is not supported (default, linear, yarn)", where, type);
  }
}

std::pair<at::Tensor, at::Tensor> Rope::cos_sin(const at::Tensor& pos, at::ScalarType dtype) const {
  auto inv = inv_freq_.to(pos.device());
  auto freqs = pos.to(at::kFloat).unsqueeze(-1) * inv;  // [B,S,D/2]
  auto emb = at::cat({freqs, freqs}, -1);
  auto c = emb.cos(), s = emb.sin();
  if (attention_scaling_ != 1.0) c = c * attention_scaling_, s = s * attention_scaling_;
  return {c.to(dtype), s.to(dtype)};
}

at::Tensor apply_rope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  int64_t d = x.size(-1);
  auto x1 = x.narrow(-1, 0, d / 2), x2 = x.narrow(-1, d / 2, d - d / 2);
  auto rot = at::cat({-x2, x1}, -1);
  return x * cos.unsqueeze(1) + rot * sin.unsqueeze(1);
}

at::Tensor attention_mask(const at::Tensor& doc_ids, int64_t S, int64_t window, const at::Device& device) {
  if (!doc_ids.defined() && window <= 0) return {};
  auto idx = at::arange(S, at::TensorOptions().dtype(at::kLong).device(device));
  auto mask = idx.unsqueeze(0) <= idx.unsqueeze(1);  // [S(q),S(k)] key <= query
  if (window > 0) mask = mask & (idx.unsqueeze(0) > idx.unsqueeze(1) - window);
  mask = mask.unsqueeze(0).unsqueeze(0);  // [1,1,S,S]
  if (doc_ids.defined()) {
    auto d = doc_ids.to(device);
    auto same = d.unsqueeze(2) == d.unsqueeze(1);  // [B,S,S]
    auto valid_key = (d >= 0).unsqueeze(1);
    // A padding query attends to itself only, so no row is fully masked (no NaN anywhere).
    auto diag = at::eye(S, at::TensorOptions().dtype(at::kBool).device(device)).unsqueeze(0);
    mask = (mask & (same & valid_key).unsqueeze(1)) | diag.unsqueeze(1);
  }
  return mask;
}

at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& mask,
                     double scale) {
  bool causal = !mask.defined();
  std::optional<at::Tensor> m;
  if (mask.defined()) m = mask;
  auto out = at::scaled_dot_product_attention(q, k, v, m, 0.0, causal, scale, /*enable_gqa=*/k.size(1) != q.size(1));
  // [B,N,S,D] -> [B,S,N*D]
  return out.transpose(1, 2).reshape({q.size(0), q.size(2), q.size(1) * q.size(3)});
}

at::Tensor causal_lm_loss_sum(const at::Tensor& logits, const at::Tensor& labels, int64_t* n_tokens) {
  auto shifted = at::cat({labels.narrow(1, 1, labels.size(1) - 1),
                          at::full({labels.size(0), 1}, -100, labels.options())},
                         1);
  auto flat_labels = shifted.reshape({-1});
  if (n_tokens) *n_tokens = (flat_labels != -100).sum().item<int64_t>();
  auto lg = logits.reshape({-1, logits.size(-1)}).to(at::kFloat);
  return at::cross_entropy_loss(lg, flat_labels, {}, at::Reduction::Sum, -100);
}

}  // namespace esft::nn
