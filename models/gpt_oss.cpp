// GPT-OSS (GptOssForCausalLM; gpt-oss-20b / 120b), as transformers 5.17's modeling_gpt_oss.py:
// - attention with q/k/v/o biases and a learned sink logit per head, sliding-window layers
//   alternating with full ones (layer_types; default: even layers sliding), head_dim 64 by default,
//   YaRN RoPE (default yarn, factor 32, truncate false, theta 150000);
// - RMSNorm whose weight stays fp32 and multiplies in fp32 (_keep_in_fp32_modules);
// - router mlp.router with a bias, top-k on the logits, softmax over the k (routed experts only);
// - experts with biases and the clamped SwiGLU (alpha 1.702, limit 7.0, the +1 on up), as
//   transformers' GptOssExperts hard-codes them; checkpoints in bf16 or MXFP4 (gpt_oss_experts.h).
#include <cmath>

#include "esft/log.h"
#include "esft/nn/decoder.h"
#include "esft/nn/ops.h"
#include "gpt_oss_experts.h"

namespace esft {
namespace {

// transformers' GptOssConfig defaults where config.json is silent.
constexpr int64_t kDefaultHeadDim = 64, kDefaultWindow = 128;
constexpr double kDefaultTheta = 150000.0, kAlpha = 1.702, kLimit = 7.0;

class GptOss final : public nn::DecoderModel {
 public:
  struct Config {
    nn::DecoderConfig base;
    nn::AttentionSpec attn;
    nn::MoeSpec moe;
    nlohmann::json rope;  // config.json with transformers' RoPE defaults filled in
  };

  static Config parse(const nn::WeightSource& src) {
    nn::ConfigReader r(src.config(), src.config_where());
    Config c;
    c.base = nn::read_decoder_config(r, "GptOssForCausalLM", 1e-5);
    c.base.norms_fp32 = true;
    // layer_types: explicit, or transformers' default (sliding for even layers).
    const int64_t window = r.json().contains("sliding_window") ? r.get_int("sliding_window", 0, 1) : kDefaultWindow;
    if (r.has("layer_types")) {
      c.base.sliding_window = nn::read_layer_windows(r, c.base.n_layers, window);
    } else {
      ESFT_CHECK(window > 0, "{}: sliding_window is null, but without layer_types every even layer slides", r.where());
      for (int64_t i = 0; i < c.base.n_layers; ++i) c.base.sliding_window.push_back(i % 2 == 0 ? window : 0);
    }
    nlohmann::json heads = src.config();
    if (!r.has("head_dim")) heads["head_dim"] = kDefaultHeadDim;
    c.attn = nn::read_attention_heads(nn::ConfigReader(heads, r.where()), c.base.hidden);
    c.attn.q_bias = c.attn.k_bias = c.attn.v_bias = c.attn.o_bias = r.get_bool("attention_bias", true);
    c.attn.sinks = true;
    c.rope = with_rope_defaults(src.config(), r.where());

    const char* n_experts_key = r.has("num_local_experts") ? "num_local_experts" : "num_experts";
    auto& e = c.moe.experts;
    e = {r.req_int(n_experts_key, 1), c.base.hidden, r.req_int("intermediate_size", 1)};
    e.activation = nn::ExpertActivation::ClampedSwiGLU;
    e.alpha = kAlpha, e.limit = kLimit, e.bias = true;
    for (auto [key, used] : {std::pair{"swiglu_limit", kLimit}, {"swiglu_alpha", kAlpha}})
      if (r.has(key) && r.get_double(key, used) != used)
        log_warn(fmt::format("{}: {} is {}; transformers' GptOssExperts (and esft) use {}", r.where(), key,
                             r.json()[key].dump(), used));
    c.moe.router.n_experts = e.n_experts;
    c.moe.router.top_k = r.req_int("num_experts_per_tok", 1);
    c.moe.router.score = nn::RouterScore::SoftmaxOfTopK;
    c.moe.router.router_bias = true;
    c.moe.router_name = "router";
    return c;
  }

  GptOss(nn::WeightSource& src, const LoadOptions& opt) : GptOss(src, opt, parse(src)) {}
  GptOss(nn::WeightSource& src, const LoadOptions& opt, Config c) : DecoderModel(src, opt, c.base), c_(std::move(c)) {
    attn_ = c_.attn;
    rope_.emplace(c_.rope, attn_.head_dim, src.config_where());
    load_weights();
  }

  // The full export writes MXFP4 experts dequantized: the checkpoint is no longer quantized.
  void export_config(nlohmann::json& config) const override {
    if (config.contains("quantization_config")) config.erase("quantization_config");
  }

 private:
  // transformers' GptOssConfig: rope_parameters default to YaRN (factor 32, beta 32/1, truncate
  // false, original 4096 positions) and rope_theta to 150000.
  static nlohmann::json with_rope_defaults(nlohmann::json cfg, const std::string& where) {
    nn::rope_type(cfg, where);  // a rope_parameters / rope_scaling that is no object fails, not replaced
    auto is_obj = [&](const char* k) { return cfg.contains(k) && cfg[k].is_object(); };
    if (!is_obj("rope_parameters") && !is_obj("rope_scaling"))
      cfg["rope_parameters"] = {{"rope_type", "yarn"}, {"factor", 32.0}, {"beta_fast", 32.0}, {"beta_slow", 1.0},
                                {"truncate", false}, {"original_max_position_embeddings", 4096}};
    // absent only: an explicit 0 is an error (Rope's check), not the default
    if (std::isnan(nn::rope_setting(cfg, "rope_theta", NAN, where))) cfg["rope_theta"] = kDefaultTheta;
    return cfg;
  }

  std::optional<nn::MoeSpec> moe_spec(int64_t) const override { return c_.moe; }
  std::unique_ptr<nn::ExpertCodec> expert_codec(int64_t layer, const nn::MoeSpec& spec) const override {
    return std::make_unique<nn::GptOssExpertCodec>(layer_prefix(layer) + spec.module + ".experts", spec.experts);
  }
  at::Tensor norm(const std::string& name, const at::Tensor& x) const override {
    return nn::rms_norm_fp32_weight(x, w_.get(name), cfg_.rms_eps);
  }
  Config c_;
};

}  // namespace

ESFT_REGISTER_FAMILY("GptOssForCausalLM", GptOss);

}  // namespace esft
