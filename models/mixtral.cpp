// Mixtral (MixtralForCausalLM): Llama attention (optional sliding window on every layer), a
// softmax top-k router whose weights are always renormalised and kept in fp32, every layer MoE.
// Checkpoints name the block block_sparse_moe with experts w1 (gate), w3 (up), w2 (down), or
// carry transformers 5's fused mlp.experts tensors.
#include "esft/log.h"
#include "esft/nn/decoder.h"

namespace esft {
namespace {

class Mixtral final : public nn::DecoderModel {
 public:
  struct Config {
    nn::DecoderConfig base;
    nn::AttentionSpec attn;
    nn::MoeSpec moe;
  };

  static Config parse(const nn::WeightSource& src) {
    nn::ConfigReader r(src.config(), src.config_where());
    Config c;
    c.base = nn::read_decoder_config(r, "MixtralForCausalLM", 1e-5);
    if (int64_t w = r.get_int("sliding_window", 0, 1)) c.base.sliding_window.assign(c.base.n_layers, w);
    c.attn = nn::read_attention_heads(r, c.base.hidden);
    const char* n_experts_key = r.has("num_local_experts") ? "num_local_experts" : "num_experts";
    c.moe.experts = {r.req_int(n_experts_key, 1), c.base.hidden, r.req_int("intermediate_size", 1)};
    c.moe.router.n_experts = c.moe.experts.n_experts;
    c.moe.router.top_k = r.req_int("num_experts_per_tok", 1);
    c.moe.router.norm_topk_prob = true;
    c.moe.router.weights_fp32 = true;
    if (r.get_double("router_jitter_noise", 0, 0) > 0)
      log_warn(r.where() + ": router_jitter_noise is ignored (esft trains deterministically, without router noise)");
    return c;
  }

  Mixtral(nn::WeightSource& src, const LoadOptions& opt) : Mixtral(src, opt, parse(src)) {}
  Mixtral(nn::WeightSource& src, const LoadOptions& opt, Config c) : DecoderModel(src, opt, c.base), c_(std::move(c)) {
    attn_ = c_.attn;
    rope_.emplace(src.config(), attn_.head_dim, src.config_where());
    load_weights();
  }

 private:
  std::optional<nn::MoeSpec> moe_spec(int64_t i) const override {
    auto spec = c_.moe;
    if (src_->has(layer_prefix(i) + "block_sparse_moe.gate.weight")) {  // the released checkpoints' names
      spec.module = "block_sparse_moe";
      spec.naming = {"w1", "w3", "w2"};
    }
    return spec;
  }
  Config c_;
};

}  // namespace

ESFT_REGISTER_FAMILY("MixtralForCausalLM", Mixtral);

}  // namespace esft
