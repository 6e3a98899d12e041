// Reading a family's weights out of a checkpoint: every tensor is checked against the shape the
// config implies, and every checkpoint tensor must be claimed by the family (a leftover means a
// wrong architecture, a wrong config or a corrupt checkpoint). Errors name directory and tensor.
#pragma once
#include <ATen/ATen.h>

#include <set>
#include <string>
#include <vector>

#include "esft/safetensors.h"

namespace esft::nn {

class WeightSource {
 public:
  explicit WeightSource(const Checkpoint& ckpt) : ckpt_(ckpt) {}
  const Checkpoint& checkpoint() const { return ckpt_; }
  std::string where() const;  // the checkpoint directory, for messages
  bool has(const std::string& name) const { return ckpt_.has(name); }
  // The tensor on the CPU in its checkpoint dtype; its shape must be `shape`.
  at::Tensor take(const std::string& name, const std::vector<int64_t>& shape);
  at::ScalarType dtype(const std::string& name) const;
  // Marks tensors the family knowingly ignores (e.g. a tied lm_head, multi-token-prediction layers).
  void ignore(const std::string& name) { used_.insert(name); }
  // Fails naming the first checkpoint tensor nobody took.
  void check_all_used(const std::string& architecture) const;

 private:
  const Checkpoint& ckpt_;
  std::set<std::string> used_;
};

}  // namespace esft::nn
