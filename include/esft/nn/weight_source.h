// Where a family's weights come from: a Hugging Face checkpoint directory, or random values for
// a model built in memory (esft bench; no checkpoint on disk).
//
// Checkpoint: every tensor is checked against the shape the config implies, and every
// checkpoint tensor must be claimed by the family (a leftover means a wrong architecture, a
// wrong config or a corrupt checkpoint). Errors name directory and tensor.
//
// Block-FP8 checkpoints (DeepSeek-V3's official release, the -FP8 releases): a float8 tensor
// NAME with a sibling NAME_scale_inv [ceil(R/br), ceil(C/bc)] (blocks br x bc from
// quantization_config.weight_block_size, default 128 x 128) is taken dequantized,
// W = float(W8) * scale_inv[r / br, c / bc], computed in fp32 and rounded once to bf16, as
// DeepSeek's fp8_cast_bf16 and transformers' dequantize=True produce it; its dtype() is bf16, so
// adapters and full exports of such a checkpoint are written in bf16.
#pragma once
#include <ATen/ATen.h>

#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "esft/safetensors.h"

namespace esft::nn {

class WeightSource {
 public:
  virtual ~WeightSource() = default;
  virtual const nlohmann::json& config() const = 0;  // the parsed config.json
  virtual std::string config_where() const = 0;      // ".../config.json", for messages about it
  virtual std::string where() const = 0;             // the checkpoint, for messages about tensors
  virtual bool has(const std::string& name) const = 0;
  // The tensor, of exactly `shape`, in the checkpoint's dtype; on the CPU, or already where the
  // model wants it (random weights): callers move it with .to(device, dtype).
  virtual at::Tensor take(const std::string& name, const std::vector<int64_t>& shape) = 0;
  // Rows `rows` (indices into dim 0) of the tensor of `shape`, stacked in that order. The default
  // takes the whole tensor; a checkpoint reads only those rows out of its memory map.
  virtual at::Tensor take_rows(const std::string& name, const std::vector<int64_t>& shape, const std::vector<int64_t>& rows);
  virtual at::ScalarType dtype(const std::string& name) const = 0;
  // Marks tensors the family knowingly ignores (a tied lm_head, multi-token-prediction layers).
  virtual void ignore(const std::string& name) {}
  // Marks every tensor whose name starts with prefix (e.g. "model.layers.61." for an MTP layer).
  virtual void ignore_prefix(const std::string& prefix) {}
  // Fails naming the first tensor nobody took.
  virtual void check_all_used(const std::string& architecture) const {}
};

class CheckpointWeights final : public WeightSource {
 public:
  explicit CheckpointWeights(const Checkpoint& ckpt);
  const nlohmann::json& config() const override { return ckpt_.config(); }
  std::string config_where() const override;
  std::string where() const override;
  bool has(const std::string& name) const override { return ckpt_.has(name); }
  at::Tensor take(const std::string& name, const std::vector<int64_t>& shape) override;
  at::Tensor take_rows(const std::string& name, const std::vector<int64_t>& shape, const std::vector<int64_t>& rows) override;
  at::ScalarType dtype(const std::string& name) const override;
  void ignore(const std::string& name) override { used_.insert(name); }
  void ignore_prefix(const std::string& prefix) override;
  void check_all_used(const std::string& architecture) const override;

 private:
  bool is_block_fp8(const std::string& name) const;  // float8 with a NAME_scale_inv sibling
  // The tensor's header entry, after checking it exists with `shape`; marks it used.
  const TensorInfo& claim(const std::string& name, const std::vector<int64_t>& shape);
  const Checkpoint& ckpt_;
  std::set<std::string> used_;
  int64_t block_rows_ = 128, block_cols_ = 128;  // quantization_config.weight_block_size
};

// float(w8) * scale_inv expanded over blocks of block_rows x block_cols on the last two dims
// (the last blocks may be partial), in fp32. Fails naming `name` when the scale grid does not fit.
at::Tensor dequantize_block_fp8(const at::Tensor& w8, const at::Tensor& scale_inv, int64_t block_rows, int64_t block_cols,
                                const std::string& name);

// Random weights made on the model's device in its dtype: norms near 1, selection biases 0,
// everything else normal(0, std). Routed experts come in transformers 5's fused layout, or as
// MXFP4 blocks and scales (random bytes, scales near 2^-7: weights of std ~0.02) when the config's
// quantization_config says mxfp4 (GPT-OSS as released).
class RandomWeights final : public WeightSource {
 public:
  RandomWeights(nlohmann::json config, std::string name, at::Device device, at::ScalarType dtype, uint64_t seed,
                double std = 0.02);
  const nlohmann::json& config() const override { return config_; }
  std::string config_where() const override { return name_ + " config"; }
  std::string where() const override { return name_; }
  bool has(const std::string& name) const override;
  at::Tensor take(const std::string& name, const std::vector<int64_t>& shape) override;
  at::ScalarType dtype(const std::string& name) const override;

 private:
  nlohmann::json config_;
  std::string name_;
  at::Device device_;
  at::ScalarType dtype_;
  at::Generator gen_;
  double std_;
  bool mxfp4_ = false;
};

}  // namespace esft::nn
