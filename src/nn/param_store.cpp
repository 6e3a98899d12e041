#include "esft/nn/param_store.h"

#include <fmt/ranges.h>

#include "esft/error.h"

namespace esft::nn {

void ParamStore::add(const std::string& name, const at::Tensor& value, bool decay) {
  ESFT_CHECK(!has(name), "duplicate weight {}", name);
  index_[name] = entries_.size();
  entries_.push_back({name, value.to(device_, dtype_).contiguous(), value.scalar_type(), decay, false});
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
  return e.value.scalar_type() == dtype_ ? e.value : e.value.to(dtype_);
}

void ParamStore::set_trainable(const std::string& name) {
  auto& e = entry(name);
  if (e.trainable) return;
  e.value = e.value.to(at::kFloat).clone().detach().set_requires_grad(true);
  e.trainable = true;
}

void ParamStore::set_all_trainable(const std::vector<std::string>& prefixes) {
  for (auto& e : entries_)
    for (auto& p : prefixes)
      if (e.name.rfind(p, 0) == 0) {
        set_trainable(e.name);
        break;
      }
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

std::vector<std::string> ParamStore::names() const {
  std::vector<std::string> out;
  for (auto& e : entries_) out.push_back(e.name);
  return out;
}

}  // namespace esft::nn
