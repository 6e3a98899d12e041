#include "esft/nn/param_store.h"

#include <fmt/ranges.h>

#include "esft/error.h"

namespace esft::nn {

namespace {
// HF Trainer's convention: no weight decay for biases and normalisation weights.
bool decays(const std::string& name) {
  bool is_bias = name.size() >= 5 && name.compare(name.size() - 5, 5, ".bias") == 0;
  return !is_bias && name.find("norm") == std::string::npos;
}
}  // namespace

void ParamStore::add(const std::string& name, const at::Tensor& value, ParamGroup group, bool keep_fp32) {
  ESFT_CHECK(!has(name), "duplicate weight {}", name);
  index_[name] = entries_.size();
  auto dt = keep_fp32 ? at::kFloat : dtype_;
  entries_.push_back({name, value.to(device_, dt).contiguous(), value.scalar_type(), group, keep_fp32, decays(name), false});
}

ParamStore::Entry& ParamStore::entry(const std::string& name) {
  auto it = index_.find(name);
  if (it == index_.end()) fail("model weight {} is missing", name);
  return entries_[it->second];
}
const ParamStore::Entry& ParamStore::entry(const std::string& name) const {
  return const_cast<ParamStore*>(this)->entry(name);
}

at::Tensor ParamStore::get(const std::string& name) const {
  const auto& e = entry(name);
  auto dt = e.keep_fp32 ? at::kFloat : dtype_;
  return e.value.scalar_type() == dt ? e.value : e.value.to(dt);
}

size_t ParamStore::set_group_trainable(ParamGroup group) {
  size_t n = 0;
  for (auto& e : entries_) {
    if (e.group != group) continue;
    ++n;
    if (e.trainable) continue;
    e.value = e.value.to(at::kFloat).clone().detach().set_requires_grad(true);
    e.trainable = true;
  }
  return n;
}

std::vector<TrainableTensor> ParamStore::trainable() const {
  std::vector<TrainableTensor> out;
  for (auto& e : entries_)
    if (e.trainable) out.push_back({e.name, e.value, e.decay});
  return out;
}

std::vector<HfTensor> ParamStore::export_tensors(bool only_trainable) const {
  std::vector<HfTensor> out;
  for (auto& e : entries_)
    if (!only_trainable || e.trainable) out.push_back({e.name, e.value.detach().to(e.orig_dtype)});
  return out;
}

void ParamStore::load(const std::string& name, const at::Tensor& value) {
  auto& e = entry(name);
  ESFT_CHECK(value.sizes() == e.value.sizes(), "weight {}: shape {} does not match the model's {}", name,
             fmt::format("{}", fmt::join(value.sizes(), "x")), fmt::format("{}", fmt::join(e.value.sizes(), "x")));
  at::NoGradGuard ng;
  e.value.copy_(value.to(e.value.device(), e.value.scalar_type()));
}

int64_t ParamStore::numel() const {
  int64_t n = 0;
  for (auto& e : entries_) n += e.value.numel();
  return n;
}

}  // namespace esft::nn
