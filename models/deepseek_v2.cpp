// DeepSeek-V2 (DeepseekV2ForCausalLM; DeepSeek-V2 and V2-Lite, the ESFT paper's model): multi-head
// latent attention with RoPE as complex pairs in fp32, a softmax router choosing greedily or among
// the best topk_group of n_group groups (a group scores its best expert, the others' experts
// score 0), weights times routed_scaling_factor and never renormalised, shared experts, dense
// first layers (deepseek_moe.h).
#include "deepseek_moe.h"
#include "esft/log.h"

namespace esft {
namespace {

class DeepseekV2 final : public deepseek::MlaDecoder {
 public:
  struct Config {
    nn::DecoderConfig base;
    nn::MlaSpec mla;
    deepseek::MoeConfig moe;
  };

  static Config parse(const nn::WeightSource& src) {
    nn::ConfigReader r(src.config(), src.config_where());
    Config c;
    c.base = nn::read_decoder_config(r, "DeepseekV2ForCausalLM", 1e-6);
    c.base.dense_inter = r.get_int("intermediate_size", 0, 0);
    c.base.has_aux_loss = false;
    if (r.get_bool("mlp_bias", false)) fail("{}: \"mlp_bias\": true is not supported (MLPs without biases)", r.where());
    c.mla = nn::read_mla_spec(r, c.base.hidden, nn::RopeStyle::Complex);
    c.moe = deepseek::read_moe_config(r, c.base, /*n_shared_experts=*/2, /*first_k_dense_replace=*/0, /*scaling=*/1.0);
    deepseek::check_key(r, "scoring_func", {"softmax"});
    auto& router = c.moe.moe.router;
    const auto method = r.get_string("topk_method", "greedy");
    if (method == "group_limited_greedy") {
      router.n_group = r.req_int("n_group", 1);
      router.topk_group = r.req_int("topk_group", 1);
      router.group_score = nn::GroupScore::Max;
      router.masked_value = 0.0;
    } else if (method != "greedy") {
      fail("{}: \"topk_method\" is \"{}\"; DeepSeek-V2 supports greedy, group_limited_greedy", r.where(), method);
    }
    if (r.get_bool("norm_topk_prob", false))
      log_warn(r.where() + ": norm_topk_prob is true, but transformers' DeepSeek-V2 never renormalises the gate "
                           "weights; esft follows transformers");
    return c;
  }

  DeepseekV2(nn::WeightSource& src, const LoadOptions& opt) : DeepseekV2(src, opt, parse(src)) {}
  DeepseekV2(nn::WeightSource& src, const LoadOptions& opt, Config c) : MlaDecoder(src, opt, c.base, c.mla, c.moe) {
    load_weights();
  }
};

}  // namespace

ESFT_REGISTER_FAMILY("DeepseekV2ForCausalLM", DeepseekV2);

}  // namespace esft
