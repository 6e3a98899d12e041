// Bridges between safetensors bytes and at::Tensor.
#pragma once
#include <ATen/ATen.h>

#include <map>
#include <string>
#include <vector>

#include "esft/model.h"
#include "esft/safetensors.h"

namespace esft {

at::ScalarType to_scalar_type(DType d);  // throws on dtypes torch lacks
DType from_scalar_type(at::ScalarType t);

// Copies a tensor out of a mapped file (the map may go away afterwards).
at::Tensor load_tensor(const SafetensorsFile& f, const TensorInfo& info);
at::Tensor load_tensor(const Checkpoint& ckpt, const std::string& name);

std::map<std::string, at::Tensor> load_safetensors(const fs::path& path);

// Writes tensors (moved to CPU, made contiguous) to one file / a checkpoint directory.
void save_safetensors(const fs::path& path, const std::vector<HfTensor>& tensors,
                      const std::map<std::string, std::string>& metadata = {{"format", "pt"}});
void save_checkpoint_tensors(const fs::path& dir, const std::vector<HfTensor>& tensors,
                             size_t max_shard_bytes = size_t(5) << 30);

}  // namespace esft
