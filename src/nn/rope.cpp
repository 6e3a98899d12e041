#include "esft/nn/rope.h"

#include <cmath>
#include <optional>

#include "esft/error.h"

namespace esft::nn {

namespace {
// rope_parameters / rope_scaling: an object, null or absent; anything else is an error (not "no
// scaling").
const nlohmann::json* rope_block(const nlohmann::json& cfg, const char* key, const std::string& where) {
  if (!cfg.contains(key) || cfg[key].is_null()) return nullptr;
  if (!cfg[key].is_object()) fail("{}: \"{}\" must be an object (or null), not {}", where, key, cfg[key].dump());
  return &cfg[key];
}
}  // namespace

double yarn_get_mscale(double scale, double m) { return scale <= 1 ? 1.0 : 0.1 * m * std::log(scale) + 1.0; }

double rope_setting(const nlohmann::json& cfg, const std::string& key, double dflt, const std::string& where) {
  std::optional<double> found;
  for (auto [block, b] : {std::pair{"rope_parameters.", rope_block(cfg, "rope_parameters", where)},
                          {"rope_scaling.", rope_block(cfg, "rope_scaling", where)}, {"", &cfg}})
    if (b && b->contains(key) && !(*b)[key].is_null()) {
      // A value of the wrong type is an error wherever it stands, not the default
      // ("rope_theta": [0] is no 10000); the first valid one counts.
      const auto& v = (*b)[key];
      if (!v.is_number() || v.is_boolean() || !std::isfinite(v.get<double>()))
        fail("{}: \"{}{}\" must be a finite number, not {}", where, block, key, v.dump());
      if (!found) found = v.get<double>();
    }
  return found.value_or(dflt);
}

std::string rope_type(const nlohmann::json& cfg, const std::string& where) {
  for (auto [block, b] : {std::pair{"rope_parameters.", rope_block(cfg, "rope_parameters", where)},
                          {"rope_scaling.", rope_block(cfg, "rope_scaling", where)}})
    if (b)
      for (auto key : {"rope_type", "type"})
        if (b->contains(key) && !(*b)[key].is_null()) {
          if (!(*b)[key].is_string()) fail("{}: \"{}{}\" must be a string, not {}", where, block, key, (*b)[key].dump());
          return (*b)[key].get<std::string>();
        }
  return "default";
}

Rope::Rope(const nlohmann::json& cfg, int64_t dim, const std::string& where) : dim_(dim) {
  ESFT_CHECK(dim > 0 && dim % 2 == 0, "{}: the rotary dimension must be a positive even number, not {}", where, dim);
  const double base = rope_setting(cfg, "rope_theta", 10000.0, where);
  ESFT_CHECK(base > 1, "{}: rope_theta must be > 1, not {}", where, base);
  const std::string type = rope_type(cfg, where);
  auto get = [&](const char* k, double d) { return rope_setting(cfg, k, d, where); };

  auto pos_freqs = at::pow(base, at::arange(0, dim, 2, at::kLong).to(at::kFloat) / double(dim));  // [dim/2]
  inv_freq_ = 1.0 / pos_freqs;
  if (type == "default") {
  } else if (type == "linear") {
    const double factor = get("factor", 1.0);
    ESFT_CHECK(factor > 0, "{}: linear rope factor must be > 0, not {}", where, factor);
    inv_freq_ = inv_freq_ / factor;
  } else if (type == "yarn") {
    const double factor = get("factor", 1.0);
    ESFT_CHECK(factor >= 1, "{}: YaRN factor must be >= 1, not {}", where, factor);
    const double orig = get("original_max_position_embeddings", get("max_position_embeddings", 4096));
    ESFT_CHECK(orig >= 1, "{}: original_max_position_embeddings must be >= 1, not {}", where, orig);
    const double mscale = get("mscale", 0), mscale_all = get("mscale_all_dim", 0), attn = get("attention_factor", 0);
    if (attn != 0) attention_scaling_ = attn;
    else if (mscale != 0 && mscale_all != 0) attention_scaling_ = yarn_get_mscale(factor, mscale) / yarn_get_mscale(factor, mscale_all);
    else attention_scaling_ = yarn_get_mscale(factor, 1.0);
    const double beta_fast = get("beta_fast", 32), beta_slow = get("beta_slow", 1);
    auto corr = [&](double r) { return dim * std::log(orig / (r * 2 * M_PI)) / (2 * std::log(base)); };
    double low = corr(beta_fast), high = corr(beta_slow);
    bool truncate = true;
    for (auto key : {"rope_parameters", "rope_scaling"})
      if (auto* b = rope_block(cfg, key, where); b && b->contains("truncate") && !(*b)["truncate"].is_null()) {
        if (!(*b)["truncate"].is_boolean())
          fail("{}: \"{}.truncate\" must be true or false, not {}", where, key, (*b)["truncate"].dump());
        truncate = (*b)["truncate"].get<bool>();
      }
    if (truncate) low = std::floor(low), high = std::ceil(high);
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

at::Tensor apply_rope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin, RopeStyle style) {
  const int64_t d = x.size(-1), r = cos.size(-1);
  if (r < d) {  // partial rotary: rotate the first r channels, pass the rest through
    auto rot = apply_rope(x.narrow(-1, 0, r), cos, sin, style);
    return at::cat({rot, x.narrow(-1, r, d - r)}, -1);
  }
  auto c = cos.unsqueeze(2), s = sin.unsqueeze(2);  // [B,S,1,D] over heads
  if (style == RopeStyle::Complex) {
    // (x0 + i x1) * (cos + i sin) per adjacent pair, in fp32, back to pair order and x's dtype.
    auto pairs = x.to(at::kFloat).unflatten(-1, {d / 2, 2});
    auto x0 = pairs.select(-1, 0), x1 = pairs.select(-1, 1);
    auto ch = c.narrow(-1, 0, d / 2).to(at::kFloat), sh = s.narrow(-1, 0, d / 2).to(at::kFloat);
    return at::stack({x0 * ch - x1 * sh, x0 * sh + x1 * ch}, -1).flatten(-2).to(x.scalar_type());
  }
  auto y = style == RopeStyle::Interleaved ? x.unflatten(-1, {d / 2, 2}).transpose(-1, -2).reshape(x.sizes()) : x;
  // rotate_half(y) * sin = [-y2 s, y1 s] = roll(y, d/2) * [-s, s]: the sign goes on the small
  // table, and the whole is three passes over y (roll, mul, addcmul) instead of five.
  auto s_signed = at::cat({-s.narrow(-1, 0, d / 2), s.narrow(-1, d / 2, d - d / 2)}, -1);
  return at::addcmul(y * c, at::roll(y, {d / 2}, {-1}), s_signed);
}

}  // namespace esft::nn
