// Bad config.json values of the DeepSeek-V2 / V3 and GLM-4.5 families fail before any weight is
// read, naming the file and the key.
#include <gtest/gtest.h>

#include "esft/model.h"
#include "test_util.h"

using namespace esft;

namespace {

struct BadConfig {
  std::string family, config;
  std::string key;        // the JSON pointer changed, e.g. "/topk_method"
  nlohmann::json value;   // null: the key is removed
  std::string expected;   // in the error message (besides the config.json path)
};
void PrintTo(const BadConfig& c, std::ostream* os) { *os << c.family << c.key << "=" << c.value.dump(); }

const BadConfig kBad[] = {
    {"deepseek_v2", "lite", "/topk_method", "noaux_tc", "\"topk_method\" is \"noaux_tc\""},
    {"deepseek_v2", "lite", "/scoring_func", "sigmoid", "\"scoring_func\" is \"sigmoid\""},
    {"deepseek_v2", "lite", "/kv_lora_rank", nullptr, "\"kv_lora_rank\" is missing"},
    {"deepseek_v2", "lite", "/q_lora_rank", nullptr, "\"q_lora_rank\" is missing"},
    {"deepseek_v2", "lite", "/qk_rope_head_dim", 7, "\"qk_rope_head_dim\" must be even"},
    {"deepseek_v2", "groups", "/n_group", nullptr, "\"n_group\" is missing"},
    {"deepseek_v2", "lite", "/moe_layer_freq", 2, "moe_layer_freq 2"},
    {"deepseek_v2", "lite", "/first_k_dense_replace", 3, "first_k_dense_replace 3"},
    {"deepseek_v3", "base", "/scoring_func", "softmax", "\"scoring_func\" is \"softmax\""},
    {"deepseek_v3", "base", "/topk_method", "greedy", "\"topk_method\" is \"greedy\""},
    {"deepseek_v3", "base", "/v_head_dim", nullptr, "\"v_head_dim\" is missing"},
    {"deepseek_v3", "base", "/n_group", 3, "n_group 3"},
    {"glm4_moe", "base", "/rope_parameters/partial_rotary_factor", 1.5, "partial_rotary_factor"},
    {"glm4_moe", "base", "/n_routed_experts", nullptr, "\"n_routed_experts\" is missing"},
};

class FamilyConfig : public ::testing::TestWithParam<BadConfig> {};

TEST_P(FamilyConfig, FailsNamingFileAndKey) {
  const auto& c = GetParam();
  // One tiny checkpoint per (family, config), shared by the rows.
  static std::map<std::string, fs::path> made;
  auto& dir = made[c.family + "/" + c.config];
  if (dir.empty()) {
    dir = test::temp_dir("bad-config-" + c.family + "-" + c.config);
    test::run_python("tiny_models.py", "--family " + c.family + " --config " + c.config + " --out " + dir.string());
  }
  const auto original = read_file(dir / "config.json");
  auto cfg = nlohmann::json::parse(original);
  nlohmann::json::json_pointer key(c.key);
  if (c.value.is_null()) cfg.at(key.parent_pointer()).erase(key.back());
  else cfg[key] = c.value;
  write_file_atomic(dir / "config.json", cfg.dump(2));
  try {
    load_model(dir, LoadOptions{"cpu", at::kFloat});
    ADD_FAILURE() << "expected an error";
  } catch (const std::exception& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find((dir / "config.json").string()), std::string::npos) << msg;
    EXPECT_NE(msg.find(c.expected), std::string::npos) << msg;
  }
  write_file_atomic(dir / "config.json", original);
}

INSTANTIATE_TEST_SUITE_P(Bad, FamilyConfig, ::testing::ValuesIn(kBad));

}  // namespace
