#include "esft/nn/moe_block.h"

#include "esft/error.h"
#include "esft/nn/ops.h"
#include "esft/nn/param_store.h"
#include "esft/nn/weight_source.h"

namespace esft::nn {

at::Tensor gated_mlp(const ParamStore& w, const std::string& p, const at::Tensor& x) {
  auto g = nn::linear(x, w.get(p + "gate_proj.weight"));
  auto u = nn::linear(x, w.get(p + "up_proj.weight"));
  return nn::linear(at::silu(g) * u, w.get(p + "down_proj.weight"));
}

void load_gated_mlp(const std::string& p, int64_t H, int64_t I, WeightSource& src, ParamStore& store, ParamGroup g) {
  store.add(p + "gate_proj.weight", src.take(p + "gate_proj.weight", {I, H}), g);
  store.add(p + "up_proj.weight", src.take(p + "up_proj.weight", {I, H}), g);
  store.add(p + "down_proj.weight", src.take(p + "down_proj.weight", {H, I}), g);
}

MoeBlock::MoeBlock(std::string prefix, MoeSpec spec, WeightSource& src, ParamStore& store,
                   std::unique_ptr<ExpertCodec> codec, ExpertPlacement placement)
    : prefix_(std::move(prefix)), spec_(std::move(spec)), codec_(std::move(codec)),
      dispatcher_(std::make_shared<LocalDispatcher>()) {
  const auto& rs = spec_.router;
  const auto& es = spec_.experts;
  ESFT_CHECK(rs.n_experts == es.n_experts, "{}: router and experts disagree on the expert count", prefix_);
  // top_k, n_group and topk_group come from config.json (num_experts_per_tok, n_group,
  // topk_group): the errors name the file and the key.
  const auto where = src.config_where();
  ESFT_CHECK(rs.top_k >= 1 && rs.top_k <= rs.n_experts, "{}: \"num_experts_per_tok\" is {}; it must be in [1, {}] (the experts of {})",
             where, rs.top_k, rs.n_experts, prefix_);
  ESFT_CHECK(rs.n_group >= 1 && rs.topk_group >= 1 && rs.topk_group <= rs.n_group,
             "{}: \"topk_group\" is {}; it must be in [1, n_group] (n_group {})", where, rs.topk_group, rs.n_group);
  if (rs.n_group > 1)
    ESFT_CHECK(rs.n_experts % rs.n_group == 0 && rs.top_k <= rs.topk_group * (rs.n_experts / rs.n_group),
               "{}: \"n_group\" {} with \"topk_group\" {} cannot route top-{} of {} experts (n_group must divide the "
               "experts and the best topk_group groups must hold at least num_experts_per_tok experts)",
               where, rs.n_group, rs.topk_group, rs.top_k, rs.n_experts);
  const std::string r = prefix_ + spec_.router_name + ".";
  store.add(r + "weight", src.take(r + "weight", {es.n_experts, es.hidden}));
  if (rs.router_bias) store.add(r + "bias", src.take(r + "bias", {es.n_experts}));
  if (rs.selection_bias)
    store.add(r + "e_score_correction_bias", src.take(r + "e_score_correction_bias", {es.n_experts}), ParamGroup::Never,
              /*keep_fp32=*/true);
  if (spec_.shared.inter > 0) {
    load_gated_mlp(prefix_ + spec_.shared.name + ".", es.hidden, spec_.shared.inter, src, store,
                   ParamGroup::SharedExpert);
    if (!spec_.shared.gate_name.empty()) {
      auto g = prefix_ + spec_.shared.gate_name + ".weight";
      store.add(g, src.take(g, {1, es.hidden}), ParamGroup::SharedExpert);
    }
  }
  if (!codec_) codec_ = std::make_unique<GatedExpertCodec>(prefix_ + "experts", es, spec_.naming);
  at::ScalarType orig;
  auto held = placement.owner.empty() ? codec_->load(src, store.device(), store.dtype(), &orig)
                                      : codec_->load_experts(src, store.device(), store.dtype(), &orig,
                                                             placement.held(es.n_experts));
  banks_ = std::make_unique<ExpertBanks>(es, std::move(held), orig, std::move(placement));
}

at::Tensor MoeBlock::forward(const at::Tensor& x, const ParamStore& w, RouterOutput* routing) const {
  const std::string r = prefix_ + spec_.router_name + ".";
  RouterWeights rw{w.get(r + "weight"), spec_.router.router_bias ? w.get(r + "bias") : at::Tensor(),
                   spec_.router.selection_bias ? w.get(r + "e_score_correction_bias") : at::Tensor()};
  *routing = route(spec_.router, x, rw);
  auto slot = banks_->slot_of_expert().index_select(0, routing->ids_TK.reshape({-1})).view_as(routing->ids_TK);
  DispatchPlan plan;
  auto rows = dispatcher_->dispatch(x, slot, banks_->n_slots(), banks_->needs_host_counts(x), &plan);
  auto y = dispatcher_->combine(banks_->compute(rows, plan.counts_E, plan.host_counts), routing->weights_TK, plan);
  if (spec_.shared.inter > 0) {
    auto s = gated_mlp(w, prefix_ + spec_.shared.name + ".", x);
    if (!spec_.shared.gate_name.empty()) s = at::sigmoid(nn::linear(x, w.get(prefix_ + spec_.shared.gate_name + ".weight"))) * s;
    y = y + s;
  }
  return y;
}

int64_t MoeBlock::params_per_expert() const {
  const auto& e = spec_.experts;
  return 3 * e.inter * e.hidden + (e.bias ? 2 * e.inter + e.hidden : 0);
}

}  // namespace esft::nn
