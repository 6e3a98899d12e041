#include "esft/nn/weight_source.h"

#include <fmt/ranges.h>

#include "esft/error.h"
#include "esft/tensor_io.h"

namespace esft::nn {

std::string WeightSource::where() const { return ckpt_.dir().string(); }

at::Tensor WeightSource::take(const std::string& name, const std::vector<int64_t>& shape) {
  if (!ckpt_.has(name)) fail("{}: tensor {} is missing from the checkpoint", where(), name);
  const auto& info = ckpt_.info(name);
  if (info.shape != shape)
    fail("{}: tensor {} has shape [{}], expected [{}] from config.json", where(), name, fmt::join(info.shape, ", "),
         fmt::join(shape, ", "));
  used_.insert(name);
  return load_tensor(ckpt_, name);
}

at::ScalarType WeightSource::dtype(const std::string& name) const { return to_scalar_type(ckpt_.info(name).dtype); }

void WeightSource::check_all_used(const std::string& arch) const {
  for (auto& n : ckpt_.names())
    if (!used_.count(n))
      fail("{}: tensor {} is not part of a {} with this config.json (wrong architecture or corrupt checkpoint?)", where(),
           n, arch);
}

}  // namespace esft::nn
