// Named model shapes for esft bench: the released models' config.json values (random weights are
// made in memory; vocabulary and depth can be overridden).
#include <fmt/ranges.h>

#include "esft/bench.h"
#include "esft/error.h"

namespace esft {
namespace {

const std::map<std::string, nlohmann::json>& shapes() {
  static const std::map<std::string, nlohmann::json> s = {
      {"qwen3-30b-a3b",
       {{"architectures", {"Qwen3MoeForCausalLM"}}, {"model_type", "qwen3_moe"}, {"vocab_size", 151936},
        {"hidden_size", 2048}, {"intermediate_size", 6144}, {"moe_intermediate_size", 768}, {"num_hidden_layers", 48},
        {"num_attention_heads", 32}, {"num_key_value_heads", 4}, {"head_dim", 128}, {"num_experts", 128},
        {"num_experts_per_tok", 8}, {"norm_topk_prob", true}, {"rope_theta", 1000000.0}, {"rms_norm_eps", 1e-6},
        {"max_position_embeddings", 40960}, {"tie_word_embeddings", false}}},
      {"qwen3-235b-a22b",
       {{"architectures", {"Qwen3MoeForCausalLM"}}, {"model_type", "qwen3_moe"}, {"vocab_size", 151936},
        {"hidden_size", 4096}, {"intermediate_size", 12288}, {"moe_intermediate_size", 1536}, {"num_hidden_layers", 94},
        {"num_attention_heads", 64}, {"num_key_value_heads", 4}, {"head_dim", 128}, {"num_experts", 128},
        {"num_experts_per_tok", 8}, {"norm_topk_prob", true}, {"rope_theta", 1000000.0}, {"rms_norm_eps", 1e-6},
        {"max_position_embeddings", 40960}, {"tie_word_embeddings", false}}},
      {"qwen2-57b-a14b",
       {{"architectures", {"Qwen2MoeForCausalLM"}}, {"model_type", "qwen2_moe"}, {"vocab_size", 151936},
        {"hidden_size", 3584}, {"intermediate_size", 18944}, {"moe_intermediate_size", 2560},
        {"shared_expert_intermediate_size", 20480}, {"num_hidden_layers", 28}, {"num_attention_heads", 28},
        {"num_key_value_heads", 4}, {"num_experts", 64}, {"num_experts_per_tok", 8}, {"norm_topk_prob", false},
        {"rope_theta", 1000000.0}, {"rms_norm_eps", 1e-6}, {"max_position_embeddings", 32768}}},
      {"mixtral-8x7b",
       {{"architectures", {"MixtralForCausalLM"}}, {"model_type", "mixtral"}, {"vocab_size", 32000}, {"hidden_size", 4096},
        {"intermediate_size", 14336}, {"num_hidden_layers", 32}, {"num_attention_heads", 32}, {"num_key_value_heads", 8},
        {"num_local_experts", 8}, {"num_experts_per_tok", 2}, {"rope_theta", 1000000.0}, {"rms_norm_eps", 1e-5},
        {"max_position_embeddings", 32768}}},
      {"olmoe-1b-7b",
       {{"architectures", {"OlmoeForCausalLM"}}, {"model_type", "olmoe"}, {"vocab_size", 50304}, {"hidden_size", 2048},
        {"intermediate_size", 1024}, {"num_hidden_layers", 16}, {"num_attention_heads", 16}, {"num_key_value_heads", 16},
        {"num_experts", 64}, {"num_experts_per_tok", 8}, {"rope_theta", 10000.0}, {"rms_norm_eps", 1e-5},
        {"max_position_embeddings", 4096}, {"pad_token_id", 1}}},
  };
  return s;
}

}  // namespace

std::vector<std::string> shape_names() {
  std::vector<std::string> out;
  for (auto& [k, v] : shapes()) out.push_back(k);
  return out;
}

nlohmann::json shape_config(const std::string& name) {
  auto it = shapes().find(name);
  if (it == shapes().end()) fail("--shape {}: unknown (known: {})", name, fmt::join(shape_names(), ", "));
  return it->second;
}

}  // namespace esft
