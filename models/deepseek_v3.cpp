// DeepSeek-V3 / R1 (DeepseekV3ForCausalLM): multi-head latent attention with RoPE on interleaved
// pairs (rope_interleave, default true; else halves), the sigmoid router with selection bias and
// groups (deepseek_moe.h), shared experts, dense first layers. The official checkpoints are
// block-FP8; CheckpointWeights dequantizes them to bf16.
#include "deepseek_moe.h"

namespace esft {
namespace {

class DeepseekV3 final : public deepseek::MlaDecoder {
 public:
  struct Config {
    nn::DecoderConfig base;
    nn::MlaSpec mla;
    deepseek::MoeConfig moe;
  };

  static Config parse(const nn::WeightSource& src) {
    nn::ConfigReader r(src.config(), src.config_where());
    Config c;
    c.base = nn::read_decoder_config(r, "DeepseekV3ForCausalLM", 1e-6);
    c.base.dense_inter = r.get_int("intermediate_size", 0, 0);
    c.base.has_aux_loss = false;
    const bool interleave = r.get_bool("rope_interleave", true);
    c.mla = nn::read_mla_spec(r, c.base.hidden, interleave ? nn::RopeStyle::Interleaved : nn::RopeStyle::Half);
    c.moe = deepseek::read_moe_config(r, c.base, /*n_shared_experts=*/1, /*first_k_dense_replace=*/3, /*scaling=*/2.5);
    deepseek::read_sigmoid_router(r, /*n_group=*/8, /*topk_group=*/4, &c.moe.moe.router);
    return c;
  }

  DeepseekV3(nn::WeightSource& src, const LoadOptions& opt) : DeepseekV3(src, opt, parse(src)) {}
  DeepseekV3(nn::WeightSource& src, const LoadOptions& opt, Config c) : MlaDecoder(src, opt, c.base, c.mla, c.moe) {
    load_weights();
  }
};

}  // namespace

ESFT_REGISTER_FAMILY("DeepseekV3ForCausalLM", DeepseekV3);

}  // namespace esft
