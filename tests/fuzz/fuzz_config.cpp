// libFuzzer: the JSON configuration esft reads without LibTorch: expert_config.json
// (ExpertSelection), summary.json (expert selection), and typed config.json access (ConfigReader,
// through which every model family reads its config: each key read as every type it may have).
// Anything malformed fails with esft::Error naming the key; never another exception or a crash.
#include <nlohmann/json.hpp>

#include "esft/error.h"
#include "esft/expert_config.h"
#include "esft/nn/config.h"
#include "esft/routing_stats.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto j = nlohmann::json::parse(data, data + size, nullptr, false);
  if (j.is_discarded()) return 0;
  try {
    auto sel = esft::ExpertSelection::from_json(j, "expert_config.json");
    (void)esft::dump_json(sel.to_json());
    sel.check_against({1, 2, 3}, 16, "Qwen3MoeForCausalLM", "expert_config.json");
  } catch (const esft::Error&) {
  }
  for (const char* fn : {"token", "gate"}) {
    try {
      esft::SelectOptions opt;
      opt.score_function = fn;
      auto sel = esft::select_experts(j, opt);
      (void)esft::dump_json(sel.to_json());
      (void)esft::dump_json(j);
    } catch (const esft::Error&) {
    }
  }
  try {
    esft::nn::ConfigReader r(j, "config.json");
    for (auto& item : j.items()) {
      const std::string key = item.key();
      auto attempt = [&](auto&& read) {
        try {
          read();
        } catch (const esft::Error&) {
        }
      };
      attempt([&] { (void)r.req_int(key, 1); });
      attempt([&] { (void)r.get_int(key, 0, 0); });
      attempt([&] { (void)r.get_double(key, 1.0, 1e-12, 0.1); });
      attempt([&] { (void)r.get_bool(key, false); });
      attempt([&] { (void)r.get_string(key, ""); });
      attempt([&] { (void)r.get_int_list(key, 0); });
      attempt([&] { (void)r.get_string_list(key); });
    }
  } catch (const esft::Error&) {
  }
  return 0;
}
