#include "esft/nn/weight_source.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Context.h>
#include <fmt/ranges.h>

#include "esft/error.h"
#include "esft/tensor_io.h"

namespace esft::nn {

namespace {
bool is_fp8(DType d) { return d == DType::F8_E4M3 || d == DType::F8_E5M2; }
}  // namespace

CheckpointWeights::CheckpointWeights(const Checkpoint& ckpt) : ckpt_(ckpt) {
  const auto& cfg = ckpt_.config();
  if (!cfg.contains("quantization_config") || !cfg["quantization_config"].is_object()) return;
  const auto& q = cfg["quantization_config"];
  if (!q.contains("weight_block_size") || q["weight_block_size"].is_null()) return;
  const auto& b = q["weight_block_size"];
  if (!b.is_array() || b.size() != 2 || !b[0].is_number_integer() || !b[1].is_number_integer() || b[0].get<int64_t>() < 1 ||
      b[1].get<int64_t>() < 1)
    fail("{}: quantization_config.weight_block_size must be two positive integers, not {}", config_where(), b.dump());
  block_rows_ = b[0].get<int64_t>(), block_cols_ = b[1].get<int64_t>();
}

std::string CheckpointWeights::config_where() const { return (ckpt_.dir() / "config.json").string(); }
std::string CheckpointWeights::where() const { return ckpt_.dir().string(); }

bool CheckpointWeights::is_block_fp8(const std::string& name) const {
  return is_fp8(ckpt_.info(name).dtype) && ckpt_.has(name + "_scale_inv");
}

const TensorInfo& CheckpointWeights::claim(const std::string& name, const std::vector<int64_t>& shape) {
  if (!ckpt_.has(name)) fail("{}: tensor {} is missing from the checkpoint", where(), name);
  const auto& info = ckpt_.info(name);
  if (info.shape != shape)
    fail("{}: tensor {} has shape [{}], expected [{}] from config.json", where(), name, fmt::join(info.shape, ", "),
         fmt::join(shape, ", "));
  used_.insert(name);
  return info;
}

at::Tensor CheckpointWeights::take(const std::string& name, const std::vector<int64_t>& shape) {
  const auto& info = claim(name, shape);
  if (is_block_fp8(name)) {
    used_.insert(name + "_scale_inv");
    return dequantize_block_fp8(load_tensor(ckpt_, name), load_tensor(ckpt_, name + "_scale_inv"), block_rows_,
                                block_cols_, where() + ": " + name)
        .to(at::kBFloat16);
  }
  if (is_fp8(info.dtype))
    fail("{}: tensor {} is {} without a {}_scale_inv beside it (esft reads block-FP8 checkpoints only)", where(), name,
         dtype_name(info.dtype), name);
  return load_tensor(ckpt_, name);
}

at::ScalarType CheckpointWeights::dtype(const std::string& name) const {
  return is_block_fp8(name) ? at::kBFloat16 : to_scalar_type(ckpt_.info(name).dtype);
}

void CheckpointWeights::ignore_prefix(const std::string& prefix) {
  for (auto& n : ckpt_.names())
    if (n.compare(0, prefix.size(), prefix) == 0) used_.insert(n);
}

at::Tensor dequantize_block_fp8(const at::Tensor& w8, const at::Tensor& scale_inv, int64_t br, int64_t bc,
                                const std::string& name) {
  ESFT_CHECK(w8.dim() >= 2, "{}: a block-FP8 weight must have at least two dimensions", name);
  const int64_t R = w8.size(-2), C = w8.size(-1);
  auto grid = w8.sizes().vec();
  grid[grid.size() - 2] = (R + br - 1) / br;
  grid[grid.size() - 1] = (C + bc - 1) / bc;
  if (scale_inv.sizes().vec() != grid)
    fail("{}_scale_inv has shape [{}], expected [{}] for a [{}] weight in {}x{} blocks", name,
         fmt::join(scale_inv.sizes(), ", "), fmt::join(grid, ", "), fmt::join(w8.sizes(), ", "), br, bc);
  auto s = scale_inv.to(at::kFloat).repeat_interleave(br, -2).repeat_interleave(bc, -1);
  return w8.to(at::kFloat) * s.narrow(-2, 0, R).narrow(-1, 0, C);
}

at::Tensor WeightSource::take_rows(const std::string& name, const std::vector<int64_t>& shape,
                                   const std::vector<int64_t>& rows) {
  auto all = take(name, shape);
  return all.index_select(0, at::tensor(rows, at::kLong).to(all.device()));
}

at::Tensor CheckpointWeights::take_rows(const std::string& name, const std::vector<int64_t>& shape,
                                        const std::vector<int64_t>& rows) {
  if (ckpt_.has(name) && is_fp8(ckpt_.info(name).dtype)) return WeightSource::take_rows(name, shape, rows);  // dequantized whole
  const auto& info = claim(name, shape);
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


void CheckpointWeights::check_all_used(const std::string& arch) const {
  for (auto& n : ckpt_.names())
    if (!used_.count(n))
      fail("{}: tensor {} is not part of a {} with this config.json (wrong architecture or corrupt checkpoint?)", where(),
           n, arch);
}

RandomWeights::RandomWeights(nlohmann::json config, std::string name, at::Device device, at::ScalarType dtype,
                             uint64_t seed, double std)
    : config_(std::move(config)), name_(std::move(name)), device_(device), dtype_(dtype), std_(std) {
  if (device_.is_cuda() && !device_.has_index()) device_ = at::Device(at::kCUDA, 0);  // generators need an index
  gen_ = device_.is_cuda() ? at::globalContext().defaultGenerator(device_) : at::make_generator<at::CPUGeneratorImpl>(seed);
  if (device_.is_cuda()) {
    std::lock_guard<std::mutex> lock(gen_.mutex());
    gen_.set_current_seed(seed);
  }
  const auto& q = config_.contains("quantization_config") ? config_["quantization_config"] : nlohmann::json();
  mxfp4_ = q.is_object() && q.value("quant_method", "") == "mxfp4";
}

namespace {
bool ends_with(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}
bool is_mxfp4_part(const std::string& name) { return ends_with(name, "_blocks") || ends_with(name, "_scales"); }
}  // namespace

bool RandomWeights::has(const std::string& name) const {
  for (auto* proj : {".experts.gate_up_proj", ".experts.down_proj"}) {
    if (!mxfp4_ && ends_with(name, proj)) return true;
    if (mxfp4_ && (ends_with(name, std::string(proj) + "_blocks") || ends_with(name, std::string(proj) + "_scales")))
      return true;
  }
  return false;
}

at::ScalarType RandomWeights::dtype(const std::string& name) const {
  return mxfp4_ && is_mxfp4_part(name) ? at::kByte : dtype_;
}

at::Tensor RandomWeights::take(const std::string& name, const std::vector<int64_t>& shape) {
  auto opts = at::TensorOptions().dtype(dtype_).device(device_);
  if (mxfp4_ && is_mxfp4_part(name))  // any FP4 nibbles; E8M0 scales 2^-8..2^-6
    return ends_with(name, "_blocks") ? at::randint(0, 256, shape, gen_, opts.dtype(at::kByte))
                                      : at::randint(119, 122, shape, gen_, opts.dtype(at::kByte));
  if (name.find("e_score_correction_bias") != std::string::npos) return at::zeros(shape, opts.dtype(at::kFloat));
  if (name.find("norm") != std::string::npos) return at::ones(shape, opts);
  return at::normal(0.0, std_, shape, gen_, opts);
}

}  // namespace esft::nn
