// Qwen3-MoE (Qwen3MoeForCausalLM): GQA attention with per-head q/k RMSNorm, softmax top-k router
// (norm_topk_prob), routed experts only; dense layers via mlp_only_layers / decoder_sparse_step.
#include <set>

#include "esft/nn/decoder.h"

namespace esft {
namespace {

class Qwen3Moe final : public nn::DecoderModel {
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
    c.base = nn::read_decoder_config(r, "Qwen3MoeForCausalLM", 1e-6);
    c.base.dense_inter = r.get_int("intermediate_size", 0, 0);
    if (r.get_bool("use_sliding_window", false))
      c.base.sliding_window.assign(c.base.n_layers, r.get_int("sliding_window", 0, 1));
    c.attn = nn::read_attention_heads(r, c.base.hidden);
    bool bias = r.get_bool("attention_bias", false);
    c.attn.q_bias = c.attn.k_bias = c.attn.v_bias = c.attn.o_bias = bias;
    c.attn.qk_norm = nn::QkNorm::PerHead;
    c.attn.norm_eps = c.base.rms_eps;
    // transformers 5 saves the expert count as num_local_experts (num_experts is its alias)
    const char* n_experts_key = r.has("num_experts") ? "num_experts" : "num_local_experts";
    c.moe.experts = {r.req_int(n_experts_key, 0), c.base.hidden, r.req_int("moe_intermediate_size", 1)};
    c.moe.router.n_experts = c.moe.experts.n_experts;
    c.moe.router.top_k = r.req_int("num_experts_per_tok", 1);
    c.moe.router.norm_topk_prob = r.get_bool("norm_topk_prob", false);
    c.sparse_step = r.get_int("decoder_sparse_step", 1, 1);
    for (auto l : r.get_int_list("mlp_only_layers", 0)) c.mlp_only.insert(l);
    return c;
  }

  Qwen3Moe(nn::WeightSource& src, const LoadOptions& opt) : Qwen3Moe(src, opt, parse(src)) {}
  Qwen3Moe(nn::WeightSource& src, const LoadOptions& opt, Config c) : DecoderModel(src, opt, c.base), c_(std::move(c)) {
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

ESFT_REGISTER_FAMILY("Qwen3MoeForCausalLM", Qwen3Moe);

}  // namespace esft
