#include "gpt_oss_experts.h"

#include <fmt/format.h>

#include "esft/error.h"
#include "esft/nn/packed_experts.h"
#include "esft/nn/weight_source.h"

namespace esft::nn {

namespace {
const char* const kParts[] = {"gate_up_proj", "gate_up_proj_bias", "down_proj", "down_proj_bias"};

// [..., 2I, X] rows (gate rows, then up rows) -> HF's interleaved order (gate 0, up 0, gate 1, ...).
at::Tensor interleave_rows(const at::Tensor& t, int64_t dim) {
  auto shape = t.sizes().vec();
  const int64_t I = shape[dim] / 2;
  auto split = shape;
  split[dim] = I;
  split.insert(split.begin() + dim, 2);  // [..., 2, I, X]
  return t.reshape(split).transpose(dim, dim + 1).reshape(shape);
}
}  // namespace

GptOssExpertCodec::GptOssExpertCodec(std::string prefix, ExpertsSpec spec) : prefix_(std::move(prefix)), spec_(spec) {
  ESFT_CHECK(spec_.bias && spec_.activation == ExpertActivation::ClampedSwiGLU, "{}: GPT-OSS experts have biases and a "
             "clamped SwiGLU", prefix_);
  const int64_t I = spec_.inter;
  deinterleave_ = at::cat({at::arange(0, 2 * I, 2, at::kLong), at::arange(1, 2 * I, 2, at::kLong)});
}

ExpertWeights GptOssExpertCodec::load(WeightSource& src, const at::Device& dev, at::ScalarType dtype,
                                      at::ScalarType* orig) {
  const int64_t E = spec_.n_experts, I = spec_.inter, H = spec_.hidden;
  const std::string p = prefix_ + ".";
  ExpertWeights w;
  bias_dtype_ = src.dtype(p + "gate_up_proj_bias");
  // (a random source makes tensors on the device already: the index goes where the tensor is)
  auto deinterleave = [&](const at::Tensor& t) { return t.index_select(1, deinterleave_.to(t.device())); };
  w.gate_up_bias = deinterleave(src.take(p + "gate_up_proj_bias", {E, 2 * I})).to(dev, dtype);
  w.down_bias = src.take(p + "down_proj_bias", {E, H}).to(dev, dtype);
  if (src.has(p + "gate_up_proj_blocks")) {
    ESFT_CHECK(H % 32 == 0 && I % 32 == 0, "{}: MXFP4 experts need hidden_size ({}) and intermediate_size ({}) to be "
               "multiples of 32", src.where(), H, I);
    for (auto* name : {"gate_up_proj_blocks", "gate_up_proj_scales", "down_proj_blocks", "down_proj_scales"})
      ESFT_CHECK(src.dtype(p + name) == at::kByte, "{}: {} is {}, MXFP4 tensors are uint8", src.where(), p + name,
                 at::toString(src.dtype(p + name)));
    // Rows are independent in MXFP4 (blocks run along the input dimension): de-interleave them packed.
    auto gub = src.take(p + "gate_up_proj_blocks", {E, 2 * I, H / 32, 16});
    auto gus = src.take(p + "gate_up_proj_scales", {E, 2 * I, H / 32});
    auto dnb = src.take(p + "down_proj_blocks", {E, H, I / 32, 16});
    auto dns = src.take(p + "down_proj_scales", {E, H, I / 32});
    w.packed = std::make_shared<Mxfp4Experts>(deinterleave(gub).to(dev), deinterleave(gus).to(dev), dnb.to(dev),
                                              dns.to(dev), dtype);
    *orig = at::kBFloat16;  // transformers dequantizes MXFP4 to bf16, which holds every value exactly
    return w;
  }
  *orig = src.dtype(p + "gate_up_proj");
  w.gate_up = deinterleave(src.take(p + "gate_up_proj", {E, H, 2 * I}).transpose(1, 2)).to(dev, dtype);
  w.down = src.take(p + "down_proj", {E, I, H}).transpose(1, 2).to(dev, dtype).contiguous();
  return w;
}

std::vector<at::Tensor> GptOssExpertCodec::to_hf(const ExpertWeights& x, at::ScalarType dtype) const {
  auto cpu = [&](const at::Tensor& t, at::ScalarType dt) { return t.detach().to(at::kCPU, dt); };
  return {interleave_rows(cpu(x.gate_up, dtype), 0).t().contiguous(),
          interleave_rows(cpu(x.gate_up_bias, bias_dtype_), 0).contiguous(), cpu(x.down, dtype).t().contiguous(),
          cpu(x.down_bias, bias_dtype_).contiguous()};
}

std::vector<HfTensor> GptOssExpertCodec::export_all(const ExpertBanks& banks) const {
  std::vector<std::vector<at::Tensor>> parts(4);
  for (int64_t e = 0; e < spec_.n_experts; ++e) {
    auto hf = to_hf(banks.expert(e), banks.orig_dtype());
    for (size_t k = 0; k < 4; ++k) parts[k].push_back(hf[k]);
  }
  std::vector<HfTensor> out;
  for (size_t k = 0; k < 4; ++k) out.push_back({prefix_ + "." + kParts[k], at::stack(parts[k])});
  return out;
}

std::vector<HfTensor> GptOssExpertCodec::export_experts(const ExpertBanks& banks, const std::vector<int64_t>& ids) const {
  std::vector<HfTensor> out;
  for (auto e : ids) {
    auto hf = to_hf(banks.expert(e), banks.orig_dtype());
    for (size_t k = 0; k < 4; ++k) out.push_back({fmt::format("{}.{}.{}", prefix_, e, kParts[k]), hf[k]});
  }
  return out;
}

bool GptOssExpertCodec::parse_adapter_name(const std::string& n, int64_t* e, std::string* part) const {
  const std::string head = prefix_ + ".";
  if (n.compare(0, head.size(), head) != 0) return false;
  size_t p = head.size(), q = p;
  while (q < n.size() && std::isdigit(static_cast<unsigned char>(n[q]))) ++q;
  if (q == p || q >= n.size() || n[q] != '.' || q - p > 9) return false;
  *e = std::stoll(n.substr(p, q - p));
  const std::string rest = n.substr(q + 1);
  for (auto* k : kParts)
    if (rest == k) {
      *part = k;
      return *e < spec_.n_experts;
    }
  return false;
}

ExpertWeights GptOssExpertCodec::from_adapter(int64_t e, const std::map<std::string, at::Tensor>& parts) const {
  const int64_t I = spec_.inter, H = spec_.hidden;
  const std::vector<std::vector<int64_t>> shapes = {{H, 2 * I}, {2 * I}, {I, H}, {H}};
  for (size_t k = 0; k < 4; ++k) {
    auto name = fmt::format("{}.{}.{}", prefix_, e, kParts[k]);
    auto it = parts.find(kParts[k]);
    if (it == parts.end()) fail("the adapter holds only part of {}.{} ({} is missing)", prefix_, e, name);
    ESFT_CHECK(it->second.sizes() == at::IntArrayRef(shapes[k]), "adapter tensor {} has shape {}, the model's is {}", name,
               it->second.sizes(), at::IntArrayRef(shapes[k]));
  }
  const auto& gu = parts.at("gate_up_proj");
  auto idx = deinterleave_.to(gu.device());
  return {gu.t().index_select(0, idx), parts.at("down_proj").t().contiguous(),
          parts.at("gate_up_proj_bias").index_select(0, idx), parts.at("down_proj_bias")};
}

}  // namespace esft::nn
