#include "esft/tensor_io.h"

#include "esft/error.h"

namespace esft {

at::ScalarType to_scalar_type(DType d) {
  switch (d) {
    case DType::BOOL: return at::kBool;
    case DType::U8: return at::kByte;
    case DType::I8: return at::kChar;
    case DType::I16: return at::kShort;
    case DType::I32: return at::kInt;
    case DType::I64: return at::kLong;
    case DType::F16: return at::kHalf;
    case DType::BF16: return at::kBFloat16;
    case DType::F32: return at::kFloat;
    case DType::F64: return at::kDouble;
    case DType::F8_E4M3: return at::kFloat8_e4m3fn;
    case DType::F8_E5M2: return at::kFloat8_e5m2;
  }
  fail("unknown dtype");
}

DType from_scalar_type(at::ScalarType t) {
  switch (t) {
    case at::kBool: return DType::BOOL;
    case at::kByte: return DType::U8;
    case at::kChar: return DType::I8;
    case at::kShort: return DType::I16;
    case at::kInt: return DType::I32;
    case at::kLong: return DType::I64;
    case at::kHalf: return DType::F16;
    case at::kBFloat16: return DType::BF16;
    case at::kFloat: return DType::F32;
    case at::kDouble: return DType::F64;
    case at::kFloat8_e4m3fn: return DType::F8_E4M3;
    case at::kFloat8_e5m2: return DType::F8_E5M2;
    default: fail("dtype {} cannot be stored in safetensors", at::toString(t));
  }
}

at::Tensor load_tensor(const SafetensorsFile& f, const TensorInfo& info) {
  auto t = at::empty(info.shape, at::TensorOptions().dtype(to_scalar_type(info.dtype)));
  if (info.nbytes) std::memcpy(t.data_ptr(), f.data(info), info.nbytes);
  return t;
}

at::Tensor load_tensor(const Checkpoint& ckpt, const std::string& name) {
  const auto& f = ckpt.file_of(name);
  return load_tensor(f, f.at(name));
}

std::map<std::string, at::Tensor> load_safetensors(const fs::path& path) {
  SafetensorsFile f(path);
  std::map<std::string, at::Tensor> out;
  for (auto& t : f.tensors()) out[t.name] = load_tensor(f, t);
  return out;
}

namespace {
std::vector<TensorToWrite> to_write(const std::vector<HfTensor>& tensors, std::vector<at::Tensor>& keep) {
  std::vector<TensorToWrite> out;
  for (auto& t : tensors) {
    keep.push_back(t.tensor.detach().to(at::kCPU).contiguous());
    auto& c = keep.back();
    out.push_back({t.name, from_scalar_type(c.scalar_type()), c.sizes().vec(), c.data_ptr()});
  }
  return out;
}
}  // namespace

void save_safetensors(const fs::path& path, const std::vector<HfTensor>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  std::vector<at::Tensor> keep;
  write_safetensors(path, to_write(tensors, keep), metadata);
}

void save_checkpoint_tensors(const fs::path& dir, const std::vector<HfTensor>& tensors, size_t max_shard_bytes) {
  std::vector<at::Tensor> keep;
  write_checkpoint_tensors(dir, to_write(tensors, keep), max_shard_bytes);
}

}  // namespace esft
