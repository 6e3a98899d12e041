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

// One table holds every (scale, byte) pair: entry 256 * s + b is (low-nibble value, high-nibble
// value) * 2^(s-127) in the dtype, [65536, 2] (256 KiB in bf16, cache resident). transformers
// scales with torch.ldexp(v, s - 127), which rounds the exact product once: 0 stays 0, and
// 0.5 * 2^128 is 2^127 though 2^128 itself overflows. The entries are computed so: twice the
// value (exact) times 2^(s-128) (exact, 2^-128 a subnormal) is the exact product in fp32 unless
// it overflows (then inf, as ldexp gives), and rounding that to the dtype rounds once.
const at::Tensor& table(const at::Device& device, at::ScalarType dtype) {
  static std::mutex mu;
  static std::map<std::pair<std::string, at::ScalarType>, at::Tensor> cache;
  std::lock_guard<std::mutex> lock(mu);
  auto key = std::make_pair(device.str(), dtype);
  auto it = cache.find(key);
  if (it != cache.end()) return it->second;
  std::vector<float> t(65536 * 2);
  for (int sc = 0; sc < 256; ++sc) {
    const float p = std::ldexp(1.0f, sc - 128);
    for (int b = 0; b < 256; ++b) {
      t[2 * (256 * sc + b)] = (2 * kFp4[b & 0x0F]) * p;
      t[2 * (256 * sc + b) + 1] = (2 * kFp4[b >> 4]) * p;
    }
  }
  // clone: from_blob borrows t, and to() returns the same tensor when nothing changes
  return cache.emplace(key, at::from_blob(t.data(), {65536, 2}, at::kFloat).clone().to(device, dtype)).first->second;
}

}  // namespace

at::Tensor mxfp4_dequantize(const at::Tensor& blocks, const at::Tensor& scales, at::ScalarType dtype) {
  ESFT_CHECK(blocks.scalar_type() == at::kByte && scales.scalar_type() == at::kByte,
             "MXFP4: blocks and scales must be uint8, not {} and {}", at::toString(blocks.scalar_type()),
             at::toString(scales.scalar_type()));
  ESFT_CHECK(blocks.dim() >= 2 && blocks.size(-1) == 16 && scales.sizes() == blocks.sizes().slice(0, blocks.dim() - 1),
             "MXFP4: blocks {} and scales {} do not match ([..., G, 16] and [..., G])", blocks.sizes(), scales.sizes());
  const auto& t = table(blocks.device(), dtype);
  const int64_t rows = scales.numel();
  auto b = blocks.reshape({rows, 16}), s = scales.reshape({rows, 1});
  auto out = at::empty({rows, 32}, blocks.options().dtype(dtype));
  // Two passes per chunk of 32-value blocks: the table index 256 * scale + byte (uint8 read,
  // int32 written, one kernel) and a gather straight into the output. Chunks bound the int32
  // temporary; on the GPU they are large, so few launches.
  const int64_t chunk = int64_t(1) << (blocks.is_cuda() ? 22 : 20);
  for (int64_t r0 = 0; r0 < rows; r0 += chunk) {
    const int64_t n = std::min(chunk, rows - r0);
    auto idx = at::add(b.narrow(0, r0, n), s.narrow(0, r0, n).to(at::kInt).mul_(256));  // [n, 16] int32
    auto dst = out.narrow(0, r0, n).view({n * 16, 2});
    at::index_select_out(dst, t, 0, idx.view({-1}));
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
