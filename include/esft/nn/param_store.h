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

// Which switch of expert_config.json trains a weight.
enum class ParamGroup {
  NonExpert,     // "non_expert_modules": attention, norms, routers, dense MLPs, embeddings, lm_head
  SharedExpert,  // "shared_experts": shared experts and their gates
  Never,         // buffers that no switch trains (e.g. DeepSeek-V3's e_score_correction_bias)
};

class ParamStore {
 public:
  ParamStore(at::Device device, at::ScalarType dtype) : device_(device), dtype_(dtype) {}

  // keep_fp32: stored and returned in fp32 whatever the model dtype (HF _keep_in_fp32_modules).
  void add(const std::string& name, const at::Tensor& value, ParamGroup group = ParamGroup::NonExpert,
           bool keep_fp32 = false);
  bool has(const std::string& name) const { return index_.count(name) > 0; }
  // The weight in the compute dtype (fp32 for keep_fp32 weights), graph-connected to the master
  // copy when trainable.
  at::Tensor get(const std::string& name) const;
  // Same, or an undefined tensor when the model has no such weight (optional biases).
  at::Tensor get_opt(const std::string& name) const { return has(name) ? get(name) : at::Tensor(); }

  // Makes every weight of the group trainable; returns how many there were.
  size_t set_group_trainable(ParamGroup group);
  std::vector<TrainableTensor> trainable() const;
  std::vector<HfTensor> export_tensors(bool only_trainable) const;  // original dtype
  void load(const std::string& name, const at::Tensor& value);      // overwrite values in place
  int64_t numel() const;                                             // every weight's elements

  const at::Device& device() const { return device_; }
  at::ScalarType dtype() const { return dtype_; }

 private:
  struct Entry {
    std::string name;
    at::Tensor value;
    at::ScalarType orig_dtype;
    ParamGroup group;
    bool keep_fp32 = false;
    bool decay = true;  // weight decay applies when trained (not to norms and biases)
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
