// expert_config.json -> ExpertSelection, validated so a typo fails before any GPU time is spent.
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <set>

#include "esft/error.h"
#include "esft/model.h"
#include "esft/train.h"

namespace esft {

ExpertSelection ExpertSelection::from_json_file(const fs::path& path) {
  if (!fs::exists(path)) fail("{}: expert config not found", path.string());
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(read_file(path));
  } catch (const nlohmann::json::exception& e) {
    fail("{}: not valid JSON: {}", path.string(), e.what());
  }
  if (!j.is_object() || !j.contains("experts") || !j["experts"].is_object())
    fail("{}: expected {{\"experts\": {{\"<layer>\": [ids...]}}, \"shared_experts\": bool, \"non_expert_modules\": bool}}",
         path.string());
  ExpertSelection sel;
  for (auto& [key, ids] : j["experts"].items()) {
    char* end;
    long layer = std::strtol(key.c_str(), &end, 10);
    if (key.empty() || *end || layer < 0) fail("{}: layer key \"{}\" is not a layer index", path.string(), key);
    if (!ids.is_array()) fail("{}: experts[\"{}\"] is not a list", path.string(), key);
    std::set<int> seen;
    for (auto& id : ids) {
      if (!id.is_number_integer() || id.get<int64_t>() < 0)
        fail("{}: experts[\"{}\"] holds {}, not an expert id", path.string(), key, id.dump());
      if (!seen.insert(id.get<int>()).second) fail("{}: experts[\"{}\"] lists expert {} twice", path.string(), key, id.get<int>());
      sel.experts[int(layer)].push_back(id.get<int>());
    }
  }
  for (auto [k, dst] : {std::pair{"shared_experts", &sel.shared_experts}, {"non_expert_modules", &sel.non_expert_modules}}) {
    if (!j.contains(k)) continue;
    if (!j[k].is_boolean()) fail("{}: \"{}\" must be true or false", path.string(), k);
    *dst = j[k].get<bool>();
  }
  return sel;
}

void check_expert_selection(const ExpertSelection& sel, const MoeModel& model, const fs::path& source) {
  auto moe = model.moe_layers();
  for (auto& [layer, ids] : sel.experts) {
    if (std::find(moe.begin(), moe.end(), layer) == moe.end())
      fail("{}: experts[\"{}\"]: layer {} is not an MoE layer of this {} model (MoE layers: {})", source.string(), layer,
           layer, model.architecture(), fmt::join(moe, ", "));
    for (int id : ids)
      if (id >= model.n_routed_experts())
        fail("{}: experts[\"{}\"] holds expert {}, but the model has {} routed experts per layer (ids 0..{})",
             source.string(), layer, id, model.n_routed_experts(), model.n_routed_experts() - 1);
  }
}

}  // namespace esft
