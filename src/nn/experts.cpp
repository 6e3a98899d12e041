#include "esft/nn/experts.h"

#include <fmt/format.h>

#include "esft/error.h"
#include "esft/nn/ops.h"
#include "esft/nn/packed_experts.h"

namespace esft::nn {

at::Tensor gated_activation(const ExpertsSpec& spec, const at::Tensor& h) {
  const int64_t I = h.size(-1) / 2;
  auto gate = h.narrow(-1, 0, I), up = h.narrow(-1, I, I);
  if (spec.activation == ExpertActivation::SwiGLU) return at::silu(gate) * up;
  gate = gate.clamp_max(spec.limit);
  up = up.clamp(-spec.limit, spec.limit);
  return (up + 1) * (gate * at::sigmoid(gate * spec.alpha));
}

namespace {

bool grouped_mm_ok(const at::Tensor& x) { return x.is_cuda() && x.scalar_type() == at::kBFloat16; }

// Per-row bias of the expert each row belongs to: rows are grouped by expert, counts_E per expert.
at::Tensor bias_rows(const at::Tensor& bias_EX, const at::Tensor& counts_E, int64_t M) {
  auto expert_of_row = at::repeat_interleave(at::arange(counts_E.size(0), counts_E.options()), counts_E, 0, M);
  return bias_EX.index_select(0, expert_of_row);
}

// One bank over rows grouped by its experts. counts_E on the device; host_counts per expert on
// the host when the per-expert loop needs them (CPU, or dtypes the grouped GEMM lacks).
at::Tensor bank_forward(const ExpertsSpec& spec, const ExpertWeights& w, const at::Tensor& x, const at::Tensor& counts_E,
                        const int64_t* host_counts) {
  const auto dtype = x.scalar_type();
  const int64_t M = x.size(0), H = w.down.size(1);
  if (M == 0) return at::zeros({0, H}, x.options());
  auto gu = w.gate_up.to(dtype), dn = w.down.to(dtype);
  if (grouped_mm_ok(x)) {
    auto offs = counts_E.cumsum(0).to(at::kInt);
    auto h = at::_grouped_mm(x, gu.transpose(1, 2), offs);  // [M, 2I]
    if (spec.bias) h = h + bias_rows(w.gate_up_bias.to(dtype), counts_E, M);
    auto y = at::_grouped_mm(gated_activation(spec, h), dn.transpose(1, 2), offs);  // [M, H]
    if (spec.bias) y = y + bias_rows(w.down_bias.to(dtype), counts_E, M);
    return y;
  }
  std::vector<at::Tensor> outs;
  int64_t off = 0;
  for (int64_t e = 0; e < counts_E.size(0); ++e) {
    const int64_t n = host_counts[e];
    if (n == 0) continue;
    auto xe = x.narrow(0, off, n);
    auto h = spec.bias ? nn::linear(xe, gu[e], w.gate_up_bias[e].to(dtype)) : nn::linear(xe, gu[e]);
    auto a = gated_activation(spec, h);
    outs.push_back(spec.bias ? nn::linear(a, dn[e], w.down_bias[e].to(dtype)) : nn::linear(a, dn[e]));
    off += n;
  }
  return at::cat(outs, 0);
}

ExpertWeights select_rows(const ExpertWeights& w, const std::vector<int64_t>& ids, at::ScalarType dtype, bool leaf) {
  auto idx = at::tensor(ids, at::kLong).to(w.gate_up.device());
  auto pick = [&](const at::Tensor& t) -> at::Tensor {
    if (!t.defined()) return {};
    auto r = t.index_select(0, idx).to(dtype).contiguous();
    return leaf ? r.detach().set_requires_grad(!ids.empty()) : r;
  };
  return {pick(w.gate_up), pick(w.down), pick(w.gate_up_bias), pick(w.down_bias)};
}

ExpertWeights concat(const ExpertWeights& a, const ExpertWeights& b, at::ScalarType dtype) {
  auto cat = [&](const at::Tensor& x, const at::Tensor& y) -> at::Tensor {
    if (!x.defined()) return {};
    return at::cat({x.detach().to(dtype), y.detach().to(dtype)}, 0);
  };
  return {cat(a.gate_up, b.gate_up), cat(a.down, b.down), cat(a.gate_up_bias, b.gate_up_bias), cat(a.down_bias, b.down_bias)};
}

}  // namespace

ExpertBanks::ExpertBanks(ExpertsSpec spec, ExpertWeights held, at::ScalarType orig_dtype, ExpertPlacement placement)
    : spec_(spec), orig_dtype_(orig_dtype), placement_(std::move(placement)) {
  const int64_t E = spec.n_experts, I = spec.inter, H = spec.hidden;
  ESFT_CHECK(placement_.owner.empty() || int64_t(placement_.owner.size()) == E,
             "expert banks: the placement covers {} experts, the layer has {}", placement_.owner.size(), E);
  frozen_.ids = placement_.held(E);
  const int64_t n = frozen_.ids.size();
  if (held.packed) {
    ESFT_CHECK(held.packed->size() == n && !held.gate_up.defined() && !held.down.defined(),
               "expert banks: {} packed experts, expected {}", held.packed->size(), n);
  } else {
    ESFT_CHECK(held.gate_up.sizes() == at::IntArrayRef({n, 2 * I, H}) && held.down.sizes() == at::IntArrayRef({n, H, I}),
               "expert banks: weights have shapes {} and {}, expected [{}, {}, {}] and [{}, {}, {}]", held.gate_up.sizes(),
               held.down.sizes(), n, 2 * I, H, n, H, I);
  }
  ESFT_CHECK(held.gate_up_bias.defined() == spec.bias && held.down_bias.defined() == spec.bias,
             "expert banks: biases given and spec disagree");
  frozen_.w = std::move(held);
  if (frozen_.w.packed) {
    auto opts = at::TensorOptions().dtype(at::kFloat).device(frozen_.w.packed->device());
    train_.w.gate_up = at::empty({0, 2 * I, H}, opts), train_.w.down = at::empty({0, H, I}, opts);
    if (spec.bias) train_.w.gate_up_bias = at::empty({0, 2 * I}, opts), train_.w.down_bias = at::empty({0, H}, opts);
  } else {
    train_.w = select_rows(frozen_.w, {}, at::kFloat, true);
  }
  trainable_.assign(E, 0);
  rebuild_slots();
}

bool ExpertBanks::holds(int64_t e) const { return e >= 0 && e < spec_.n_experts && placement_.owner_of(e) == placement_.rank; }

void ExpertBanks::rebuild_slots() {
  // Rank by rank; within a rank trainable experts first, then frozen, each ascending: the order
  // in which this rank's banks hold them, and the same rule on every rank.
  std::vector<int64_t> slot(spec_.n_experts);
  slots_per_rank_.assign(placement_.n_ranks, 0);
  int64_t p = 0;
  for (int r = 0; r < placement_.n_ranks; ++r)
    for (int pass = 1; pass >= 0; --pass)
      for (int64_t e = 0; e < spec_.n_experts; ++e)
        if (placement_.owner_of(e) == r && trainable_[e] == pass) slot[e] = p++, ++slots_per_rank_[r];
  slot_of_expert_ = at::tensor(slot, at::kLong).to(train_.w.gate_up.device());
}

void ExpertBanks::split(const std::vector<int>& trainable_ids) {
  at::NoGradGuard ng;
  if (frozen_.w.packed) {
    std::vector<char> is_train(spec_.n_experts, 0);
    for (int e : trainable_ids) {
      ESFT_CHECK(e >= 0 && e < spec_.n_experts, "expert id {} out of range (0..{})", e, spec_.n_experts - 1);
      is_train[e] = 1;
    }
    return split_packed(is_train);
  }
  const auto dtype = frozen_.w.gate_up.scalar_type();
  // Back to global order first, so split() may be called again.
  std::vector<int64_t> order = train_.ids;
  order.insert(order.end(), frozen_.ids.begin(), frozen_.ids.end());
  auto stacked = concat(train_.w, frozen_.w, dtype);  // rows in `order`
  std::vector<int64_t> row_of(spec_.n_experts, -1);
  for (size_t r = 0; r < order.size(); ++r) row_of[order[r]] = int64_t(r);

  trainable_.assign(spec_.n_experts, 0);
  for (int e : trainable_ids) {
    ESFT_CHECK(e >= 0 && e < spec_.n_experts, "expert id {} out of range (0..{})", e, spec_.n_experts - 1);
    trainable_[e] = 1;
  }
  Bank t, f;
  std::vector<int64_t> t_rows, f_rows;
  for (int64_t e = 0; e < spec_.n_experts; ++e) {
    if (row_of[e] < 0) continue;  // held by another rank
    (trainable_[e] ? t.ids : f.ids).push_back(e);
    (trainable_[e] ? t_rows : f_rows).push_back(row_of[e]);
  }
  t.w = select_rows(stacked, t_rows, at::kFloat, true);
  f.w = select_rows(stacked, f_rows, dtype, false);
  train_ = std::move(t);
  frozen_ = std::move(f);
  rebuild_slots();
}

// Experts that become trainable are expanded into fp32 masters, the rest stay packed. An expert
// trained before cannot return: the packed storage cannot hold its updated weights.
void ExpertBanks::split_packed(const std::vector<char>& is_train) {
  for (auto e : train_.ids)
    ESFT_CHECK(is_train[e], "expert {} was trainable and cannot return to the packed frozen bank", e);
  const auto& p = *frozen_.w.packed;
  Bank t, f;
  std::vector<int64_t> keep;  // frozen positions that stay frozen
  std::vector<at::Tensor> gu, dn, gub, dnb;
  for (int64_t e = 0; e < spec_.n_experts; ++e) {
    if (!holds(e)) continue;  // held by another expert-parallel rank
    auto [b, i] = locate(e);
    if (!is_train[e]) {
      f.ids.push_back(e);
      keep.push_back(i);
      continue;
    }
    t.ids.push_back(e);
    const bool was_trained = b == &train_;
    auto row = [&, i = i](const at::Tensor& all) { return all.defined() ? all[i].to(at::kFloat) : at::Tensor(); };
    gu.push_back(was_trained ? row(train_.w.gate_up) : p.unpack(ExpertProj::GateUp, i, 1, at::kFloat)[0]);
    dn.push_back(was_trained ? row(train_.w.down) : p.unpack(ExpertProj::Down, i, 1, at::kFloat)[0]);
    gub.push_back(row(b->w.gate_up_bias));
    dnb.push_back(row(b->w.down_bias));
  }
  auto leaf = [&](std::vector<at::Tensor>& rows, const at::Tensor& empty) -> at::Tensor {
    if (!empty.defined()) return {};
    auto r = rows.empty() ? empty.to(at::kFloat) : at::stack(rows);
    return r.contiguous().detach().set_requires_grad(!rows.empty());
  };
  t.w = {leaf(gu, train_.w.gate_up), leaf(dn, train_.w.down), leaf(gub, train_.w.gate_up_bias), leaf(dnb, train_.w.down_bias)};
  auto idx = at::tensor(keep, at::kLong).to(p.device());
  auto pick = [&](const at::Tensor& x) { return x.defined() ? x.index_select(0, idx) : at::Tensor(); };
  f.w.gate_up_bias = pick(frozen_.w.gate_up_bias);
  f.w.down_bias = pick(frozen_.w.down_bias);
  f.w.packed = p.select(keep);
  train_ = std::move(t);
  frozen_ = std::move(f);
  trainable_.assign(spec_.n_experts, 0);
  for (int64_t e = 0; e < spec_.n_experts; ++e) trainable_[e] = is_train[e];
  rebuild_slots();
}

at::Tensor ExpertBanks::frozen_forward(const at::Tensor& x, const at::Tensor& counts_E, const int64_t* host) const {
  if (frozen_.w.packed) return packed_bank_forward(spec_, frozen_.w, x, counts_E, host);
  return bank_forward(spec_, frozen_.w, x, counts_E, host);
}

bool ExpertBanks::needs_host_counts(const at::Tensor& x) const {
  return !grouped_mm_ok(x) || (!train_.ids.empty() && !frozen_.ids.empty());
}

at::Tensor ExpertBanks::compute(const at::Tensor& x, const at::Tensor& counts_E, const std::vector<int64_t>& host) const {
  const int64_t n_train = train_.ids.size(), n_frozen = frozen_.ids.size();
  last_trained_rows_ = n_frozen == 0 ? x.size(0) : 0;
  if (n_train == 0) return frozen_forward(x, counts_E, host.empty() ? nullptr : host.data());
  if (n_frozen == 0) return bank_forward(spec_, train_.w, x, counts_E, host.empty() ? nullptr : host.data());
  ESFT_CHECK(int64_t(host.size()) == n_train + n_frozen, "expert banks: row counts missing on the host");
  int64_t m_train = 0;
  for (int64_t s = 0; s < n_train; ++s) m_train += host[s];
  last_trained_rows_ = m_train;
  const int64_t M = x.size(0);
  auto a = bank_forward(spec_, train_.w, x.narrow(0, 0, m_train), counts_E.narrow(0, 0, n_train), host.data());
  auto b = frozen_forward(x.narrow(0, m_train, M - m_train), counts_E.narrow(0, n_train, n_frozen), host.data() + n_train);
  if (m_train == 0) return b;
  if (m_train == M) return a;
  return at::cat({a, b}, 0);
}

ExpertWeights ExpertBanks::trainable() const { return train_.ids.empty() ? ExpertWeights{} : train_.w; }

std::pair<const ExpertBanks::Bank*, int64_t> ExpertBanks::locate(int64_t e) const {
  for (const Bank* b : {&train_, &frozen_})
    for (size_t i = 0; i < b->ids.size(); ++i)
      if (b->ids[i] == e) return {b, int64_t(i)};
  if (e >= 0 && e < spec_.n_experts) fail("expert {} is held by expert-parallel rank {}, not here", e, placement_.owner_of(e));
  fail("no expert {} (the layer has {})", e, spec_.n_experts);
}

ExpertWeights ExpertBanks::expert(int64_t e) const {
  auto [b, i] = locate(e);
  auto row = [&, i = i](const at::Tensor& t) { return t.defined() ? t[i].detach() : at::Tensor(); };
  if (b->w.packed) {
    const auto& p = *b->w.packed;
    return {p.unpack(ExpertProj::GateUp, i, 1, p.dtype())[0], p.unpack(ExpertProj::Down, i, 1, p.dtype())[0],
            row(b->w.gate_up_bias), row(b->w.down_bias)};
  }
  return {row(b->w.gate_up), row(b->w.down), row(b->w.gate_up_bias), row(b->w.down_bias)};
}

void ExpertBanks::set_expert(int64_t e, const ExpertWeights& w) {
  at::NoGradGuard ng;
  auto [b, i] = locate(e);
  ESFT_CHECK(!b->w.packed, "expert {} is frozen in a packed (quantized) bank and cannot be overwritten; make it "
             "trainable first (as an adapter's expert_config.json does)", e);
  auto put = [&, i = i, b = b](const at::Tensor& dst_all, const at::Tensor& src, const char* what) {
    if (!dst_all.defined()) return;
    ESFT_CHECK(src.defined(), "expert {}: {} missing", e, what);
    auto dst = dst_all[i];
    ESFT_CHECK(src.sizes() == dst.sizes(), "expert {}: {} has shape {}, the model's is {}", e, what, src.sizes(), dst.sizes());
    dst.copy_(src);
  };
  put(b->w.gate_up, w.gate_up, "gate/up weights");
  put(b->w.down, w.down, "down weights");
  put(b->w.gate_up_bias, w.gate_up_bias, "gate/up bias");
  put(b->w.down_bias, w.down_bias, "down bias");
}

}  // namespace esft::nn

std::vector<int64_t> esft::ExpertPlacement::held(int64_t n_experts) const {
  std::vector<int64_t> out;
  for (int64_t e = 0; e < n_experts; ++e)
    if (owner_of(e) == rank) out.push_back(e);
  return out;
}
