// Named model shapes for esft bench: the released models' config.json values (random weights are
// made in memory; vocabulary and depth can be overridden).
#include <fmt/ranges.h>

#include "esft/bench.h"
#include "esft/error.h"

namespace esft {
namespace {

// layer_types left out: GPT-OSS's default (even layers sliding) is the released pattern at any --layers.
nlohmann::json gpt_oss(int64_t layers, int64_t experts) {
  return {{"architectures", {"GptOssForCausalLM"}}, {"model_type", "gpt_oss"}, {"vocab_size", 201088},
          {"hidden_size", 2880}, {"intermediate_size", 2880}, {"num_hidden_layers", layers}, {"head_dim", 64},
          {"num_attention_heads", 64}, {"num_key_value_heads", 8}, {"num_local_experts", experts},
          {"num_experts_per_tok", 4}, {"sliding_window", 128}, {"attention_bias", true},
          {"rms_norm_eps", 1e-5}, {"max_position_embeddings", 131072}, {"rope_theta", 150000.0},
          {"rope_scaling", {{"rope_type", "yarn"}, {"factor", 32.0}, {"beta_fast", 32.0}, {"beta_slow", 1.0},
                            {"truncate", false}, {"original_max_position_embeddings", 4096}}},
          {"swiglu_limit", 7.0}, {"tie_word_embeddings", false},
          {"quantization_config", {{"quant_method", "mxfp4"}}}};
}

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
      // The ESFT paper's model (MLA with a plain q_proj, YaRN, layer 0 dense, 2 shared experts).
      {"deepseek-v2-lite",
       {{"architectures", {"DeepseekV2ForCausalLM"}}, {"model_type", "deepseek_v2"}, {"vocab_size", 102400},
        {"hidden_size", 2048}, {"intermediate_size", 10944}, {"moe_intermediate_size", 1408}, {"num_hidden_layers", 27},
        {"num_attention_heads", 16}, {"num_key_value_heads", 16}, {"n_routed_experts", 64}, {"n_shared_experts", 2},
        {"num_experts_per_tok", 6}, {"first_k_dense_replace", 1}, {"moe_layer_freq", 1}, {"n_group", 1},
        {"topk_group", 1}, {"topk_method", "greedy"}, {"scoring_func", "softmax"}, {"norm_topk_prob", false},
        {"routed_scaling_factor", 1.0}, {"kv_lora_rank", 512}, {"q_lora_rank", nullptr}, {"qk_nope_head_dim", 128},
        {"qk_rope_head_dim", 64}, {"v_head_dim", 128}, {"rms_norm_eps", 1e-6}, {"rope_theta", 10000},
        {"rope_scaling", {{"type", "yarn"}, {"factor", 40}, {"beta_fast", 32}, {"beta_slow", 1}, {"mscale", 0.707},
                          {"mscale_all_dim", 0.707}, {"original_max_position_embeddings", 4096}}},
        {"max_position_embeddings", 163840}, {"attention_bias", false}, {"tie_word_embeddings", false}}},
      // Both as released: MXFP4 experts (kept packed), sliding/full layers, YaRN.
      {"gpt-oss-20b", gpt_oss(24, 32)},
      {"gpt-oss-120b", gpt_oss(36, 128)},
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
