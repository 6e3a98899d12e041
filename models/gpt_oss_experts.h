// GPT-OSS routed experts in Hugging Face checkpoints <-> the banks' layout (experts.h).
//
// Under prefix = model.layers.{i}.mlp.experts:
//   bf16 / fp32 (transformers' save): gate_up_proj [E, H, 2I] used as x @ W, its columns
//     interleaved (2j = gate j, 2j+1 = up j); gate_up_proj_bias [E, 2I] interleaved alike;
//     down_proj [E, I, H]; down_proj_bias [E, H].
//   MXFP4 (the released checkpoints): gate_up_proj_blocks uint8 [E, 2I, H/32, 16] and
//     gate_up_proj_scales uint8 [E, 2I, H/32] (rows interleaved as the columns above),
//     down_proj_blocks [E, H, I/32, 16] and down_proj_scales [E, H, I/32]; biases as above.
//     The experts stay MXFP4 in a packed frozen bank (packed_experts.h); trained ones are
//     expanded into fp32 masters.
// Full export writes the bf16/fp32 layout (MXFP4 experts as bf16, which holds them exactly),
// as transformers saves a dequantized model. Adapters hold each trained expert as HF's fused
// tensors sliced at that expert:
//   {prefix}.{e}.gate_up_proj [H, 2I], {prefix}.{e}.gate_up_proj_bias [2I],
//   {prefix}.{e}.down_proj [I, H], {prefix}.{e}.down_proj_bias [H].
#pragma once
#include "esft/nn/expert_codec.h"

namespace esft::nn {

class GptOssExpertCodec final : public ExpertCodec {
 public:
  GptOssExpertCodec(std::string prefix, ExpertsSpec spec);
  ExpertWeights load(WeightSource& src, const at::Device& device, at::ScalarType dtype, at::ScalarType* orig_dtype) override;
  std::vector<HfTensor> export_all(const ExpertBanks& banks) const override;
  std::vector<HfTensor> export_experts(const ExpertBanks& banks, const std::vector<int64_t>& ids) const override;
  bool parse_adapter_name(const std::string& name, int64_t* expert, std::string* part) const override;
  ExpertWeights from_adapter(int64_t expert, const std::map<std::string, at::Tensor>& parts) const override;

 private:
  // One expert in HF layout (gate_up [H, 2I], its bias [2I], down [I, H], its bias [H]) on the
  // CPU, weights in `dtype`, biases in their checkpoint dtype.
  std::vector<at::Tensor> to_hf(const ExpertWeights& x, at::ScalarType dtype) const;
  std::string prefix_;
  ExpertsSpec spec_;
  at::Tensor deinterleave_;  // [2I] int64: bank row r of gate_up comes from HF column deinterleave_[r]
  at::ScalarType bias_dtype_ = at::kBFloat16;  // the checkpoint's (MXFP4 checkpoints keep biases unquantized)
};

}  // namespace esft::nn
