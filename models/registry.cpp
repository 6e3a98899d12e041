// Model-family registry keyed by config.json `architectures[0]`.
#include <fmt/ranges.h>

#include <nlohmann/json.hpp>

#include "esft/error.h"
#include "esft/model.h"
#include "esft/nn/weight_source.h"
#include "esft/safetensors.h"

namespace esft {

namespace {
std::map<std::string, ModelFactory>& registry() {
  static std::map<std::string, ModelFactory> r;
  return r;
}
}  // namespace

ModelRegistrar::ModelRegistrar(const std::string& architecture, ModelFactory factory) {
  registry()[architecture] = std::move(factory);
}

std::vector<std::string> registered_architectures() {
  std::vector<std::string> out;
  for (auto& [k, v] : registry()) out.push_back(k);
  return out;
}

namespace {
const ModelFactory& family_of(const nlohmann::json& cfg, const std::string& where) {
  if (!cfg.contains("architectures") || !cfg["architectures"].is_array() || cfg["architectures"].empty() ||
      !cfg["architectures"][0].is_string())
    fail("{}: config.json has no \"architectures\" list; cannot tell the model family", where);
  std::string arch = cfg["architectures"][0].get<std::string>();
  auto it = registry().find(arch);
  if (it == registry().end())
    fail("{}: unsupported architecture \"{}\" (supported: {})", where, arch, fmt::join(registered_architectures(), ", "));
  return it->second;
}
}  // namespace

std::unique_ptr<MoeModel> load_model(const fs::path& dir, const LoadOptions& opt) {
  Checkpoint ckpt(dir);
  nn::CheckpointWeights src(ckpt);
  return family_of(ckpt.config(), src.config_where())(src, opt);
}

std::unique_ptr<MoeModel> build_random_model(const nlohmann::json& config, const LoadOptions& opt, uint64_t seed) {
  nn::RandomWeights src(config, "random weights", at::Device(opt.device), opt.dtype, seed);
  return family_of(config, src.config_where())(src, opt);
}

at::ScalarType parse_dtype_flag(const std::string& s) {
  if (s == "fp32" || s == "float32" || s == "float") return at::kFloat;
  if (s == "bf16" || s == "bfloat16") return at::kBFloat16;
  if (s == "fp16" || s == "float16" || s == "half") return at::kHalf;
  fail("unknown dtype \"{}\" (expected fp32, bf16 or fp16)", s);
}

}  // namespace esft
