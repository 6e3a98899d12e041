// Checkpoint layouts of routed experts <-> the banks' internal layout (experts.h).
//
// A family's codec knows how its experts are named and laid out in Hugging Face checkpoints.
// Loading accepts every layout the family ships in; export writes the layout the checkpoint
// had (so the full checkpoint looks like the original), and adapters always hold per-expert
// tensors so that an adapter stays small whatever the base layout.
#pragma once
#include <ATen/ATen.h>

#include <map>
#include <string>
#include <vector>

#include "esft/model.h"
#include "esft/nn/experts.h"

namespace esft::nn {

class WeightSource;

class ExpertCodec {
 public:
  virtual ~ExpertCodec() = default;
  // Every expert of the layer, global id order, on `device` in `dtype`; *orig_dtype receives the
  // checkpoint's dtype (restored on export).
  virtual ExpertWeights load(WeightSource& src, const at::Device& device, at::ScalarType dtype,
                             at::ScalarType* orig_dtype) = 0;
  // Only the experts `ids` (ascending global ids; expert parallelism), stacked in that order; the
  // others are marked used in src without being read. The default loads every expert on the CPU
  // and keeps those rows; codecs whose layout allows it read just the rows they need.
  virtual ExpertWeights load_experts(WeightSource& src, const at::Device& device, at::ScalarType dtype,
                                     at::ScalarType* orig_dtype, const std::vector<int64_t>& ids);
  // All experts in the layout and dtype the checkpoint had.
  virtual std::vector<HfTensor> export_all(const ExpertBanks& banks) const = 0;
  // The given experts as per-expert tensors (the adapter), in the checkpoint's dtype.
  virtual std::vector<HfTensor> export_experts(const ExpertBanks& banks, const std::vector<int64_t>& ids) const = 0;
  // Adapter tensor name -> (expert id, part); false when the name is not one of this layer's.
  virtual bool parse_adapter_name(const std::string& name, int64_t* expert, std::string* part) const = 0;
  // One expert from its adapter parts (as parse_adapter_name names them). Fails naming what is missing.
  virtual ExpertWeights from_adapter(int64_t expert, const std::map<std::string, at::Tensor>& parts) const = 0;
};

// The gated-MLP experts of most families. Per-expert keys
//   {prefix}.{e}.{gate}.weight [I,H], {prefix}.{e}.{up}.weight [I,H], {prefix}.{e}.{down}.weight [H,I]
// (gate/up/down = gate_proj/up_proj/down_proj, or Mixtral's w1/w3/w2), or transformers 5 fused
//   {prefix}.gate_up_proj [E,2I,H] (gate rows first), {prefix}.down_proj [E,H,I].
struct ExpertNaming {
  std::string gate = "gate_proj", up = "up_proj", down = "down_proj";
};

class GatedExpertCodec final : public ExpertCodec {
 public:
  GatedExpertCodec(std::string prefix, ExpertsSpec spec, ExpertNaming naming = {});
  ExpertWeights load(WeightSource& src, const at::Device& device, at::ScalarType dtype, at::ScalarType* orig_dtype) override;
  ExpertWeights load_experts(WeightSource& src, const at::Device& device, at::ScalarType dtype, at::ScalarType* orig_dtype,
                             const std::vector<int64_t>& ids) override;
  std::vector<HfTensor> export_all(const ExpertBanks& banks) const override;
  std::vector<HfTensor> export_experts(const ExpertBanks& banks, const std::vector<int64_t>& ids) const override;
  bool parse_adapter_name(const std::string& name, int64_t* expert, std::string* part) const override;
  ExpertWeights from_adapter(int64_t expert, const std::map<std::string, at::Tensor>& parts) const override;

 private:
  std::string name(int64_t e, const std::string& proj) const;
  std::string prefix_;
  ExpertsSpec spec_;
  ExpertNaming naming_;
  bool fused_ = false;  // the checkpoint held the fused v5 tensors
};

}  // namespace esft::nn
