#include "deepseek_moe.h"

#include <fmt/ranges.h>

#include <algorithm>
#include <limits>

namespace esft::deepseek {

MoeConfig read_moe_config(const nn::ConfigReader& r, const nn::DecoderConfig& base, int64_t default_shared,
                          int64_t default_first_dense, double default_scaling) {
  MoeConfig c;
  const char* n_key = r.has("num_local_experts") ? "num_local_experts" : r.has("num_experts") ? "num_experts" : "n_routed_experts";
  const int64_t E = r.req_int(n_key, 1), inter = r.req_int("moe_intermediate_size", 1);
  c.moe.experts = {E, base.hidden, inter};
  c.n_shared = r.get_int("n_shared_experts", default_shared, 0);
  c.moe.shared = {inter * c.n_shared, "shared_experts", ""};
  auto& router = c.moe.router;
  router.n_experts = E;
  router.top_k = r.req_int("num_experts_per_tok", 1);
  router.logits_fp32 = router.weights_fp32 = true;
  router.sorted_topk = false;
  router.routed_scaling = r.get_double("routed_scaling_factor", default_scaling, 0);
  c.first_dense = r.get_int("first_k_dense_replace", default_first_dense, 0);
  if (c.first_dense >= base.n_layers)
    fail("{}: first_k_dense_replace {} leaves no MoE layer among {} layers", r.where(), c.first_dense, base.n_layers);
  if (r.get_int("moe_layer_freq", 1) != 1)
    fail("{}: moe_layer_freq {} is not supported: transformers makes every layer from first_k_dense_replace on an MoE "
         "layer (moe_layer_freq 1)",
         r.where(), r.req_int("moe_layer_freq"));
  c.n_mtp = r.get_int(r.has("num_nextn_predict_layers") ? "num_nextn_predict_layers" : "num_mtp_layers", 0, 0);
  return c;
}

void read_sigmoid_router(const nn::ConfigReader& r, int64_t default_n_group, int64_t default_topk_group,
                         nn::RouterSpec* router) {
  check_key(r, "scoring_func", {"sigmoid"});
  check_key(r, "topk_method", {"noaux_tc"});
  router->score = nn::RouterScore::Sigmoid;
  router->selection_bias = true;
  router->group_score = nn::GroupScore::Top2Sum;
  router->masked_value = -std::numeric_limits<double>::infinity();
  router->n_group = r.get_int("n_group", default_n_group, 1);
  router->topk_group = r.get_int("topk_group", default_topk_group, 1);
  router->norm_topk_prob = r.get_bool("norm_topk_prob", true);
  router->norm_eps = 1e-20;
  const int64_t E = router->n_experts, G = router->n_group;
  if (G > 1 && (E % G != 0 || E / G < 2))
    fail("{}: n_group {} must split the {} experts into groups of at least two (a group scores its best two)",
         r.where(), G, E);
}

void check_key(const nn::ConfigReader& r, const std::string& key, const std::vector<std::string>& allowed) {
  if (!r.has(key)) return;
  auto v = r.get_string(key, "");
  if (std::find(allowed.begin(), allowed.end(), v) == allowed.end())
    fail("{}: \"{}\" is \"{}\"; this architecture supports {}", r.where(), key, v, fmt::join(allowed, ", "));
}

void claim_unused_tensors(nn::WeightSource& src, const MoeConfig& c, int64_t n_layers, int64_t hidden) {
  for (int64_t j = 0; j < c.n_mtp; ++j) src.ignore_prefix(fmt::format("model.layers.{}.", n_layers + j));
  if (c.n_shared > 0) return;
  for (int64_t i = c.first_dense; i < n_layers; ++i) {
    const auto p = fmt::format("model.layers.{}.mlp.shared_experts.", i);
    for (auto [proj, shape] : {std::pair{"gate_proj", std::vector<int64_t>{0, hidden}},
                               {"up_proj", std::vector<int64_t>{0, hidden}},
                               {"down_proj", std::vector<int64_t>{hidden, 0}}})
      if (src.has(p + proj + ".weight")) src.take(p + proj + ".weight", shape);
  }
}

MlaDecoder::MlaDecoder(nn::WeightSource& src, const LoadOptions& opt, const nn::DecoderConfig& base, nn::MlaSpec mla,
                       MoeConfig moe)
    : DecoderModel(src, opt, base), mla_(std::move(mla)), moe_cfg_(std::move(moe)) {
  // prepare() builds the rope tables from attn_: fp32 ones for the complex (V2) style.
  attn_.rope_style = mla_.rope_style;
  rope_.emplace(src.config(), mla_.qk_rope_dim, src.config_where());
  claim_unused_tensors(src, moe_cfg_, cfg_.n_layers, cfg_.hidden);
}

void MlaDecoder::load_attention(int64_t layer) {
  nn::load_mla_weights(mla_, layer_prefix(layer) + "self_attn.", *src_, w_);
}

at::Tensor MlaDecoder::attention(int64_t layer, const at::Tensor& x, nn::LayerInputs& in) {
  return nn::mla_attention(mla_, layer_prefix(layer) + "self_attn.", w_, x, in.cos, in.sin,
                           in.layout(cfg_.sliding_window[layer], device()));
}

}  // namespace esft::deepseek
