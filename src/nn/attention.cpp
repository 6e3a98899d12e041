#include "esft/nn/attention.h"

#include <cmath>

#include "esft/error.h"
#include "esft/nn/ops.h"
#include "esft/nn/param_store.h"
#include "esft/nn/weight_source.h"

namespace esft::nn {

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

namespace {

// Attention with a learned sink logit per head: softmax over [scores, sink] in the scores' dtype
// (GPT-OSS's eager reference), the sink's share dropped.
at::Tensor sink_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& mask,
                          double scale, const at::Tensor& sinks) {
  const int64_t B = q.size(0), N = q.size(1), S = q.size(2), rep = N / k.size(1);
  auto kk = rep > 1 ? k.repeat_interleave(rep, 1) : k, vv = rep > 1 ? v.repeat_interleave(rep, 1) : v;
  auto scores = at::matmul(q, kk.transpose(2, 3)) * scale;  // [B,N,S,S]
  auto m = mask.defined() ? mask : at::ones({S, S}, at::TensorOptions().dtype(at::kBool).device(q.device())).tril();
  scores = scores.masked_fill(m.logical_not(), -std::numeric_limits<double>::infinity());
  auto sink = sinks.to(scores.scalar_type()).view({1, N, 1, 1}).expand({B, N, S, 1});
  auto logits = at::cat({scores, sink}, -1);
  logits = logits - std::get<0>(logits.max(-1, /*keepdim=*/true));
  auto probs = at::softmax(logits, -1, logits.scalar_type()).narrow(-1, 0, S);
  return at::matmul(probs, vv);
}

// Flash attention over variable-length documents: q/k/v [B,S,N,D] -> [B,S,N*Dv].
at::Tensor varlen_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const AttentionLayout& l,
                            double scale) {
  const int64_t B = q.size(0), S = q.size(1), N = q.size(2);
  auto flat = [&](const at::Tensor& x) { return x.reshape({B * S, x.size(2), x.size(3)}); };
  std::optional<int64_t> left, right;
  if (l.window > 0) left = l.window - 1, right = 0;
  // The kernel wants one head size: narrower values (MLA: v 128 against q/k 192) are zero-padded.
  const int64_t dv = v.size(3), dq = q.size(3);
  auto vp = dv < dq ? at::constant_pad_nd(v, {0, dq - dv}) : v;
  auto out = std::get<0>(at::_flash_attention_forward(flat(q), flat(k), flat(vp), l.cu_seqlens, l.cu_seqlens, l.max_seqlen,
                                                      l.max_seqlen, 0.0, /*is_causal=*/true, /*return_debug_mask=*/false,
                                                      scale, left, right));
  if (dv < dq) out = out.narrow(-1, 0, dv);
  return out.reshape({B, S, N * dv});
}

at::Tensor attention_1(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& mask, double scale,
                       const at::Tensor& sinks);

// Each document attended on its own, as if it were the only sequence: exactly what a forward of
// that document alone computes (the CPU path; the flash kernel does this in one launch).
at::Tensor per_document_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const AttentionLayout& l,
                                  double scale, const at::Tensor& sinks) {
  const int64_t B = q.size(0), S = q.size(1);
  auto flat = [&](const at::Tensor& x) { return x.reshape({B * S, x.size(2), x.size(3)}); };  // [B*S,N,D]
  auto qf = flat(q), kf = flat(k), vf = flat(v);
  auto cu = l.cu_seqlens.to(at::kCPU, at::kLong);
  std::vector<at::Tensor> parts;
  for (int64_t d = 0; d + 1 < cu.size(0); ++d) {
    const int64_t b = cu[d].item<int64_t>(), n = cu[d + 1].item<int64_t>() - b;
    auto piece = [&](const at::Tensor& x) { return x.narrow(0, b, n).unsqueeze(0); };
    auto mask = l.window > 0 && l.window < n ? attention_mask({}, n, l.window, q.device()) : at::Tensor();
    parts.push_back(attention_1(piece(qf), piece(kf), piece(vf), mask, scale, sinks).squeeze(0));  // [n, N*Dv]
  }
  return at::cat(parts, 0).view({B, S, -1});
}

}  // namespace

at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const AttentionLayout& layout,
                     double scale, const at::Tensor& sinks) {
  if (layout.cu_seqlens.defined()) {
    const bool flash = q.is_cuda() && !sinks.defined() && (q.scalar_type() == at::kBFloat16 || q.scalar_type() == at::kHalf) &&
                       q.size(3) % 8 == 0 && q.size(3) <= 256 && v.size(3) <= q.size(3);  // [B,S,N,D]
    return flash ? varlen_attention(q, k, v, layout, scale) : per_document_attention(q, k, v, layout, scale, sinks);
  }
  return attention_1(q, k, v, layout.mask, scale, sinks);
}

namespace {
at::Tensor attention_1(const at::Tensor& q_bsnd, const at::Tensor& k_bsnd, const at::Tensor& v_bsnd, const at::Tensor& mask,
                       double scale, const at::Tensor& sinks) {
  auto q = q_bsnd.transpose(1, 2), k = k_bsnd.transpose(1, 2), v = v_bsnd.transpose(1, 2);  // [B,N,S,D]
  at::Tensor out;
  if (sinks.defined()) {
    out = sink_attention(q, k, v, mask, scale, sinks);
  } else {
    std::optional<at::Tensor> m;
    if (mask.defined()) m = mask;
    out = at::scaled_dot_product_attention(q, k, v, m, 0.0, /*is_causal=*/!mask.defined(), scale,
                                           /*enable_gqa=*/k.size(1) != q.size(1));
  }
  // [B,N,S,Dv] -> [B,S,N*Dv]
  return out.transpose(1, 2).reshape({q.size(0), q.size(2), q.size(1) * v.size(3)});
}
}  // namespace

void load_attention_weights(const AttentionSpec& s, const std::string& p, WeightSource& src, ParamStore& store) {
  const int64_t H = s.hidden, Dq = s.n_heads * s.head_dim, Dkv = s.n_kv_heads * s.head_dim;
  auto add = [&](const std::string& name, std::vector<int64_t> shape) { store.add(p + name, src.take(p + name, shape)); };
  add("q_proj.weight", {Dq, H});
  add("k_proj.weight", {Dkv, H});
  add("v_proj.weight", {Dkv, H});
  add("o_proj.weight", {H, Dq});
  if (s.q_bias) add("q_proj.bias", {Dq});
  if (s.k_bias) add("k_proj.bias", {Dkv});
  if (s.v_bias) add("v_proj.bias", {Dkv});
  if (s.o_bias) add("o_proj.bias", {H});
  if (s.qk_norm == QkNorm::PerHead) add("q_norm.weight", {s.head_dim}), add("k_norm.weight", {s.head_dim});
  if (s.qk_norm == QkNorm::FullWidth) add("q_norm.weight", {Dq}), add("k_norm.weight", {Dkv});
  if (s.sinks) add("sinks", {s.n_heads});
}

at::Tensor gqa_attention(const AttentionSpec& s, const std::string& p, const ParamStore& w, const at::Tensor& x,
                         const at::Tensor& cos, const at::Tensor& sin, const AttentionLayout& layout) {
  const int64_t B = x.size(0), S = x.size(1), D = s.head_dim;
  auto q = nn::linear(x, w.get(p + "q_proj.weight"), w.get_opt(p + "q_proj.bias"));
  auto k = nn::linear(x, w.get(p + "k_proj.weight"), w.get_opt(p + "k_proj.bias"));
  auto v = nn::linear(x, w.get(p + "v_proj.weight"), w.get_opt(p + "v_proj.bias"));
  if (s.qk_norm == QkNorm::FullWidth) {
    q = rms_norm(q, w.get(p + "q_norm.weight"), s.norm_eps);
    k = rms_norm(k, w.get(p + "k_norm.weight"), s.norm_eps);
  }
  if (s.clip_qkv > 0) q = q.clamp(-s.clip_qkv, s.clip_qkv), k = k.clamp(-s.clip_qkv, s.clip_qkv), v = v.clamp(-s.clip_qkv, s.clip_qkv);
  q = q.view({B, S, -1, D});
  k = k.view({B, S, -1, D});
  if (s.qk_norm == QkNorm::PerHead) {
    q = rms_norm(q, w.get(p + "q_norm.weight"), s.norm_eps);
    k = rms_norm(k, w.get(p + "k_norm.weight"), s.norm_eps);
  }
  q = apply_rope(q, cos, sin, s.rope_style);
  k = apply_rope(k, cos, sin, s.rope_style);
  v = v.view({B, S, -1, D});
  auto o = attention(q, k, v, layout, s.scale > 0 ? s.scale : 1.0 / std::sqrt(double(D)),
                     s.sinks ? w.get(p + "sinks") : at::Tensor());
  return nn::linear(o, w.get(p + "o_proj.weight"), w.get_opt(p + "o_proj.bias"));
}

}  // namespace esft::nn
