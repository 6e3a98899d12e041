#include "esft/nn/ops.h"

namespace esft::nn {

at::Tensor linear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) {
  constexpr int64_t kMinRows = 12;
  const int64_t rows = x.dim() ? x.numel() / std::max<int64_t>(x.size(-1), 1) : 0;
  if (!x.is_cuda() && rows > 0 && rows < kMinRows) {
    auto x2 = x.reshape({rows, x.size(-1)});
    auto padded = at::cat({x2, at::zeros({kMinRows - rows, x.size(-1)}, x.options())}, 0);
    auto y = b.defined() ? at::linear(padded, w, b) : at::linear(padded, w);
    auto shape = x.sizes().vec();
    shape.back() = w.size(0);
    return y.narrow(0, 0, rows).reshape(shape);
  }
  return b.defined() ? at::linear(x, w, b) : at::linear(x, w);
}

at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  // On the GPU one fused kernel (normalised and scaled in fp32, rounded once: within a bf16 ulp of
  // HF's two roundings); elsewhere HF's exact sequence.
  if (x.is_cuda()) return at::rms_norm(x, {x.size(-1)}, weight.to(x.scalar_type()), eps);
  auto x32 = x.to(at::kFloat);
  auto var = x32.pow(2).mean(-1, /*keepdim=*/true);
  auto y = (x32 * at::rsqrt(var + eps)).to(x.scalar_type());
  return weight.to(x.scalar_type()) * y;
}

at::Tensor rms_norm_fp32_weight(const at::Tensor& x, const at::Tensor& weight, double eps) {
  auto x32 = x.to(at::kFloat);
  auto var = x32.pow(2).mean(-1, /*keepdim=*/true);
  return (weight.to(at::kFloat) * (x32 * at::rsqrt(var + eps))).to(x.scalar_type());
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
