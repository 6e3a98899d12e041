// Bad config.json values fail before any weight is read, naming the file and the key: the
// DeepSeek-V2 / V3 and GLM-4.5 families' own keys, and the keys every family reads (on the bundled
// tiny Qwen3-MoE: zero or negative sizes, wrong types, out-of-range values, values that used to
// crash with SIGFPE or were silently taken as the default).
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
    {"glm4_moe", "base", "/rope_parameters/rope_theta", "1e4", "\"rope_parameters.rope_theta\" must be a finite number"},
    {"deepseek_v3", "base", "/topk_group", 9, "\"topk_group\" is 9; it must be in [1, n_group] (n_group 4)"},
    {"deepseek_v3", "base", "/topk_group", 1, "cannot route top-3 of 8 experts"},
    {"glm4_moe", "base", "/topk_group", 2, "\"topk_group\" is 2; it must be in [1, n_group] (n_group 1)"},
    {"deepseek_v2", "groups", "/topk_group", 5, "\"topk_group\" is 5; it must be in [1, n_group] (n_group 4)"},
    {"bundled", "qwen3", "/num_key_value_heads", 0, "\"num_key_value_heads\" is 0, it must be at least 1"},
    {"bundled", "qwen3", "/num_key_value_heads", 3, "must be a multiple of num_key_value_heads (3)"},
    {"bundled", "qwen3", "/decoder_sparse_step", 0, "\"decoder_sparse_step\" is 0, it must be at least 1"},
    {"bundled", "qwen3", "/rope_theta", nlohmann::json::array({0}), "\"rope_theta\" must be a finite number, not [0]"},
    {"bundled", "qwen3", "/rope_parameters/rope_theta", 0.5, "rope_theta must be > 1, not 0.5"},
    {"bundled", "qwen3", "/rope_parameters/rope_type", 3, "\"rope_parameters.rope_type\" must be a string"},
    {"bundled", "qwen3", "/rms_norm_eps", 2, "\"rms_norm_eps\" is 2, expected a value in"},
    {"bundled", "qwen3", "/mlp_only_layers", nlohmann::json::array({0.5}), "\"mlp_only_layers\" must be an integer, not 0.5"},
    {"bundled", "qwen3", "/mlp_only_layers", nlohmann::json::array({-1}), "\"mlp_only_layers\" is -1"},
    {"bundled", "qwen3", "/hidden_size", -64, "\"hidden_size\" is -64, it must be at least 1"},
    {"bundled", "qwen3", "/hidden_size", 64.5, "\"hidden_size\" must be an integer, not 64.5"},
    {"bundled", "qwen3", "/vocab_size", "384", "\"vocab_size\" must be an integer, not \"384\""},
    {"bundled", "qwen3", "/vocab_size", nullptr, "\"vocab_size\" is missing"},
    {"bundled", "qwen3", "/num_hidden_layers", 0, "\"num_hidden_layers\" is 0, it must be at least 1"},
    {"bundled", "qwen3", "/num_attention_heads", 0, "\"num_attention_heads\" is 0, it must be at least 1"},
    {"bundled", "qwen3", "/head_dim", 0, "\"head_dim\" is 0, it must be at least 1"},
    {"bundled", "qwen3", "/moe_intermediate_size", 0, "\"moe_intermediate_size\" is 0, it must be at least 1"},
    {"bundled", "qwen3", "/num_experts_per_tok", 0, "\"num_experts_per_tok\" is 0, it must be at least 1"},
    {"bundled", "qwen3", "/norm_topk_prob", "yes", "\"norm_topk_prob\" must be true or false"},
    {"bundled", "qwen3", "/pad_token_id", 384, "\"pad_token_id\" 384 is outside the vocabulary"},
    {"bundled", "qwen3", "/tie_word_embeddings", 1, "\"tie_word_embeddings\" must be true or false"},
    {"bundled", "qwen3", "/hidden_act", "gelu", "hidden_act \"gelu\" is not supported"},
    {"bundled", "qwen3", "/num_key_value_heads", 18446744073709551615ull, "\"num_key_value_heads\" is too large"},
};

// The values on every family (each family's tiny checkpoint as tiny_models.py makes it).
// Keys a family does not read, such as decoder_sparse_step outside Qwen, are ignored as in
// transformers, and MLA families have no num_key_value_heads to check.
struct BadValue {
  std::string key;
  nlohmann::json value;
  std::string expected;
};
const BadValue kEveryFamily[] = {
    {"/rope_theta", nlohmann::json::array({0}), "\"rope_theta\" must be a finite number, not [0]"},
    {"/rope_parameters/rope_theta", 0, "rope_theta must be > 1, not 0"},
    {"/rope_parameters", "yarn", "\"rope_parameters\" must be an object (or null), not \"yarn\""},
    {"/rms_norm_eps", 2, "\"rms_norm_eps\" is 2, expected a value in"},
    {"/num_experts_per_tok", 99, "\"num_experts_per_tok\" is 99; it must be in [1, 8]"},
};
const BadValue kKvHeads = {"/num_key_value_heads", 0, "\"num_key_value_heads\" is 0, it must be at least 1"};
const BadValue kQwenOnly[] = {
    {"/decoder_sparse_step", 0, "\"decoder_sparse_step\" is 0, it must be at least 1"},
    {"/mlp_only_layers", nlohmann::json::array({0.5}), "\"mlp_only_layers\" must be an integer, not 0.5"},
};

std::vector<BadConfig> bad_configs() {
  std::vector<BadConfig> rows(std::begin(kBad), std::end(kBad));
  struct Family {
    const char *name, *config;
    bool mla, qwen;
  };
  const Family families[] = {{"qwen3_moe", "base", false, true},  {"qwen2_moe", "base", false, true},
                             {"mixtral", "base", false, false},   {"olmoe", "base", false, false},
                             {"gpt_oss", "base", false, false},   {"deepseek_v2", "lite", true, false},
                             {"deepseek_v3", "base", true, false}, {"glm4_moe", "base", false, false}};
  for (const auto& f : families) {
    auto add = [&](const BadValue& b) { rows.push_back({f.name, f.config, b.key, b.value, b.expected}); };
    if (!f.mla) add(kKvHeads);
    for (const auto& b : kEveryFamily) add(b);
    if (f.qwen)
      for (const auto& b : kQwenOnly) add(b);
  }
  return rows;
}

class FamilyConfig : public ::testing::TestWithParam<BadConfig> {};

TEST_P(FamilyConfig, FailsNamingFileAndKey) {
  const auto& c = GetParam();
  // One tiny checkpoint per (family, config), shared by the rows.
  static std::map<std::string, fs::path> made;
  auto& dir = made[c.family + "/" + c.config];
  if (dir.empty()) {
    dir = test::temp_dir("bad-config-" + c.family + "-" + c.config);
    if (c.family == "bundled")
      fs::copy(test::source_dir() / "tests/data/tiny-qwen3-moe", dir, fs::copy_options::recursive | fs::copy_options::overwrite_existing);
    else
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

INSTANTIATE_TEST_SUITE_P(Bad, FamilyConfig, ::testing::ValuesIn(bad_configs()));

}  // namespace
