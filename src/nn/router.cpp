#include "esft/nn/router.h"

#include <fmt/format.h>

#include "esft/error.h"
#include "esft/nn/ops.h"

namespace esft::nn {

std::string RouterSpec::describe() const {
  const char* s = score == RouterScore::Softmax ? "softmax" : score == RouterScore::Sigmoid ? "sigmoid" : "softmax-of-top-k";
  std::string out = fmt::format("{} router, top-{} of {}", s, top_k, n_experts);
  if (n_group > 1) out += fmt::format(", best {} of {} groups", topk_group, n_group);
  if (selection_bias) out += ", selection bias";
  if (norm_topk_prob) out += ", renormalised";
  if (routed_scaling != 1.0) out += fmt::format(", scaled by {}", routed_scaling);
  return out;
}

namespace {

// Experts of the groups outside the best topk_group get masked_value (group-limited greedy).
at::Tensor limit_to_groups(const RouterSpec& spec, const at::Tensor& choice_TE) {
  const int64_t T = choice_TE.size(0), G = spec.n_group, per = spec.n_experts / spec.n_group;
  auto grouped = choice_TE.view({T, G, per});
  at::Tensor group_scores = spec.group_score == GroupScore::Max ? std::get<0>(grouped.max(-1))
                                                                : std::get<0>(grouped.topk(2, -1)).sum(-1);
  auto group_idx = std::get<1>(at::topk(group_scores, spec.topk_group, -1, /*largest=*/true, /*sorted=*/false));
  auto keep = at::zeros_like(group_scores).scatter_(1, group_idx, 1.0);
  auto keep_TE = keep.unsqueeze(-1).expand({T, G, per}).reshape({T, spec.n_experts}).to(at::kBool);
  return choice_TE.masked_fill(keep_TE.logical_not(), spec.masked_value);
}

}  // namespace

RouterOutput route(const RouterSpec& spec, const at::Tensor& x, const RouterWeights& w) {
  RouterOutput r;
  const auto dtype = x.scalar_type();
  const auto ct = spec.logits_fp32 ? at::kFloat : dtype;
  r.logits_TE = nn::linear(x.to(ct), w.weight_EH.to(ct), spec.router_bias ? w.bias_E.to(ct) : at::Tensor());

  at::Tensor weights, ids;
  if (spec.score == RouterScore::SoftmaxOfTopK) {
    auto [vals, idx] = at::topk(r.logits_TE, spec.top_k, -1, true, spec.sorted_topk);
    weights = at::softmax(vals, -1, vals.scalar_type());
    ids = idx;
  } else {
    auto scores = spec.score == RouterScore::Softmax ? at::softmax(r.logits_TE, -1, at::kFloat)
                                                     : at::sigmoid(r.logits_TE.to(at::kFloat));
    auto choice = spec.selection_bias ? scores + w.selection_bias_E.to(at::kFloat) : scores;
    if (spec.n_group > 1) choice = limit_to_groups(spec, choice);
    if (!spec.selection_bias && spec.n_group <= 1) {
      auto [vals, idx] = at::topk(choice, spec.top_k, -1, true, spec.sorted_topk);
      weights = vals, ids = idx;
    } else {
      ids = std::get<1>(at::topk(choice, spec.top_k, -1, true, spec.sorted_topk));
      // With a selection bias the weights come from the unbiased scores. V2's group masking
      // zeroes scores; topk's values are then the masked scores, which equal the gathered ones
      // for every chosen expert unless a masked one is chosen (as HF, which returns topk values).
      weights = spec.selection_bias ? scores.gather(1, ids) : choice.gather(1, ids);
    }
  }
  if (spec.norm_topk_prob) {
    auto denom = weights.sum(-1, /*keepdim=*/true);
    weights = weights / (spec.norm_eps != 0 ? denom + spec.norm_eps : denom);
  }
  if (spec.routed_scaling != 1.0) weights = weights * spec.routed_scaling;
  r.weights_TK = spec.weights_fp32 ? weights : weights.to(r.logits_TE.scalar_type());
  r.ids_TK = ids;
  return r;
}

at::Tensor load_balancing_loss(const std::vector<at::Tensor>& logits, int64_t E, int64_t k, const at::Tensor& valid) {
  ESFT_CHECK(!logits.empty(), "load_balancing_loss: no router logits");
  auto dev = logits.at(0).device();
  auto f32 = at::TensorOptions().dtype(at::kFloat).device(dev);
  auto tokens_per_expert = at::zeros({E}, f32), prob_sum = at::zeros({E}, f32);
  at::Tensor rows = at::zeros({}, f32);
  for (auto& l : logits) {
    auto p = at::softmax(l, -1);
    auto sel = std::get<1>(at::topk(p, k, -1)).reshape({-1});
    if (!valid.defined()) {
      tokens_per_expert = tokens_per_expert + at::zeros({E}, f32).scatter_add(0, sel, at::ones(sel.sizes(), f32));
      prob_sum = prob_sum + p.to(at::kFloat).sum(0);
      rows = rows + double(p.size(0));
    } else {
      auto m = valid.reshape({-1}).to(f32);
      tokens_per_expert = tokens_per_expert + at::zeros({E}, f32).scatter_add(0, sel, m.repeat_interleave(k));
      prob_sum = prob_sum + (p.to(at::kFloat) * m.unsqueeze(-1)).sum(0);
      rows = rows + m.sum();
    }
  }
  return (tokens_per_expert / rows * (prob_sum / rows)).sum() * double(E);
}

}  // namespace esft::nn
