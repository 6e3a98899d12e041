#include "esft/nn/attention.h"

#include <torch/csrc/autograd/custom_function.h>

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

// The fused path. A kernel that returns the log-sum-exp lse0_i = log sum_j exp(s_ij) gives the
// sink softmax directly: with lse_i = logaddexp(lse0_i, sink), P_ij = exp(s_ij - lse_i) and
// out_i = out0_i * exp(lse0_i - lse_i). The gradient is exact too: for a softmax over [s_i, sink]
// whose sink column has no value (dP = 0 there), dL/ds_ij = P_ij (dP_ij - D_i) with
// D_i = sum_k P_ik dP_ik = <dout_i, out_i>, which is precisely what the kernel's own backward
// computes when it is handed the final out and lse (it recomputes P from lse, D from out), and
// dL/dsink = sum_i P_i,sink (0 - D_i) = -sum_i exp(sink - lse_i) <dout_i, out_i>.
// Layouts: CUDA (flash varlen) q/k/v [T, N(kv), D], lse [N, T]; CPU q/k/v [B, N, S, D], lse [B, N, S].
class SinkAttention : public torch::autograd::Function<SinkAttention> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& q, const at::Tensor& k,
                            const at::Tensor& v, const at::Tensor& sinks, const at::Tensor& cu_seqlens_or_mask,
                            int64_t max_len, int64_t window, double scale) {
    const bool cuda = q.is_cuda();
    at::Tensor out0, lse0, rng, unused;
    if (cuda) {
      std::tie(out0, lse0, rng, unused, std::ignore) = at::_flash_attention_forward(
          q, k, v, cu_seqlens_or_mask, cu_seqlens_or_mask, max_len, max_len, 0.0, /*is_causal=*/true,
          /*return_debug_mask=*/false, scale, left(window), right(window));
      ESFT_CHECK(lse0.dim() == 2 && lse0.size(0) == q.size(1) && lse0.size(1) == q.size(0),
                 "flash attention returned a log-sum-exp of shape {}, expected [{}, {}]", lse0.sizes(), q.size(1), q.size(0));
    } else {
      std::tie(out0, lse0) = at::_scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, false, cu_seqlens_or_mask, scale);
    }
    auto lse = at::logaddexp(lse0, sink_like(sinks, cuda));
    auto out = (out0.to(at::kFloat) * to_out(at::exp(lse0 - lse), cuda)).to(out0.scalar_type());
    ctx->save_for_backward({q, k, v, out, lse, sinks, cu_seqlens_or_mask, rng, unused});
    ctx->saved_data["max_len"] = max_len;
    ctx->saved_data["window"] = window;
    ctx->saved_data["scale"] = scale;
    return out;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto s = ctx->get_saved_variables();
    const auto &q = s[0], &k = s[1], &v = s[2], &out = s[3], &lse = s[4], &sinks = s[5], &aux = s[6];
    const int64_t max_len = ctx->saved_data["max_len"].toInt(), window = ctx->saved_data["window"].toInt();
    const double scale = ctx->saved_data["scale"].toDouble();
    const bool cuda = q.is_cuda();
    auto g = grads[0].contiguous();
    at::Tensor dq, dk, dv;
    if (cuda)
      std::tie(dq, dk, dv) = at::_flash_attention_backward(g, q, k, v, out, lse, aux, aux, max_len, max_len, 0.0, true, s[7],
                                                           s[8], scale, left(window), right(window));
    else
      std::tie(dq, dk, dv) = at::_scaled_dot_product_flash_attention_for_cpu_backward(g, q, k, v, out, lse, 0.0, false, aux, scale);
    auto d = (g.to(at::kFloat) * out.to(at::kFloat)).sum(-1);  // <dout_i, out_i>: CUDA [T, N], CPU [B, N, S]
    if (cuda) d = d.t();
    auto p_sink_d = at::exp(sink_like(sinks, cuda) - lse) * d;
    auto dsink = -(cuda ? p_sink_d.sum(1) : p_sink_d.sum(std::vector<int64_t>{0, 2}));
    return {dq, dk, dv, dsink.to(sinks.scalar_type()), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }

 private:
  static std::optional<int64_t> left(int64_t window) { return window > 0 ? std::optional<int64_t>(window - 1) : std::nullopt; }
  static std::optional<int64_t> right(int64_t window) { return window > 0 ? std::optional<int64_t>(0) : std::nullopt; }
  // The sinks broadcast against lse ([N, T] on CUDA, [B, N, S] on the CPU), fp32.
  static at::Tensor sink_like(const at::Tensor& sinks, bool cuda) {
    auto s = sinks.to(at::kFloat);
    return cuda ? s.view({-1, 1}) : s.view({1, -1, 1});
  }
  // A per-(token, head) factor in lse's layout -> broadcast against out.
  static at::Tensor to_out(const at::Tensor& f, bool cuda) { return cuda ? f.t().unsqueeze(-1) : f.unsqueeze(-1); }
};

bool fusable_on_cuda(const at::Tensor& q) {
  const auto t = q.scalar_type();
  return q.is_cuda() && (t == at::kBFloat16 || t == at::kHalf) && q.size(-1) % 8 == 0 && q.size(-1) <= 256;
}

}  // namespace

at::Tensor fused_sink_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const AttentionLayout& l,
                                double scale, const at::Tensor& sinks) {
  const int64_t B = q.size(0), S = q.size(1), N = q.size(2), D = q.size(3), Nkv = k.size(2), Dv = v.size(3);
  if (q.is_cuda()) {
    ESFT_CHECK(fusable_on_cuda(q), "fused sink attention on CUDA needs bf16 or fp16 and a head dim that is a multiple of "
               "8 up to 256 (got {}, {})", at::toString(q.scalar_type()), D);
    ESFT_CHECK(l.cu_seqlens.defined(), "fused sink attention on CUDA needs the documents as cu_seqlens");
    auto flat = [&](const at::Tensor& x, int64_t heads, int64_t d) { return x.reshape({B * S, heads, d}); };
    auto o = SinkAttention::apply(flat(q, N, D), flat(k, Nkv, D), flat(v, Nkv, Dv), sinks, l.cu_seqlens, l.max_seqlen,
                                  l.window, scale);
    return o.view({B, S, N * Dv});
  }
  // The CPU kernel wants [B,N,S,D] and the heads of k/v repeated.
  const int64_t rep = N / Nkv;
  auto qt = q.transpose(1, 2), kt = k.transpose(1, 2), vt = v.transpose(1, 2);
  auto kk = rep > 1 ? kt.repeat_interleave(rep, 1) : kt, vv = rep > 1 ? vt.repeat_interleave(rep, 1) : vt;
  auto m = l.mask.defined() ? l.mask : at::ones({S, S}, at::TensorOptions().dtype(at::kBool).device(q.device())).tril();
  auto bias = at::zeros(m.sizes(), q.options()).masked_fill(m.logical_not(), -std::numeric_limits<double>::infinity());
  if (bias.dim() == 2) bias = bias.view({1, 1, S, S});
  auto o = SinkAttention::apply(qt.contiguous(), kk.contiguous(), vv.contiguous(), sinks, bias, S, l.window, scale);
  return o.transpose(1, 2).reshape({B, S, N * Dv});
}

at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const AttentionLayout& layout,
                     double scale, const at::Tensor& sinks) {
  if (layout.cu_seqlens.defined()) {
    // Flash takes narrower values than q/k (MLA) zero-padded; the sink path wants them equal.
    const bool flash = fusable_on_cuda(q) && v.size(3) <= q.size(3);
    if (flash && sinks.defined() && v.size(3) == q.size(3)) return fused_sink_attention(q, k, v, layout, scale, sinks);
    return flash && !sinks.defined() ? varlen_attention(q, k, v, layout, scale)
                                     : per_document_attention(q, k, v, layout, scale, sinks);
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
