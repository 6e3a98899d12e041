// OLMoE (OlmoeForCausalLM): attention with q/k RMSNorm over the whole projection width (before
// the head split) and optional clip_qkv, softmax top-k router (norm_topk_prob), every layer MoE,
// pad_token_id 1 by default.
#include "esft/nn/decoder.h"

namespace esft {
namespace {

class Olmoe final : public nn::DecoderModel {
 public:
  struct Config {
    nn::DecoderConfig base;
    nn::AttentionSpec attn;
    nn::MoeSpec moe;
  };

  static Config parse(const nn::WeightSource& src) {
    nn::ConfigReader r(src.config(), src.config_where());
    Config c;
    c.base = nn::read_decoder_config(r, "OlmoeForCausalLM", 1e-5, /*default_pad=*/1);
    c.base.aux_coef = r.get_double("router_aux_loss_coef", 0.01, 0);
    c.attn = nn::read_attention_heads(r, c.base.hidden);
    c.attn.q_bias = c.attn.k_bias = c.attn.v_bias = c.attn.o_bias = r.get_bool("attention_bias", false);
    c.attn.qk_norm = nn::QkNorm::FullWidth;
    c.attn.norm_eps = c.base.rms_eps;
    c.attn.clip_qkv = r.get_double("clip_qkv", 0, 0);
    c.moe.experts = {r.req_int("num_experts", 1), c.base.hidden, r.req_int("intermediate_size", 1)};
    c.moe.router.n_experts = c.moe.experts.n_experts;
    c.moe.router.top_k = r.req_int("num_experts_per_tok", 1);
    c.moe.router.norm_topk_prob = r.get_bool("norm_topk_prob", false);
    return c;
  }

  Olmoe(nn::WeightSource& src, const LoadOptions& opt) : Olmoe(src, opt, parse(src)) {}
  Olmoe(nn::WeightSource& src, const LoadOptions& opt, Config c) : DecoderModel(src, opt, c.base), c_(std::move(c)) {
    attn_ = c_.attn;
    rope_.emplace(src.config(), attn_.head_dim, src.config_where());
    load_weights();
  }

 private:
  std::optional<nn::MoeSpec> moe_spec(int64_t) const override { return c_.moe; }
  Config c_;
};

}  // namespace

ESFT_REGISTER_FAMILY("OlmoeForCausalLM", Olmoe);

}  // namespace esft
