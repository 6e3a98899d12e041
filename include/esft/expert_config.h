// expert_config.json, the one place its schema lives: parsed and validated here (so a typo fails
// before any GPU time is spent), written here (esft select), checked against a model here.
//   {"experts": {"<HF layer index>": [global routed-expert ids, in selection order]},
//    "shared_experts": bool, "non_expert_modules": bool}
#pragma once
#include <nlohmann/json.hpp>

#include <map>
#include <string>
#include <vector>

#include "esft/fs.h"

namespace esft {

struct ExpertSelection {
  std::map<int, std::vector<int>> experts;  // HF layer index -> global routed-expert ids
  bool shared_experts = false;              // also train the shared experts (and their gates)
  bool non_expert_modules = false;          // also train attention, norms, routers, dense MLPs, embeddings, lm_head

  // Errors name `source` and the key at fault.
  static ExpertSelection from_json(const nlohmann::json& j, const std::string& source);
  static ExpertSelection from_json_file(const fs::path& path);
  nlohmann::json to_json() const;
  // Every layer key an MoE layer of the model, every id one of its routed experts.
  void check_against(const std::vector<int>& moe_layers, int n_routed_experts, const std::string& architecture,
                     const std::string& source) const;
  int64_t n_experts() const;  // selected experts over all layers
};

}  // namespace esft
