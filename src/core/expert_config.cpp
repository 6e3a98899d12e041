#include "esft/expert_config.h"

#include <fmt/ranges.h>

#include <algorithm>
#include <set>

#include "esft/error.h"

namespace esft {

ExpertSelection ExpertSelection::from_json(const nlohmann::json& j, const std::string& src) {
  if (!j.is_object() || !j.contains("experts") || !j["experts"].is_object())
    fail("{}: expected {{\"experts\": {{\"<layer>\": [ids...]}}, \"shared_experts\": bool, \"non_expert_modules\": bool}}", src);
  for (auto& [k, v] : j.items())
    if (k != "experts" && k != "shared_experts" && k != "non_expert_modules")
      fail("{}: unknown key \"{}\" (expected experts, shared_experts, non_expert_modules)", src, k);
  ExpertSelection sel;
  for (auto& [key, ids] : j["experts"].items()) {
    char* end;
    long layer = std::strtol(key.c_str(), &end, 10);
    if (key.empty() || *end || layer < 0 || layer > 1000000) fail("{}: layer key \"{}\" is not a layer index", src, key);
    if (!ids.is_array()) fail("{}: experts[\"{}\"] is not a list", src, key);
    std::set<int64_t> seen;
    auto& out = sel.experts[int(layer)];
    for (auto& id : ids) {
      if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > 1000000)
        fail("{}: experts[\"{}\"] holds {}, not an expert id", src, key, id.dump());
      if (!seen.insert(id.get<int64_t>()).second) fail("{}: experts[\"{}\"] lists expert {} twice", src, key, id.get<int64_t>());
      out.push_back(id.get<int>());
    }
  }
  for (auto [k, dst] : {std::pair{"shared_experts", &sel.shared_experts}, {"non_expert_modules", &sel.non_expert_modules}}) {
    if (!j.contains(k)) continue;
    if (!j[k].is_boolean()) fail("{}: \"{}\" must be true or false, not {}", src, k, j[k].dump());
    *dst = j[k].get<bool>();
  }
  return sel;
}

ExpertSelection ExpertSelection::from_json_file(const fs::path& path) {
  if (!fs::exists(path)) fail("{}: expert config not found", path.string());
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(read_file(path));
  } catch (const nlohmann::json::exception& e) {
    fail("{}: not valid JSON: {}", path.string(), e.what());
  }
  return from_json(j, path.string());
}

nlohmann::json ExpertSelection::to_json() const {
  nlohmann::json e = nlohmann::json::object();
  for (auto& [layer, ids] : experts) e[std::to_string(layer)] = ids;
  return {{"experts", e}, {"shared_experts", shared_experts}, {"non_expert_modules", non_expert_modules}};
}

void ExpertSelection::check_against(const std::vector<int>& moe, int n_routed, const std::string& arch,
                                    const std::string& src) const {
  for (auto& [layer, ids] : experts) {
    if (std::find(moe.begin(), moe.end(), layer) == moe.end())
      fail("{}: experts[\"{}\"]: layer {} is not an MoE layer of this {} model (MoE layers: {})", src, layer, layer, arch,
           fmt::join(moe, ", "));
    for (int id : ids)
      if (id >= n_routed)
        fail("{}: experts[\"{}\"] holds expert {}, but the model has {} routed experts per layer (ids 0..{})", src, layer,
             id, n_routed, n_routed - 1);
  }
}

int64_t ExpertSelection::n_experts() const {
  int64_t n = 0;
  for (auto& [l, ids] : experts) n += ids.size();
  return n;
}

}  // namespace esft
