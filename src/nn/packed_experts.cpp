// The forward of a packed frozen bank (packed_experts.h): each projection is an autograd
// function whose forward and backward expand the packed weights for their own matmul only.
#include "esft/nn/packed_experts.h"

#include <torch/csrc/autograd/custom_function.h>

#include "esft/error.h"
#include "esft/nn/experts.h"
#include "esft/nn/ops.h"

namespace esft::nn {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Carries the packed storage through the autograd context (saved_data holds IValues only).
struct PackedRef : torch::CustomClassHolder {
  explicit PackedRef(std::shared_ptr<const PackedExperts> p) : packed(std::move(p)) {}
  std::shared_ptr<const PackedExperts> packed;
};

bool grouped(const at::Tensor& x) { return x.is_cuda() && x.scalar_type() == at::kBFloat16; }

// Rows grouped by expert times each expert's expanded weight W [out, in]: x @ W^T (forward), or
// g @ W (the input gradient). Grouped GEMM over the whole expanded bank on CUDA bf16, else one
// expert at a time (only that expert expanded).
at::Tensor packed_matmul(const at::Tensor& x, const PackedExperts& p, ExpertProj proj, bool input_grad,
                         const at::Tensor& offs, const std::vector<int64_t>& counts) {
  const auto dtype = x.scalar_type();
  if (grouped(x)) {
    auto w = p.unpack(proj, 0, p.size(), dtype);  // [E, out, in], freed on return
    return at::_grouped_mm(x, input_grad ? w : w.transpose(1, 2), offs);
  }
  std::vector<at::Tensor> outs;
  int64_t off = 0;
  for (int64_t e = 0; e < int64_t(counts.size()); ++e) {
    if (counts[e] == 0) continue;
    auto w = p.unpack(proj, e, 1, dtype)[0];
    auto xe = x.narrow(0, off, counts[e]);
    outs.push_back(nn::linear(xe, input_grad ? w.t() : w));  // row-stable on the CPU (ops.h)
    off += counts[e];
  }
  return at::cat(outs, 0);
}

class PackedLinear : public torch::autograd::Function<PackedLinear> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& offs, c10::IValue packed,
                            int64_t proj, std::vector<int64_t> counts) {
    auto* ref = static_cast<PackedRef*>(packed.toCapsule().get());
    auto y = packed_matmul(x, *ref->packed, ExpertProj(proj), false, offs, counts);
    ctx->saved_data["packed"] = packed;
    ctx->saved_data["proj"] = proj;
    ctx->saved_data["offs"] = offs;
    ctx->saved_data["counts"] = counts;
    return y;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto packed = ctx->saved_data["packed"].toCapsule();
    const auto& p = *static_cast<PackedRef*>(packed.get())->packed;
    auto g = grads[0].contiguous();
    auto gx = packed_matmul(g, p, ExpertProj(ctx->saved_data["proj"].toInt()), true, ctx->saved_data["offs"].toTensor(),
                            ctx->saved_data["counts"].toIntVector());
    return {gx, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

// Per-row bias of the expert each row belongs to.
at::Tensor bias_of_rows(const at::Tensor& bias_EX, const at::Tensor& counts_E, int64_t M) {
  auto expert_of_row = at::repeat_interleave(at::arange(counts_E.size(0), counts_E.options()), counts_E, 0, M);
  return bias_EX.index_select(0, expert_of_row);
}

}  // namespace

at::Tensor packed_bank_forward(const ExpertsSpec& spec, const ExpertWeights& w, const at::Tensor& x,
                               const at::Tensor& counts_E, const int64_t* host_counts) {
  const auto dtype = x.scalar_type();
  const int64_t M = x.size(0), E = counts_E.size(0);
  ESFT_CHECK(w.packed && w.packed->size() == E, "packed experts: the bank holds {} experts, {} row counts given",
             w.packed ? w.packed->size() : 0, E);
  if (M == 0) return at::zeros({0, spec.hidden}, x.options());
  std::vector<int64_t> counts;
  at::Tensor offs = counts_E;  // a defined tensor either way (autograd inputs); the loop ignores it
  if (grouped(x)) {
    offs = counts_E.cumsum(0).to(at::kInt);
  } else if (host_counts) {
    counts.assign(host_counts, host_counts + E);
  } else {
    auto c = counts_E.cpu();
    counts.assign(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + E);
  }
  auto ref = c10::IValue::make_capsule(c10::make_intrusive<PackedRef>(w.packed));
  auto h = PackedLinear::apply(x, offs, ref, int64_t(ExpertProj::GateUp), counts);  // [M, 2I]
  if (spec.bias) h = h + bias_of_rows(w.gate_up_bias.to(dtype), counts_E, M);
  auto y = PackedLinear::apply(gated_activation(spec, h), offs, ref, int64_t(ExpertProj::Down), counts);  // [M, H]
  if (spec.bias) y = y + bias_of_rows(w.down_bias.to(dtype), counts_E, M);
  return y;
}

}  // namespace esft::nn
