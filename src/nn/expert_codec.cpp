#include "esft/nn/expert_codec.h"

#include <fmt/format.h>

#include "esft/error.h"
#include "esft/nn/weight_source.h"

namespace esft::nn {

GatedExpertCodec::GatedExpertCodec(std::string prefix, ExpertsSpec spec, ExpertNaming naming)
    : prefix_(std::move(prefix)), spec_(spec), naming_(std::move(naming)) {
  ESFT_CHECK(!spec_.bias, "{}: gated experts without biases expected", prefix_);
}

std::string GatedExpertCodec::name(int64_t e, const std::string& proj) const {
  return fmt::format("{}.{}.{}.weight", prefix_, e, proj);
}

ExpertWeights ExpertCodec::load_experts(WeightSource& src, const at::Device& dev, at::ScalarType dtype,
                                        at::ScalarType* orig, const std::vector<int64_t>& ids) {
  auto all = load(src, at::kCPU, dtype, orig);
  auto idx = at::tensor(ids, at::kLong);
  auto pick = [&](const at::Tensor& t) { return t.defined() ? t.index_select(0, idx).to(dev) : at::Tensor(); };
  return {pick(all.gate_up), pick(all.down), pick(all.gate_up_bias), pick(all.down_bias)};
}

ExpertWeights GatedExpertCodec::load(WeightSource& src, const at::Device& dev, at::ScalarType dtype,
                                     at::ScalarType* orig) {
  std::vector<int64_t> all(spec_.n_experts);
  for (int64_t e = 0; e < spec_.n_experts; ++e) all[e] = e;
  return load_experts(src, dev, dtype, orig, all);
}

ExpertWeights GatedExpertCodec::load_experts(WeightSource& src, const at::Device& dev, at::ScalarType dtype,
                                             at::ScalarType* orig, const std::vector<int64_t>& ids) {
  const int64_t E = spec_.n_experts, I = spec_.inter, H = spec_.hidden, n = ids.size();
  ExpertWeights w;
  fused_ = src.has(prefix_ + ".gate_up_proj");
  if (fused_) {
    // Only this rank's rows are read out of the (memory-mapped) fused tensors.
    *orig = src.dtype(prefix_ + ".gate_up_proj");
    w.gate_up = src.take_rows(prefix_ + ".gate_up_proj", {E, 2 * I, H}, ids).to(dev, dtype);
    w.down = src.take_rows(prefix_ + ".down_proj", {E, H, I}, ids).to(dev, dtype);
    return w;
  }
  // Per-expert keys, copied one by one straight into the device banks (no full host copy).
  auto opts = at::TensorOptions().dtype(dtype).device(dev);
  w.gate_up = at::empty({n, 2 * I, H}, opts);
  w.down = at::empty({n, H, I}, opts);
  *orig = src.has(name(0, naming_.gate)) ? src.dtype(name(0, naming_.gate)) : at::kFloat;
  std::vector<char> wanted(E, 0);
  for (int64_t r = 0; r < n; ++r) {
    const int64_t e = ids[r];
    wanted[e] = 1;
    w.gate_up[r].narrow(0, 0, I).copy_(src.take(name(e, naming_.gate), {I, H}));
    w.gate_up[r].narrow(0, I, I).copy_(src.take(name(e, naming_.up), {I, H}));
    w.down[r].copy_(src.take(name(e, naming_.down), {H, I}));
  }
  for (int64_t e = 0; e < E; ++e)
    if (!wanted[e])
      for (auto* proj : {&naming_.gate, &naming_.up, &naming_.down}) {
        ESFT_CHECK(src.has(name(e, *proj)), "{}: tensor {} is missing from the checkpoint", src.where(), name(e, *proj));
        src.ignore(name(e, *proj));  // another expert-parallel rank's
      }
  return w;
}

std::vector<HfTensor> GatedExpertCodec::export_all(const ExpertBanks& banks) const {
  const int64_t E = spec_.n_experts;
  if (!fused_) {
    std::vector<int64_t> all(E);
    for (int64_t e = 0; e < E; ++e) all[e] = e;
    return export_experts(banks, all);
  }
  std::vector<at::Tensor> gu, dn;
  for (int64_t e = 0; e < E; ++e) {
    auto x = banks.expert(e);
    gu.push_back(x.gate_up.to(at::kCPU, banks.orig_dtype()));
    dn.push_back(x.down.to(at::kCPU, banks.orig_dtype()));
  }
  return {{prefix_ + ".gate_up_proj", at::stack(gu)}, {prefix_ + ".down_proj", at::stack(dn)}};
}

std::vector<HfTensor> GatedExpertCodec::export_experts(const ExpertBanks& banks, const std::vector<int64_t>& ids) const {
  const int64_t I = spec_.inter;
  std::vector<HfTensor> out;
  for (auto e : ids) {
    auto x = banks.expert(e);
    auto gu = x.gate_up.to(banks.orig_dtype());
    out.push_back({name(e, naming_.gate), gu.narrow(0, 0, I).contiguous()});
    out.push_back({name(e, naming_.up), gu.narrow(0, I, I).contiguous()});
    out.push_back({name(e, naming_.down), x.down.to(banks.orig_dtype()).contiguous()});
  }
  return out;
}

bool GatedExpertCodec::parse_adapter_name(const std::string& n, int64_t* e, std::string* part) const {
  const std::string head = prefix_ + ".";
  if (n.compare(0, head.size(), head) != 0) return false;
  size_t p = head.size(), q = p;
  while (q < n.size() && std::isdigit(static_cast<unsigned char>(n[q]))) ++q;
  if (q == p || q >= n.size() || n[q] != '.' || q - p > 9) return false;
  *e = std::stoll(n.substr(p, q - p));
  std::string rest = n.substr(q + 1);
  for (auto* proj : {&naming_.gate, &naming_.up, &naming_.down})
    if (rest == *proj + ".weight") {
      *part = *proj;
      return *e < spec_.n_experts;
    }
  return false;
}

ExpertWeights GatedExpertCodec::from_adapter(int64_t e, const std::map<std::string, at::Tensor>& parts) const {
  for (auto* proj : {&naming_.gate, &naming_.up, &naming_.down})
    if (!parts.count(*proj))
      fail("the adapter holds only part of {}.{} ({} is missing)", prefix_, e, name(e, *proj));
  const int64_t I = spec_.inter, H = spec_.hidden;
  for (auto* proj : {&naming_.gate, &naming_.up})
    ESFT_CHECK(parts.at(*proj).sizes() == at::IntArrayRef({I, H}), "adapter tensor {} has shape {}, the model's is [{}, {}]",
               name(e, *proj), parts.at(*proj).sizes(), I, H);
  return {at::cat({parts.at(naming_.gate), parts.at(naming_.up)}, 0), parts.at(naming_.down), {}, {}};
}

}  // namespace esft::nn
