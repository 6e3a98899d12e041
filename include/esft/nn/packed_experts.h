// Frozen experts held in a compact storage (e.g. MXFP4 blocks and scales) and expanded to the
// banks' dense layout only for the matmul that uses them.
//
// A frozen bank (experts.h) may hold its gate_up / down weights as a PackedExperts instead of
// dense tensors (biases stay dense). Its forward expands the weights of the layer just in time
// and frees them after the matmul; the backward expands them again (frozen weights need no
// gradient, only the input does, and that needs the weight, not the input). So no dense copy of
// a packed bank outlives its matmul, and a model keeps its frozen experts at the packed size.
// Trainable experts are expanded once into fp32 master copies when the bank is split.
#pragma once
#include <ATen/ATen.h>

#include <memory>
#include <vector>

namespace esft::nn {

struct ExpertsSpec;
struct ExpertWeights;

enum class ExpertProj { GateUp, Down };

class PackedExperts {
 public:
  virtual ~PackedExperts() = default;
  virtual int64_t size() const = 0;                // experts held
  virtual at::Device device() const = 0;
  virtual at::ScalarType dtype() const = 0;        // the dtype the model computes in (expansion default)
  virtual int64_t bytes() const = 0;               // storage held
  // Experts [begin, begin + n) dense in the banks' layout: GateUp [n, 2I, H] (gate rows, then up
  // rows), Down [n, H, I]; in `dtype` on device().
  virtual at::Tensor unpack(ExpertProj proj, int64_t begin, int64_t n, at::ScalarType dtype) const = 0;
  // The experts at `positions`, in that order, still packed.
  virtual std::shared_ptr<const PackedExperts> select(const std::vector<int64_t>& positions) const = 0;
};

// A packed bank's expert outputs for rows grouped by expert (as bank_forward in experts.cpp):
// y = down(act(gate_up(x) + b) ) + b, the weights expanded per matmul (grouped GEMM on CUDA
// bf16, a per-expert loop otherwise). Differentiable with respect to x and the biases.
at::Tensor packed_bank_forward(const ExpertsSpec& spec, const ExpertWeights& w, const at::Tensor& x_MH,
                               const at::Tensor& counts_E, const int64_t* host_counts);

// MXFP4 (OCP microscaling FP4, transformers' integrations/mxfp4.py): per 32 values one E8M0
// scale byte (2^(s-127)) and 16 bytes of E2M1 nibbles, the low nibble the even element.
// blocks [..., G, 16] uint8, scales [..., G] uint8 -> [..., G*32] in dtype, equal bit for bit to
// transformers' convert_moe_packed_tensors before its final transpose, extremes included (as its
// torch.ldexp: scale 0 gives subnormals, scale 255 gives +-inf where v * 2^128 overflows, 2^127
// for 0.5 and 0 for 0).
at::Tensor mxfp4_dequantize(const at::Tensor& blocks, const at::Tensor& scales, at::ScalarType dtype);

// Experts stored as MXFP4 in the banks' row order: gate_up blocks [E, 2I, H/32, 16] with scales
// [E, 2I, H/32] (gate rows first), down blocks [E, H, I/32, 16] with scales [E, H, I/32].
class Mxfp4Experts final : public PackedExperts {
 public:
  Mxfp4Experts(at::Tensor gate_up_blocks, at::Tensor gate_up_scales, at::Tensor down_blocks, at::Tensor down_scales,
               at::ScalarType dtype);
  int64_t size() const override { return gu_blocks_.size(0); }
  at::Device device() const override { return gu_blocks_.device(); }
  at::ScalarType dtype() const override { return dtype_; }
  int64_t bytes() const override;
  at::Tensor unpack(ExpertProj proj, int64_t begin, int64_t n, at::ScalarType dtype) const override;
  std::shared_ptr<const PackedExperts> select(const std::vector<int64_t>& positions) const override;

 private:
  at::Tensor gu_blocks_, gu_scales_, dn_blocks_, dn_scales_;
  at::ScalarType dtype_;
};

}  // namespace esft::nn
