#include "esft/nn/weight_source.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Context.h>
#include <fmt/ranges.h>

#include "esft/error.h"
#include "esft/tensor_io.h"

namespace esft::nn {

std::string CheckpointWeights::config_where() const { return (ckpt_.dir() / "config.json").string(); }
std::string CheckpointWeights::where() const { return ckpt_.dir().string(); }

at::Tensor CheckpointWeights::take(const std::string& name, const std::vector<int64_t>& shape) {
  if (!ckpt_.has(name)) fail("{}: tensor {} is missing from the checkpoint", where(), name);
  const auto& info = ckpt_.info(name);
  if (info.shape != shape)
    fail("{}: tensor {} has shape [{}], expected [{}] from config.json", where(), name, fmt::join(info.shape, ", "),
         fmt::join(shape, ", "));
  used_.insert(name);
  return load_tensor(ckpt_, name);
}

at::Tensor WeightSource::take_rows(const std::string& name, const std::vector<int64_t>& shape,
                                   const std::vector<int64_t>& rows) {
  auto all = take(name, shape);
  return all.index_select(0, at::tensor(rows, at::kLong).to(all.device()));
}

at::Tensor CheckpointWeights::take_rows(const std::string& name, const std::vector<int64_t>& shape,
                                        const std::vector<int64_t>& rows) {
  if (!ckpt_.has(name)) fail("{}: tensor {} is missing from the checkpoint", where(), name);
  const auto& info = ckpt_.info(name);
  if (info.shape != shape)
    fail("{}: tensor {} has shape [{}], expected [{}] from config.json", where(), name, fmt::join(info.shape, ", "),
         fmt::join(shape, ", "));
  used_.insert(name);
  auto out_shape = shape;
  out_shape[0] = int64_t(rows.size());
  auto t = at::empty(out_shape, at::TensorOptions().dtype(to_scalar_type(info.dtype)));
  const size_t row_bytes = shape[0] ? info.nbytes / size_t(shape[0]) : 0;
  const uint8_t* base = ckpt_.data(name);
  auto* dst = static_cast<uint8_t*>(t.data_ptr());
  for (size_t r = 0; r < rows.size(); ++r) {
    ESFT_CHECK(rows[r] >= 0 && rows[r] < shape[0], "{}: row {} of {} out of range", where(), rows[r], name);
    std::memcpy(dst + r * row_bytes, base + size_t(rows[r]) * row_bytes, row_bytes);
  }
  return t;
}

at::ScalarType CheckpointWeights::dtype(const std::string& name) const { return to_scalar_type(ckpt_.info(name).dtype); }

void CheckpointWeights::check_all_used(const std::string& arch) const {
  for (auto& n : ckpt_.names())
    if (!used_.count(n))
      fail("{}: tensor {} is not part of a {} with this config.json (wrong architecture or corrupt checkpoint?)", where(),
           n, arch);
}

RandomWeights::RandomWeights(nlohmann::json config, std::string name, at::Device device, at::ScalarType dtype,
                             uint64_t seed, double std)
    : config_(std::move(config)), name_(std::move(name)), device_(device), dtype_(dtype), std_(std) {
  gen_ = device.is_cuda() ? at::globalContext().defaultGenerator(device) : at::make_generator<at::CPUGeneratorImpl>(seed);
  if (device.is_cuda()) {
    std::lock_guard<std::mutex> lock(gen_.mutex());
    gen_.set_current_seed(seed);
  }
}

bool RandomWeights::has(const std::string& name) const {
  auto ends = [&](const std::string& s) { return name.size() >= s.size() && name.compare(name.size() - s.size(), s.size(), s) == 0; };
  return ends(".experts.gate_up_proj") || ends(".experts.down_proj");
}

at::Tensor RandomWeights::take(const std::string& name, const std::vector<int64_t>& shape) {
  auto opts = at::TensorOptions().dtype(dtype_).device(device_);
  if (name.find("e_score_correction_bias") != std::string::npos) return at::zeros(shape, opts.dtype(at::kFloat));
  if (name.find("norm") != std::string::npos) return at::ones(shape, opts);
  return at::normal(0.0, std_, shape, gen_, opts);
}

}  // namespace esft::nn
