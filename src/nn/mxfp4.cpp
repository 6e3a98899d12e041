// MXFP4 dequantisation and the MXFP4 packed expert storage (packed_experts.h).
#include <cmath>
#include <mutex>

#include "esft/error.h"
#include "esft/nn/packed_experts.h"

namespace esft::nn {

namespace {

// E2M1 by nibble (bit 3 sign, bits 2..1 exponent, bit 0 mantissa): transformers' FP4_VALUES.
constexpr float kFp4[16] = {+0.0f, +0.5f, +1.0f, +1.5f, +2.0f, +3.0f, +4.0f, +6.0f,
                            -0.0f, -0.5f, -1.0f, -1.5f, -2.0f, -3.0f, -4.0f, -6.0f};

// transformers scales with torch.ldexp(v, s - 127), which rounds the exact product v * 2^(s-127)
// once: 0 stays 0 and 0.5 * 2^128 is 2^127 even though 2^128 itself overflows. Both factors
// here are exact instead: byte -> (2 * low-nibble value, 2 * high-nibble value) [256, 2] and
// E8M0 byte s -> 2^(s-128) [256] (from 2^-128, a subnormal, to 2^127). One multiplication then
// rounds the exact product once, as ldexp does.
struct Tables {
  at::Tensor pairs, scales;
};

const Tables& tables(const at::Device& device, at::ScalarType dtype) {
  static std::mutex mu;
  static std::map<std::pair<std::string, at::ScalarType>, Tables> cache;
  std::lock_guard<std::mutex> lock(mu);
  auto key = std::make_pair(device.str(), dtype);
  auto it = cache.find(key);
  if (it != cache.end()) return it->second;
  std::vector<float> pairs(512), scales(256);
  for (int b = 0; b < 256; ++b) pairs[2 * b] = 2 * kFp4[b & 0x0F], pairs[2 * b + 1] = 2 * kFp4[b >> 4];
  for (int s = 0; s < 256; ++s) scales[s] = std::ldexp(1.0f, s - 128);
  auto to = [&](std::vector<float>& v, std::vector<int64_t> shape) {
    // clone: from_blob borrows v, and to() returns the same tensor when nothing changes
    return at::from_blob(v.data(), shape, at::kFloat).clone().to(device, dtype);  // exact values
  };
  return cache.emplace(key, Tables{to(pairs, {256, 2}), to(scales, {256})}).first->second;
}

}  // namespace

at::Tensor mxfp4_dequantize(const at::Tensor& blocks, const at::Tensor& scales, at::ScalarType dtype) {
  ESFT_CHECK(blocks.scalar_type() == at::kByte && scales.scalar_type() == at::kByte,
             "MXFP4: blocks and scales must be uint8, not {} and {}", at::toString(blocks.scalar_type()),
             at::toString(scales.scalar_type()));
  ESFT_CHECK(blocks.dim() >= 2 && blocks.size(-1) == 16 && scales.sizes() == blocks.sizes().slice(0, blocks.dim() - 1),
             "MXFP4: blocks {} and scales {} do not match ([..., G, 16] and [..., G])", blocks.sizes(), scales.sizes());
  // Twice an FP4 value times 2^(s-128) is exact in fp32 unless it overflows (inf, as ldexp), and
  // fp32 and bf16 share the exponent range: multiplying in those dtypes rounds once. Other dtypes
  // (fp16: narrower range) multiply in fp32 and round once to the dtype.
  const bool direct = dtype == at::kFloat || dtype == at::kBFloat16;
  const auto& t = tables(blocks.device(), direct ? dtype : at::kFloat);
  const int64_t rows = scales.numel();
  auto b = blocks.reshape({rows, 16}), s = scales.reshape({rows});
  auto out = at::empty({rows, 32}, blocks.options().dtype(dtype));
  // 32-value blocks per pass: bounds the index temporaries (4 bytes per packed byte) and, on the
  // GPU, keeps the number of kernel launches small.
  const int64_t chunk = int64_t(1) << (blocks.is_cuda() ? 22 : 20);
  for (int64_t r0 = 0; r0 < rows; r0 += chunk) {
    const int64_t n = std::min(chunk, rows - r0);
    auto vals = t.pairs.index_select(0, b.narrow(0, r0, n).reshape({-1}).to(at::kInt)).view({n, 32});
    auto scale = t.scales.index_select(0, s.narrow(0, r0, n).to(at::kInt)).view({n, 1});
    auto dst = out.narrow(0, r0, n);
    if (direct) at::mul_out(dst, vals, scale);
    else dst.copy_(vals * scale);
  }
  auto shape = scales.sizes().vec();
  shape.back() *= 32;
  return out.view(shape);
}

Mxfp4Experts::Mxfp4Experts(at::Tensor gub, at::Tensor gus, at::Tensor dnb, at::Tensor dns, at::ScalarType dtype)
    : gu_blocks_(std::move(gub)), gu_scales_(std::move(gus)), dn_blocks_(std::move(dnb)), dn_scales_(std::move(dns)),
      dtype_(dtype) {
  for (auto* t : {&gu_blocks_, &dn_blocks_})
    ESFT_CHECK(t->dim() == 4 && t->size(3) == 16 && t->scalar_type() == at::kByte, "MXFP4 experts: blocks {} {}",
               t->sizes(), at::toString(t->scalar_type()));
  ESFT_CHECK(gu_scales_.sizes() == gu_blocks_.sizes().slice(0, 3) && dn_scales_.sizes() == dn_blocks_.sizes().slice(0, 3),
             "MXFP4 experts: scales do not match their blocks");
  ESFT_CHECK(gu_blocks_.size(0) == dn_blocks_.size(0), "MXFP4 experts: gate_up and down hold different expert counts");
}

int64_t Mxfp4Experts::bytes() const {
  return gu_blocks_.nbytes() + gu_scales_.nbytes() + dn_blocks_.nbytes() + dn_scales_.nbytes();
}

at::Tensor Mxfp4Experts::unpack(ExpertProj proj, int64_t begin, int64_t n, at::ScalarType dtype) const {
  const auto& b = proj == ExpertProj::GateUp ? gu_blocks_ : dn_blocks_;
  const auto& s = proj == ExpertProj::GateUp ? gu_scales_ : dn_scales_;
  return mxfp4_dequantize(b.narrow(0, begin, n), s.narrow(0, begin, n), dtype);
}

std::shared_ptr<const PackedExperts> Mxfp4Experts::select(const std::vector<int64_t>& positions) const {
  auto idx = at::tensor(positions, at::kLong).to(device());
  auto pick = [&](const at::Tensor& t) { return t.index_select(0, idx); };
  return std::make_shared<Mxfp4Experts>(pick(gu_blocks_), pick(gu_scales_), pick(dn_blocks_), pick(dn_scales_), dtype_);
}

}  // namespace esft::nn
