#include "esft/nn/lm_loss.h"

#include <torch/csrc/autograd/custom_function.h>

#include "esft/nn/ops.h"

namespace esft::nn {

at::Tensor shift_labels(const at::Tensor& labels) {
  return at::cat({labels.narrow(1, 1, labels.size(1) - 1), at::full({labels.size(0), 1}, -100, labels.options())}, 1)
      .reshape({-1});
}

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Per chunk: logits = fp32(h_c @ w^T); loss = sum(logsumexp(logits) - logits[label]).
// Backward per chunk: g = (softmax(logits) - onehot(label)) * grad, cast to the compute dtype as
// the .float() of HF's loss casts its gradient; dh_c = g @ w, dw += g^T @ h_c.
struct ChunkedLmLoss : public torch::autograd::Function<ChunkedLmLoss> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& h, const at::Tensor& w, const at::Tensor& labels,
                            int64_t chunk) {
    auto total = at::zeros({}, h.options().dtype(at::kFloat));
    for (int64_t s = 0; s < h.size(0); s += chunk) {
      const int64_t n = std::min(chunk, h.size(0) - s);
      auto logits = nn::linear(h.narrow(0, s, n), w).to(at::kFloat);
      auto lab = labels.narrow(0, s, n);
      total += (at::logsumexp(logits, -1) - logits.gather(1, lab.unsqueeze(1)).squeeze(1)).sum();
    }
    ctx->save_for_backward({h, w, labels});
    ctx->saved_data["chunk"] = chunk;
    return total;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const auto &h = saved[0], &w = saved[1], &labels = saved[2];
    const int64_t chunk = ctx->saved_data["chunk"].toInt();
    const auto g_out = grads[0].to(at::kFloat);
    at::Tensor dh = h.requires_grad() ? at::empty_like(h) : at::Tensor();
    at::Tensor dw = w.requires_grad() ? at::zeros(w.sizes(), w.options().dtype(at::kFloat)) : at::Tensor();
    for (int64_t s = 0; s < h.size(0); s += chunk) {
      const int64_t n = std::min(chunk, h.size(0) - s);
      auto hc = h.narrow(0, s, n);
      auto p = at::softmax(nn::linear(hc, w).to(at::kFloat), -1);
      p.scatter_add_(1, labels.narrow(0, s, n).unsqueeze(1), at::full({n, 1}, -1.0, p.options()));
      auto g = (p * g_out).to(h.scalar_type());
      if (dh.defined()) dh.narrow(0, s, n).copy_(at::matmul(g, w));
      if (!dw.defined()) continue;
      if (g.scalar_type() == at::kFloat) dw.addmm_(g.t(), hc);
      else if (g.is_cuda()) dw.add_(at::mm(g.t(), hc, at::kFloat));  // 16-bit inputs, fp32 accumulation across chunks
      else dw.add_(at::mm(g.t(), hc).to(at::kFloat));
    }
    return {dh, dw.defined() ? dw.to(w.scalar_type()) : at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

at::Tensor lm_loss_sum(const at::Tensor& h, const at::Tensor& w, const at::Tensor& shifted, int64_t* n_tokens,
                       int64_t chunk) {
  auto rows = (shifted != -100).nonzero().squeeze(1);  // one device sync: the number of labelled positions
  if (n_tokens) *n_tokens = rows.size(0);
  if (chunk <= 0) chunk = std::max<int64_t>(64, (int64_t(1) << 28) / std::max<int64_t>(w.size(0), 1));
  return ChunkedLmLoss::apply(h.index_select(0, rows), w, shifted.index_select(0, rows), chunk);
}

}  // namespace esft::nn
