#include "esft/nn/ops.h"

namespace esft::nn {

at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
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
