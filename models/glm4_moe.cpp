// GLM-4.5 / 4.6 MoE (Glm4MoeForCausalLM): GQA attention with partial rotary (the first
// int(head_dim * partial_rotary_factor) channels, default factor 0.5, halves style), optional
// per-head q/k RMSNorm (use_qk_norm), q/k/v biases with attention_bias and never an o_proj bias;
// DeepSeek-V3's sigmoid router, shared experts and dense first layers (deepseek_moe.h).
#include "deepseek_moe.h"

namespace esft {
namespace {

class Glm4Moe final : public nn::DecoderModel {
 public:
  struct Config {
    nn::DecoderConfig base;
    nn::AttentionSpec attn;
    int64_t rotary_dim = 0;
    deepseek::MoeConfig moe;
  };

  static Config parse(const nn::WeightSource& src) {
    nn::ConfigReader r(src.config(), src.config_where());
    Config c;
    c.base = nn::read_decoder_config(r, "Glm4MoeForCausalLM", 1e-5);
    c.base.dense_inter = r.get_int("intermediate_size", 0, 0);
    c.base.has_aux_loss = false;
    c.attn = nn::read_attention_heads(r, c.base.hidden);
    c.attn.q_bias = c.attn.k_bias = c.attn.v_bias = r.get_bool("attention_bias", false);
    if (r.get_bool("use_qk_norm", false)) c.attn.qk_norm = nn::QkNorm::PerHead;
    c.attn.norm_eps = c.base.rms_eps;
    const double partial = nn::rope_setting(r.json(), "partial_rotary_factor", 0.5);
    if (!(partial > 0 && partial <= 1))
      fail("{}: partial_rotary_factor must be in (0, 1], not {}", r.where(), partial);
    c.rotary_dim = int64_t(double(c.attn.head_dim) * partial);  // int() as transformers truncates
    c.moe = deepseek::read_moe_config(r, c.base, /*n_shared_experts=*/1, /*first_k_dense_replace=*/1, /*scaling=*/1.0);
    deepseek::read_sigmoid_router(r, /*n_group=*/1, /*topk_group=*/1, &c.moe.moe.router);
    return c;
  }

  Glm4Moe(nn::WeightSource& src, const LoadOptions& opt) : Glm4Moe(src, opt, parse(src)) {}
  Glm4Moe(nn::WeightSource& src, const LoadOptions& opt, Config c) : DecoderModel(src, opt, c.base), c_(std::move(c)) {
    attn_ = c_.attn;
    rope_.emplace(src.config(), c_.rotary_dim, src.config_where());
    deepseek::claim_unused_tensors(src, c_.moe, cfg_.n_layers, cfg_.hidden);
    load_weights();
  }

 private:
  std::optional<nn::MoeSpec> moe_spec(int64_t i) const override { return c_.moe.spec_of(i); }
  Config c_;
};

}  // namespace

ESFT_REGISTER_FAMILY("Glm4MoeForCausalLM", Glm4Moe);

}  // namespace esft
