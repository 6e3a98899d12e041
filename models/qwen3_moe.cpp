// Qwen3-MoE (Qwen3MoeForCausalLM), exactly as transformers 5.17 computes it:
// embeddings -> [RMSNorm -> attention with per-head q/k RMSNorm, RoPE, GQA, causal mask ->
// residual -> RMSNorm -> MoE (softmax router, top-k, optional renormalisation) or dense SwiGLU
// MLP (mlp_only_layers / decoder_sparse_step) -> residual] x L -> RMSNorm -> lm_head.
//
// HF tensor names (per decoder layer i, prefix model.layers.i.):
//   input_layernorm.weight [H], post_attention_layernorm.weight [H]
//   self_attn.{q,k,v,o}_proj.weight (+ .bias with attention_bias), self_attn.{q,k}_norm.weight [D]
//   MoE layer:   mlp.gate.weight [E,H]; mlp.experts.{e}.{gate,up}_proj.weight [I,H], down_proj [H,I]
//                (or fused v5 mlp.experts.gate_up_proj [E,2I,H], mlp.experts.down_proj [E,H,I])
//   dense layer: mlp.{gate,up}_proj.weight [Id,H], mlp.down_proj.weight [H,Id]
// plus model.embed_tokens.weight [V,H], model.norm.weight [H], lm_head.weight [V,H] (unless tied).
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <set>

#include "esft/error.h"
#include "esft/log.h"
#include "esft/model.h"
#include "esft/nn/config.h"
#include "esft/nn/moe.h"
#include "esft/nn/ops.h"
#include "esft/nn/param_store.h"
#include "esft/safetensors.h"
#include "esft/tensor_io.h"

namespace esft {
namespace {

struct Qwen3MoeConfig {
  int64_t vocab, hidden, inter, n_layers, n_heads, n_kv, head_dim, moe_inter, n_experts, top_k;
  int64_t sparse_step, sliding_window = 0, pad_id = -1;
  double eps, aux_coef;
  bool norm_topk_prob, attention_bias, tie_embeddings;
  std::set<int64_t> mlp_only;

  static Qwen3MoeConfig parse(const nlohmann::json& j, const std::string& where) {
    nn::ConfigReader r(j, where);
    Qwen3MoeConfig c;
    c.vocab = r.req_int("vocab_size");
    c.hidden = r.req_int("hidden_size");
    c.inter = r.get_int("intermediate_size", 0);
    c.n_layers = r.req_int("num_hidden_layers");
    c.n_heads = r.req_int("num_attention_heads");
    c.n_kv = r.get_int("num_key_value_heads", c.n_heads);
    c.head_dim = r.get_int("head_dim", c.hidden / c.n_heads);
    c.moe_inter = r.req_int("moe_intermediate_size");
    // v5 saves the expert count as num_local_experts (num_experts is an alias of it)
    c.n_experts = r.has("num_experts") ? r.req_int("num_experts") : r.req_int("num_local_experts");
    c.top_k = r.req_int("num_experts_per_tok");
    c.sparse_step = r.get_int("decoder_sparse_step", 1);
    c.eps = r.get_double("rms_norm_eps", 1e-6);
    c.aux_coef = r.get_double("router_aux_loss_coef", 0.001);
    c.norm_topk_prob = r.get_bool("norm_topk_prob", false);
    c.attention_bias = r.get_bool("attention_bias", false);
    c.tie_embeddings = r.get_bool("tie_word_embeddings", false);
    c.pad_id = r.get_int("pad_token_id", -1);
    for (auto l : r.get_int_list("mlp_only_layers")) c.mlp_only.insert(l);
    if (r.get_bool("use_sliding_window", false)) c.sliding_window = r.get_int("sliding_window", 0);
    std::string act = r.get_string("hidden_act", "silu");
    if (act != "silu") fail("{}: hidden_act \"{}\" is not supported (silu)", where, act);
    if (c.n_heads % c.n_kv != 0) fail("{}: num_attention_heads must be a multiple of num_key_value_heads", where);
    if (c.top_k > c.n_experts) fail("{}: num_experts_per_tok > num_experts", where);
    return c;
  }
  bool is_moe(int64_t i) const {
    return !mlp_only.count(i) && n_experts > 0 && (i + 1) % sparse_step == 0;
  }
};

bool no_decay(const std::string& name) {
  return name.find("norm") != std::string::npos || (name.size() >= 5 && name.compare(name.size() - 5, 5, ".bias") == 0);
}

class Qwen3Moe final : public MoeModel {
 public:
  Qwen3Moe(const Checkpoint& ckpt, const LoadOptions& opt)
      : c_(Qwen3MoeConfig::parse(ckpt.config(), (ckpt.dir() / "config.json").string())),
        dev_(opt.device),
        dtype_(opt.dtype),
        w_(dev_, dtype_),
        rope_(ckpt.config(), c_.head_dim, (ckpt.dir() / "config.json").string()) {
    load(ckpt);
  }

  std::string architecture() const override { return "Qwen3MoeForCausalLM"; }
  std::vector<int> moe_layers() const override {
    std::vector<int> out;
    for (int64_t i = 0; i < c_.n_layers; ++i)
      if (c_.is_moe(i)) out.push_back(int(i));
    return out;
  }
  int n_routed_experts() const override { return int(c_.n_experts); }
  int top_k() const override { return int(c_.top_k); }
  const at::Device& device() const override { return dev_; }
  int64_t active_parameters() const override {
    int64_t n = 0;
    for (auto& t : w_.export_tensors(false)) n += t.tensor.numel();
    return n + int64_t(experts_.size()) * c_.top_k * 3 * c_.moe_inter * c_.hidden;
  }

  ForwardOutput forward(const Batch& batch, const ForwardOptions& opt) override;
  void configure_training(const ExpertSelection& sel) override;
  std::vector<TrainableTensor> trainable_tensors() override;
  std::vector<HfTensor> adapter_tensors() override { return export_tensors(true); }
  std::vector<HfTensor> full_tensors() override { return export_tensors(false); }
  void load_adapter_tensors(const std::map<std::string, at::Tensor>& tensors) override;

 private:
  std::string lp(int64_t i) const { return fmt::format("model.layers.{}.", i); }
  void load(const Checkpoint& ckpt);
  at::Tensor attention(int64_t i, const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin,
                       const at::Tensor& mask);
  std::vector<HfTensor> export_tensors(bool only_trainable) const;

  Qwen3MoeConfig c_;
  at::Device dev_;
  at::ScalarType dtype_;
  nn::ParamStore w_;
  nn::Rope rope_;
  std::map<int64_t, std::unique_ptr<nn::ExpertBanks>> experts_;  // by MoE layer index
};

void Qwen3Moe::load(const Checkpoint& ckpt) {
  std::set<std::string> used;
  auto take = [&](const std::string& name, std::vector<int64_t> shape) {
    auto t = load_tensor(ckpt, name);
    if (t.sizes() != at::IntArrayRef(shape))
      fail("{}: tensor {} has shape [{}], expected [{}] from config.json", ckpt.dir().string(), name,
           fmt::join(t.sizes(), ", "), fmt::join(shape, ", "));
    used.insert(name);
    return t;
  };
  auto add = [&](const std::string& name, std::vector<int64_t> shape) {
    w_.add(name, take(name, std::move(shape)), !no_decay(name));
  };
  const int64_t H = c_.hidden, D = c_.head_dim, E = c_.n_experts, I = c_.moe_inter;
  add("model.embed_tokens.weight", {c_.vocab, H});
  for (int64_t i = 0; i < c_.n_layers; ++i) {
    auto p = lp(i);
    add(p + "input_layernorm.weight", {H});
    add(p + "post_attention_layernorm.weight", {H});
    add(p + "self_attn.q_proj.weight", {c_.n_heads * D, H});
    add(p + "self_attn.k_proj.weight", {c_.n_kv * D, H});
    add(p + "self_attn.v_proj.weight", {c_.n_kv * D, H});
    add(p + "self_attn.o_proj.weight", {H, c_.n_heads * D});
    if (c_.attention_bias) {
      add(p + "self_attn.q_proj.bias", {c_.n_heads * D});
      add(p + "self_attn.k_proj.bias", {c_.n_kv * D});
      add(p + "self_attn.v_proj.bias", {c_.n_kv * D});
      add(p + "self_attn.o_proj.bias", {H});
    }
    add(p + "self_attn.q_norm.weight", {D});
    add(p + "self_attn.k_norm.weight", {D});
    if (!c_.is_moe(i)) {
      if (c_.inter <= 0) fail("{}: layer {} is dense but intermediate_size is not set", ckpt.dir().string(), i);
      add(p + "mlp.gate_proj.weight", {c_.inter, H});
      add(p + "mlp.up_proj.weight", {c_.inter, H});
      add(p + "mlp.down_proj.weight", {H, c_.inter});
      continue;
    }
    add(p + "mlp.gate.weight", {E, H});
    auto ep = p + "mlp.experts";
    at::Tensor gate_up, down;
    at::ScalarType orig;
    if (ckpt.has(ep + ".gate_up_proj")) {  // fused v5 layout
      gate_up = take(ep + ".gate_up_proj", {E, 2 * I, H});
      down = take(ep + ".down_proj", {E, H, I});
      orig = gate_up.scalar_type();
      gate_up = gate_up.to(dev_, dtype_);
      down = down.to(dev_, dtype_);
    } else {  // per-expert layout, stacked straight into device banks
      gate_up = at::empty({E, 2 * I, H}, at::TensorOptions().dtype(dtype_).device(dev_));
      down = at::empty({E, H, I}, at::TensorOptions().dtype(dtype_).device(dev_));
      orig = at::kFloat;
      for (int64_t e = 0; e < E; ++e) {
        auto q = fmt::format("{}.{}.", ep, e);
        auto g = take(q + "gate_proj.weight", {I, H});
        orig = g.scalar_type();
        gate_up[e].narrow(0, 0, I).copy_(g);
        gate_up[e].narrow(0, I, I).copy_(take(q + "up_proj.weight", {I, H}));
        down[e].copy_(take(q + "down_proj.weight", {H, I}));
      }
    }
    experts_[i] = std::make_unique<nn::ExpertBanks>(ep, gate_up, down, orig);
  }
  add("model.norm.weight", {H});
  if (!c_.tie_embeddings) add("lm_head.weight", {c_.vocab, H});
  else if (ckpt.has("lm_head.weight")) used.insert("lm_head.weight");  // tied: the embedding is used
  for (auto& n : ckpt.names())
    if (!used.count(n))
      fail("{}: tensor {} is not part of a Qwen3MoeForCausalLM with this config.json (wrong architecture or "
           "corrupt checkpoint?)",
           ckpt.dir().string(), n);
}

at::Tensor Qwen3Moe::attention(int64_t i, const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin,
                               const at::Tensor& mask) {
  auto p = lp(i) + "self_attn.";
  const int64_t B = x.size(0), S = x.size(1), D = c_.head_dim;
  auto q = nn::linear(x, w_.get(p + "q_proj.weight"), w_.get_opt(p + "q_proj.bias")).view({B, S, -1, D});
  auto k = nn::linear(x, w_.get(p + "k_proj.weight"), w_.get_opt(p + "k_proj.bias")).view({B, S, -1, D});
  auto v = nn::linear(x, w_.get(p + "v_proj.weight"), w_.get_opt(p + "v_proj.bias")).view({B, S, -1, D});
  q = nn::rms_norm(q, w_.get(p + "q_norm.weight"), c_.eps).transpose(1, 2);
  k = nn::rms_norm(k, w_.get(p + "k_norm.weight"), c_.eps).transpose(1, 2);
  v = v.transpose(1, 2);
  q = nn::apply_rope(q, cos, sin);
  k = nn::apply_rope(k, cos, sin);
  auto o = nn::attention(q, k, v, mask, 1.0 / std::sqrt(double(D)));
  return nn::linear(o, w_.get(p + "o_proj.weight"), w_.get_opt(p + "o_proj.bias"));
}

ForwardOutput Qwen3Moe::forward(const Batch& batch, const ForwardOptions& opt) {
  auto ids = batch.input_ids.to(dev_);
  const int64_t B = ids.size(0), S = ids.size(1), H = c_.hidden;
  auto pos = batch.position_ids.defined() ? batch.position_ids.to(dev_)
                                          : at::arange(S, ids.options()).unsqueeze(0).expand({B, S});
  at::Tensor doc = batch.doc_ids.defined() ? batch.doc_ids.to(dev_) : at::Tensor();
  at::Tensor valid_T;  // rows that are real tokens, when there is padding
  if (doc.defined()) valid_T = (doc.reshape({-1}) >= 0);

  auto h = at::embedding(w_.get("model.embed_tokens.weight"), ids, c_.pad_id);
  auto [cos, sin] = rope_.cos_sin(pos, dtype_);
  auto mask = nn::attention_mask(doc, S, c_.sliding_window, dev_);
  std::vector<at::Tensor> router_logits;

  for (int64_t i = 0; i < c_.n_layers; ++i) {
    auto p = lp(i);
    h = h + attention(i, nn::rms_norm(h, w_.get(p + "input_layernorm.weight"), c_.eps), cos, sin, mask);
    auto x = nn::rms_norm(h, w_.get(p + "post_attention_layernorm.weight"), c_.eps);
    at::Tensor y;
    if (c_.is_moe(i)) {
      auto x_TH = x.reshape({-1, H});
      auto r = nn::softmax_topk_router(x_TH, w_.get(p + "mlp.gate.weight"), c_.top_k, c_.norm_topk_prob);
      if (opt.observer) {
        at::NoGradGuard ng;
        auto rid = r.ids_TK, rw = r.weights_TK.to(at::kFloat);
        if (valid_T.defined()) rid = rid.index({valid_T}), rw = rw.index({valid_T});
        opt.observer->on_routing(int(i), rid, rw);
      }
      if (opt.router_aux_loss) router_logits.push_back(r.logits_TE);
      y = experts_.at(i)->forward(x_TH, r.ids_TK, r.weights_TK).view({B, S, H});
    } else {
      auto g = at::linear(x, w_.get(p + "mlp.gate_proj.weight"));
      auto u = at::linear(x, w_.get(p + "mlp.up_proj.weight"));
      y = at::linear(at::silu(g) * u, w_.get(p + "mlp.down_proj.weight"));
    }
    h = h + y;
  }
  h = nn::rms_norm(h, w_.get("model.norm.weight"), c_.eps);
  auto logits = at::linear(h, w_.get(c_.tie_embeddings ? "model.embed_tokens.weight" : "lm_head.weight"));

  ForwardOutput out;
  if (batch.labels.defined()) out.loss_sum = nn::causal_lm_loss_sum(logits, batch.labels.to(dev_), &out.n_loss_tokens);
  if (opt.router_aux_loss && !router_logits.empty()) {
    out.aux_loss = nn::load_balancing_loss(router_logits, c_.n_experts, c_.top_k, valid_T);
    // HF adds coef * aux to the mean loss; in sum form that is coef * aux * n_tokens.
    if (out.loss_sum.defined()) out.loss_sum = out.loss_sum + c_.aux_coef * out.aux_loss.to(at::kFloat) * double(out.n_loss_tokens);
  }
  if (opt.return_logits) out.logits = logits.to(at::kFloat);
  return out;
}

void Qwen3Moe::configure_training(const ExpertSelection& sel) {
  auto moe = moe_layers();
  for (auto& [layer, ids] : sel.experts)
    if (!experts_.count(layer))
      fail("expert config names layer {}, which is not an MoE layer of this model (MoE layers: {})", layer,
           fmt::join(moe, ", "));
  for (auto& [layer, banks] : experts_) {
    auto it = sel.experts.find(int(layer));
    banks->split(it == sel.experts.end() ? std::vector<int>{} : it->second);
  }
  if (sel.shared_experts) log_warn("Qwen3-MoE has no shared experts: \"shared_experts\": true has no effect");
  if (sel.non_expert_modules) w_.set_all_trainable({""});
}

std::vector<TrainableTensor> Qwen3Moe::trainable_tensors() {
  auto out = w_.trainable();
  for (auto& [layer, banks] : experts_)
    for (auto& t : banks->trainable()) out.push_back(t);
  return out;
}

std::vector<HfTensor> Qwen3Moe::export_tensors(bool only_trainable) const {
  auto out = w_.export_tensors(only_trainable);
  for (auto& [layer, banks] : experts_)
    for (auto& t : banks->export_tensors(only_trainable)) out.push_back(t);
  return out;
}

void Qwen3Moe::load_adapter_tensors(const std::map<std::string, at::Tensor>& tensors) {
  std::map<std::pair<int64_t, int64_t>, std::map<std::string, at::Tensor>> per_expert;
  for (auto& [name, t] : tensors) {
    if (w_.has(name)) {
      w_.load(name, t);
      continue;
    }
    long long layer, e;
    char proj[16];
    int n = 0;
    if (std::sscanf(name.c_str(), "model.layers.%lld.mlp.experts.%lld.%15[a-z]_proj.weight%n", &layer, &e, proj, &n) == 3 &&
        n == int(name.size()) && experts_.count(layer)) {
      per_expert[{layer, e}][proj] = t;
      continue;
    }
    fail("adapter tensor {} does not exist in this model", name);
  }
  for (auto& [key, m] : per_expert) {
    if (!m.count("gate") || !m.count("up") || !m.count("down"))
      fail("adapter holds only part of expert {} of layer {} (need gate_proj, up_proj and down_proj)", key.second,
           key.first);
    experts_.at(key.first)->load_expert(key.second, m["gate"], m["up"], m["down"]);
  }
}

ModelRegistrar reg("Qwen3MoeForCausalLM", [](const Checkpoint& ckpt, const LoadOptions& opt) {
  return std::unique_ptr<MoeModel>(new Qwen3Moe(ckpt, opt));
});

}  // namespace
}  // namespace esft
