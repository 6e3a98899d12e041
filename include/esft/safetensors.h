// Safetensors reading (memory-mapped, validated) and writing (atomic, 8-byte padded header),
// plus Hugging Face checkpoint directories: config.json with a single model.safetensors or
// shards listed in model.safetensors.index.json. Torch-free: tensors are raw bytes here;
// src/nn/tensor_io.cpp turns them into at::Tensor.
#pragma once
#include <nlohmann/json.hpp>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "esft/fs.h"

namespace esft {

enum class DType { BOOL, U8, I8, I16, I32, I64, F16, BF16, F32, F64, F8_E4M3, F8_E5M2 };

const char* dtype_name(DType d);         // "BF16", ... as written in safetensors headers
bool parse_dtype(const std::string& s, DType* out);
size_t dtype_size(DType d);

struct TensorInfo {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  size_t offset = 0;  // byte offset from the start of the data section
  size_t nbytes = 0;
  int64_t numel() const;
};

// One .safetensors file, memory-mapped. The constructor validates the whole header: its length,
// JSON, dtypes, shapes, that every tensor's [begin,end) lies inside the file, matches
// numel*dtype_size and overlaps no other tensor. Errors name the file and the tensor.
class SafetensorsFile {
 public:
  explicit SafetensorsFile(const fs::path& path);
  const fs::path& path() const { return map_.path(); }
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const TensorInfo* find(const std::string& name) const;  // nullptr if absent
  const TensorInfo& at(const std::string& name) const;    // throws naming file and tensor
  const uint8_t* data(const TensorInfo& t) const { return map_.data() + data_start_ + t.offset; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

 private:
  MappedFile map_;
  size_t data_start_ = 0;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, size_t> index_;
  std::map<std::string, std::string> metadata_;
};

// A Hugging Face checkpoint directory.
class Checkpoint {
 public:
  explicit Checkpoint(const fs::path& dir);
  const fs::path& dir() const { return dir_; }
  const nlohmann::json& config() const { return config_; }  // parsed config.json
  std::vector<std::string> names() const;                    // every tensor name, sorted
  bool has(const std::string& name) const;
  const TensorInfo& info(const std::string& name) const;     // throws naming dir and tensor
  const uint8_t* data(const std::string& name) const;
  const SafetensorsFile& file_of(const std::string& name) const;

 private:
  fs::path dir_;
  nlohmann::json config_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, size_t> where_;  // tensor name -> index into files_
};

struct TensorToWrite {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  const void* data;  // contiguous, numel*dtype_size bytes, host memory
};

// Writes one file atomically (temporary name, then rename). Tensors are laid out in the given
// order; the header is padded with spaces to a multiple of 8 bytes.
void write_safetensors(const fs::path& path, const std::vector<TensorToWrite>& tensors,
                       const std::map<std::string, std::string>& metadata = {{"format", "pt"}});

// Writes model.safetensors, or model-0000i-of-0000n.safetensors shards plus
// model.safetensors.index.json when the total exceeds max_shard_bytes, into dir.
void write_checkpoint_tensors(const fs::path& dir, const std::vector<TensorToWrite>& tensors,
                              size_t max_shard_bytes = size_t(5) << 30);

}  // namespace esft
