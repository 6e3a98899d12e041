// Qwen2-MoE (Qwen2MoeForCausalLM; Qwen1.5-MoE, Qwen2-57B-A14B): GQA attention with q/k/v biases,
// softmax top-k router (norm_topk_prob), routed experts plus a shared expert scaled by a
// per-token sigmoid gate; dense layers via mlp_only_layers / decoder_sparse_step; optional
// sliding windows on the first max_window_layers layers.
#include <set>

#include "esft/nn/decoder.h"

namespace esft {
namespace {

class Qwen2Moe final : public nn::DecoderModel {
 public:
  struct Config {
    nn::DecoderConfig base;
    nn::AttentionSpec attn;
    nn::MoeSpec moe;
    int64_t sparse_step = 1;
    std::set<int64_t> mlp_only;
  };

  static Config parse(const nn::WeightSource& src) {
    nn::ConfigReader r(src.config(), src.config_where());
    Config c;
    c.base = nn::read_decoder_config(r, "Qwen2MoeForCausalLM", 1e-6);
    c.base.dense_inter = r.get_int("intermediate_size", 0, 0);
    if (r.get_bool("use_sliding_window", false)) {
      const int64_t window = r.get_int("sliding_window", 4096, 1), max_window_layers = r.get_int("max_window_layers", 28, 0);
      c.base.sliding_window = nn::read_layer_windows(r, c.base.n_layers, window);
      if (!r.has("layer_types"))  // as Qwen2MoeConfig derives them
        for (int64_t i = 0; i < c.base.n_layers; ++i)
          c.base.sliding_window[i] = ((i + 1) % 2 && i < max_window_layers) ? window : 0;
    }
    c.attn = nn::read_attention_heads(r, c.base.hidden);
    c.attn.q_bias = c.attn.k_bias = c.attn.v_bias = r.get_bool("qkv_bias", true);
    c.moe.experts = {r.req_int("num_experts", 0), c.base.hidden, r.req_int("moe_intermediate_size", 1)};
    c.moe.router.n_experts = c.moe.experts.n_experts;
    c.moe.router.top_k = r.req_int("num_experts_per_tok", 1);
    c.moe.router.norm_topk_prob = r.get_bool("norm_topk_prob", false);
    c.moe.shared = {r.get_int("shared_expert_intermediate_size", 0, 0), "shared_expert", "shared_expert_gate"};
    c.sparse_step = r.get_int("decoder_sparse_step", 1, 1);
    for (auto l : r.get_int_list("mlp_only_layers", 0)) c.mlp_only.insert(l);
    return c;
  }

  Qwen2Moe(nn::WeightSource& src, const LoadOptions& opt) : Qwen2Moe(src, opt, parse(src)) {}
  Qwen2Moe(nn::WeightSource& src, const LoadOptions& opt, Config c) : DecoderModel(src, opt, c.base), c_(std::move(c)) {
    attn_ = c_.attn;
    rope_.emplace(src.config(), attn_.head_dim, src.config_where());
    load_weights();
  }

 private:
  std::optional<nn::MoeSpec> moe_spec(int64_t i) const override {
    bool moe = !c_.mlp_only.count(i) && c_.moe.experts.n_experts > 0 && (i + 1) % c_.sparse_step == 0;
    return moe ? std::optional(c_.moe) : std::nullopt;
  }
  Config c_;
};

}  // namespace

ESFT_REGISTER_FAMILY("Qwen2MoeForCausalLM", Qwen2Moe);

}  // namespace esft
