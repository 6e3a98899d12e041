// Named weights of a model outside the routed-expert banks, under their HF names.
// Frozen weights are stored in the model dtype and never require grad. Trainable ones are held
// as fp32 master copies (leaf tensors with requires_grad) and cast to the compute dtype at use,
// which is what bf16 autocast amounts to for these layers.
#pragma once
#include <ATen/ATen.h>

#include <map>
#include <string>
#include <vector>

#include "esft/model.h"

namespace esft::nn {

class ParamStore {
 public:
  ParamStore(at::Device device, at::ScalarType dtype) : device_(device), dtype_(dtype) {}

  // decay: whether weight decay applies when trained (false for norms and biases).
  void add(const std::string& name, const at::Tensor& value, bool decay);
  bool has(const std::string& name) const { return index_.count(name) > 0; }
  // The weight in the compute dtype (graph-connected to the master copy when trainable).
  at::Tensor get(const std::string& name) const;
  // Same, or an undefined tensor when the model has no such weight (optional biases).
  at::Tensor get_opt(const std::string& name) const { return has(name) ? get(name) : at::Tensor(); }

  void set_trainable(const std::string& name);
  void set_all_trainable(const std::vector<std::string>& prefixes);  // names starting with any prefix
  std::vector<TrainableTensor> trainable() const;
  std::vector<HfTensor> export_tensors(bool only_trainable) const;  // original dtype
  void load(const std::string& name, const at::Tensor& value);      // overwrite values in place
  std::vector<std::string> names() const;

  const at::Device& device() const { return device_; }
  at::ScalarType dtype() const { return dtype_; }

 private:
  struct Entry {
    std::string name;
    at::Tensor value;
    at::ScalarType orig_dtype;
    bool decay = true;
    bool trainable = false;
  };
  Entry& entry(const std::string& name);
  const Entry& entry(const std::string& name) const;
  at::Device device_;
  at::ScalarType dtype_;
  std::vector<Entry> entries_;
  std::map<std::string, size_t> index_;
};

}  // namespace esft::nn
