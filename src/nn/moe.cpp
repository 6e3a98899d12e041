#include "esft/nn/moe.h"

#include <fmt/format.h>

#include <algorithm>

#include "esft/error.h"

namespace esft::nn {

RouterOutput softmax_topk_router(const at::Tensor& x, const at::Tensor& w, int64_t k, bool norm_topk_prob) {
  RouterOutput r;
  r.logits_TE = at::linear(x, w);
  auto probs = at::softmax(r.logits_TE, -1, at::kFloat);
  auto [vals, ids] = at::topk(probs, k, -1);
  if (norm_topk_prob) vals = vals / vals.sum(-1, /*keepdim=*/true);
  r.weights_TK = vals.to(r.logits_TE.scalar_type());
  r.ids_TK = ids;
  return r;
}

at::Tensor load_balancing_loss(const std::vector<at::Tensor>& logits, int64_t E, int64_t k, const at::Tensor& valid) {
  auto dev = logits.at(0).device();
  auto f32 = at::TensorOptions().dtype(at::kFloat).device(dev);
  auto tokens_per_expert = at::zeros({E}, f32), prob_sum = at::zeros({E}, f32);
  at::Tensor rows = at::zeros({}, f32);
  for (auto& l : logits) {
    auto p = at::softmax(l, -1);
    auto sel = std::get<1>(at::topk(p, k, -1)).reshape({-1});
    if (!valid.defined()) {
      tokens_per_expert = tokens_per_expert + at::bincount(sel, {}, E).to(at::kFloat);
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

at::Tensor grouped_swiglu(const at::Tensor& x, const at::Tensor& gate_up, const at::Tensor& down,
                          const at::Tensor& counts) {
  int64_t inter = down.size(2);
  if (x.size(0) == 0) return at::zeros({0, down.size(1)}, x.options());
  if (x.is_cuda() && x.scalar_type() == at::kBFloat16) {
    auto offs = counts.cumsum(0).to(at::kInt).to(x.device());
    auto h = at::_grouped_mm(x, gate_up.transpose(1, 2), offs);  // [M,F]
    auto a = at::silu(h.narrow(1, 0, inter)) * h.narrow(1, inter, inter);
    return at::_grouped_mm(a, down.transpose(1, 2), offs);  // [M,H]
  }
  // Portable path: one matmul pair per expert with rows.
  auto c = counts.accessor<int64_t, 1>();
  std::vector<at::Tensor> outs;
  int64_t off = 0;
  for (int64_t e = 0; e < counts.size(0); ++e) {
    if (c[e] == 0) continue;
    auto xe = x.narrow(0, off, c[e]);
    auto h = at::linear(xe, gate_up[e]);
    auto a = at::silu(h.narrow(1, 0, inter)) * h.narrow(1, inter, inter);
    outs.push_back(at::linear(a, down[e]));
    off += c[e];
  }
  return at::cat(outs, 0);
}

ExpertBanks::ExpertBanks(std::string prefix, const at::Tensor& gate_up, const at::Tensor& down, at::ScalarType orig)
    : prefix_(std::move(prefix)), n_experts_(gate_up.size(0)), inter_(down.size(2)), orig_dtype_(orig) {
  frozen_.gate_up_EFH = gate_up;
  frozen_.down_EHI = down;
  for (int64_t e = 0; e < n_experts_; ++e) frozen_.ids.push_back(e);
  rebuild_position_map();
}

void ExpertBanks::rebuild_position_map() {
  std::vector<int64_t> pos(n_experts_);
  int64_t p = 0;
  for (auto e : train_.ids) pos[e] = p++;
  for (auto e : frozen_.ids) pos[e] = p++;
  position_of_E_ = at::tensor(pos, at::kLong).to(frozen_.gate_up_EFH.device());
}

void ExpertBanks::split(const std::vector<int>& trainable_ids) {
  at::NoGradGuard ng;
  // Gather every expert back into global order first so split() may be called repeatedly.
  auto all_ids = train_.ids;
  all_ids.insert(all_ids.end(), frozen_.ids.begin(), frozen_.ids.end());
  auto dtype = frozen_.gate_up_EFH.scalar_type();
  std::vector<at::Tensor> gu(n_experts_), dn(n_experts_);
  for (size_t i = 0; i < train_.ids.size(); ++i)
    gu[train_.ids[i]] = train_.gate_up_EFH[i].to(dtype), dn[train_.ids[i]] = train_.down_EHI[i].to(dtype);
  for (size_t i = 0; i < frozen_.ids.size(); ++i)
    gu[frozen_.ids[i]] = frozen_.gate_up_EFH[i], dn[frozen_.ids[i]] = frozen_.down_EHI[i];

  std::vector<char> is_train(n_experts_, 0);
  for (int e : trainable_ids) {
    ESFT_CHECK(e >= 0 && e < n_experts_, "{}: expert id {} out of range (0..{})", prefix_, e, n_experts_ - 1);
    is_train[e] = 1;
  }
  Bank t, f;
  std::vector<at::Tensor> tgu, tdn, fgu, fdn;
  for (int64_t e = 0; e < n_experts_; ++e) {
    if (is_train[e]) t.ids.push_back(e), tgu.push_back(gu[e]), tdn.push_back(dn[e]);
    else f.ids.push_back(e), fgu.push_back(gu[e]), fdn.push_back(dn[e]);
  }
  auto opts = frozen_.gate_up_EFH.options();
  auto stack = [&](std::vector<at::Tensor>& v, int64_t r, int64_t c, at::ScalarType dt) {
    return v.empty() ? at::empty({0, r, c}, opts.dtype(dt)) : at::stack(v).to(dt).contiguous();
  };
  int64_t H = frozen_.down_EHI.size(1);
  t.gate_up_EFH = stack(tgu, 2 * inter_, H, at::kFloat).set_requires_grad(!t.ids.empty());
  t.down_EHI = stack(tdn, H, inter_, at::kFloat).set_requires_grad(!t.ids.empty());
  f.gate_up_EFH = stack(fgu, 2 * inter_, H, dtype);
  f.down_EHI = stack(fdn, H, inter_, dtype);
  train_ = std::move(t);
  frozen_ = std::move(f);
  rebuild_position_map();
}

at::Tensor ExpertBanks::forward(const at::Tensor& x, const at::Tensor& ids, const at::Tensor& w) const {
  const int64_t T = x.size(0), K = ids.size(1);
  const auto dtype = x.scalar_type();
  // Dispatch: sort the T*K (token, slot) rows by bank position.
  auto pos = position_of_E_.index_select(0, ids.reshape({-1}));
  auto order = std::get<1>(at::sort(pos, /*stable=*/true, 0, false));
  auto token_of_row = at::floor_divide(order, K);
  auto counts = at::bincount(pos, {}, n_experts_).cpu();
  auto x_rows = x.index_select(0, token_of_row);

  const int64_t n_train = train_.ids.size();
  int64_t m_train = n_train ? counts.narrow(0, 0, n_train).sum().item<int64_t>() : 0;
  std::vector<at::Tensor> parts;
  if (m_train > 0)
    parts.push_back(grouped_swiglu(x_rows.narrow(0, 0, m_train), train_.gate_up_EFH.to(dtype),
                                   train_.down_EHI.to(dtype), counts.narrow(0, 0, n_train)));
  if (m_train < x_rows.size(0))
    parts.push_back(grouped_swiglu(x_rows.narrow(0, m_train, x_rows.size(0) - m_train), frozen_.gate_up_EFH,
                                   frozen_.down_EHI, counts.narrow(0, n_train, n_experts_ - n_train)));
  auto y_rows = parts.size() == 1 ? parts[0] : at::cat(parts, 0);
  // Combine: weight each row by its gate and add it back to its token.
  y_rows = y_rows * w.reshape({-1}).index_select(0, order).unsqueeze(1);
  return at::zeros({T, x.size(1)}, x.options()).index_add(0, token_of_row, y_rows.to(dtype));
}

std::vector<TrainableTensor> ExpertBanks::trainable() const {
  if (train_.ids.empty()) return {};
  return {{prefix_ + ".trainable_gate_up_proj", train_.gate_up_EFH, true},
          {prefix_ + ".trainable_down_proj", train_.down_EHI, true}};
}

std::vector<HfTensor> ExpertBanks::export_tensors(bool only_trainable) const {
  std::vector<std::pair<int64_t, std::pair<at::Tensor, at::Tensor>>> rows;
  for (size_t i = 0; i < train_.ids.size(); ++i)
    rows.push_back({train_.ids[i], {train_.gate_up_EFH[i], train_.down_EHI[i]}});
  if (!only_trainable)
    for (size_t i = 0; i < frozen_.ids.size(); ++i)
      rows.push_back({frozen_.ids[i], {frozen_.gate_up_EFH[i], frozen_.down_EHI[i]}});
  std::sort(rows.begin(), rows.end(), [](auto& a, auto& b) { return a.first < b.first; });
  std::vector<HfTensor> out;
  for (auto& [e, t] : rows) {
    auto gu = t.first.detach().to(orig_dtype_);
    auto p = fmt::format("{}.{}.", prefix_, e);
    out.push_back({p + "gate_proj.weight", gu.narrow(0, 0, inter_).contiguous()});
    out.push_back({p + "up_proj.weight", gu.narrow(0, inter_, inter_).contiguous()});
    out.push_back({p + "down_proj.weight", t.second.detach().to(orig_dtype_).contiguous()});
  }
  return out;
}

void ExpertBanks::load_expert(int64_t e, const at::Tensor& gate, const at::Tensor& up, const at::Tensor& down) {
  at::NoGradGuard ng;
  auto put = [&](Bank& b, size_t i) {
    auto gu = b.gate_up_EFH[i];
    ESFT_CHECK(gate.sizes() == gu.narrow(0, 0, inter_).sizes() && down.sizes() == b.down_EHI[i].sizes(),
               "{}.{}: adapter tensor shapes do not match the model", prefix_, e);
    gu.narrow(0, 0, inter_).copy_(gate);
    gu.narrow(0, inter_, inter_).copy_(up);
    b.down_EHI[i].copy_(down);
  };
  for (size_t i = 0; i < train_.ids.size(); ++i)
    if (train_.ids[i] == e) return put(train_, i);
  for (size_t i = 0; i < frozen_.ids.size(); ++i)
    if (frozen_.ids[i] == e) return put(frozen_, i);
  fail("{}: no expert {}", prefix_, e);
}

}  // namespace esft::nn
