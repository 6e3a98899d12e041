// One MoE layer as components (Megatron-Core's MoELayer): router -> token dispatcher -> expert
// banks -> dispatcher combine, plus an optional shared expert. Its specs are the whole of what
// the families differ in here; a family states them, it does not write an MoE forward.
#pragma once
#include <ATen/ATen.h>

#include <memory>
#include <string>

#include "esft/nn/dispatch.h"
#include "esft/nn/expert_codec.h"
#include "esft/nn/experts.h"
#include "esft/nn/param_store.h"
#include "esft/nn/router.h"

namespace esft::nn {

class WeightSource;

struct SharedExpertSpec {
  int64_t inter = 0;          // intermediate size; 0 = no shared expert
  std::string name;           // module under the MoE block: "shared_expert" (Qwen2), "shared_experts" (DeepSeek, GLM)
  std::string gate_name;      // non-empty: sigmoid(x @ {gate_name}.weight^T) scales the shared expert (Qwen2-MoE)
};

struct MoeSpec {
  RouterSpec router;
  ExpertsSpec experts;
  SharedExpertSpec shared;
  std::string module = "mlp";        // HF module of the block: model.layers.{i}.{module}
  std::string router_name = "gate";  // {module}.{router_name}.weight (.bias, .e_score_correction_bias)
  ExpertNaming naming;               // per-expert projection names for the default codec
};

// down(silu(gate(x)) * up(x)) over prefix{gate,up,down}_proj.weight (dense layers, shared experts).
at::Tensor gated_mlp(const ParamStore& w, const std::string& prefix, const at::Tensor& x);
void load_gated_mlp(const std::string& prefix, int64_t hidden, int64_t inter, WeightSource& src, ParamStore& store,
                    ParamGroup group = ParamGroup::NonExpert);

class MoeBlock {
 public:
  // prefix: "model.layers.{i}.{module}." Loads router and shared expert into the store, the
  // routed experts into banks on the store's device. codec: null = GatedExpertCodec(spec.naming).
  // placement: under expert parallelism only this rank's experts are loaded.
  MoeBlock(std::string prefix, MoeSpec spec, WeightSource& src, ParamStore& store,
           std::unique_ptr<ExpertCodec> codec = nullptr, ExpertPlacement placement = {});

  const MoeSpec& spec() const { return spec_; }
  const std::string& prefix() const { return prefix_; }
  ExpertBanks& banks() { return *banks_; }
  const ExpertBanks& banks() const { return *banks_; }
  const ExpertCodec& codec() const { return *codec_; }
  // Expert parallelism swaps in its all-to-all dispatcher here.
  void set_dispatcher(std::shared_ptr<TokenDispatcher> d) { dispatcher_ = std::move(d); }
  const TokenDispatcher& dispatcher() const { return *dispatcher_; }

  // x_TH -> [T,H]; *routing receives the router's decision (ids, weights, logits).
  at::Tensor forward(const at::Tensor& x_TH, const ParamStore& w, RouterOutput* routing) const;

  int64_t params_per_expert() const;

 private:
  std::string prefix_;
  MoeSpec spec_;
  std::unique_ptr<ExpertCodec> codec_;
  std::unique_ptr<ExpertBanks> banks_;
  std::shared_ptr<TokenDispatcher> dispatcher_;
};

}  // namespace esft::nn
