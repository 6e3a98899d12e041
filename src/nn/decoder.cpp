#include "esft/nn/decoder.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "esft/error.h"
#include "esft/log.h"
#include "esft/nn/checkpoint.h"
#include "esft/nn/lm_loss.h"
#include "esft/nn/ops.h"

namespace esft::nn {

DecoderConfig read_decoder_config(const ConfigReader& r, const std::string& arch, double default_eps, int64_t default_pad) {
  DecoderConfig c;
  c.architecture = arch;
  c.vocab = r.req_int("vocab_size", 1);
  c.hidden = r.req_int("hidden_size", 1);
  c.n_layers = r.req_int("num_hidden_layers", 1);
  c.rms_eps = r.get_double("rms_norm_eps", default_eps, 1e-12, 0.1);
  c.tie_embeddings = r.get_bool("tie_word_embeddings", false);
  // pad_token_id null means none; absent means the family's default
  c.pad_id = r.json().contains("pad_token_id") ? r.get_int("pad_token_id", -1, 0) : default_pad;
  if (c.pad_id >= c.vocab) fail("{}: \"pad_token_id\" {} is outside the vocabulary (vocab_size {})", r.where(), c.pad_id, c.vocab);
  c.aux_coef = r.get_double("router_aux_loss_coef", 0.001, 0);
  std::string act = r.get_string("hidden_act", "silu");
  if (act != "silu") fail("{}: hidden_act \"{}\" is not supported (silu)", r.where(), act);
  return c;
}

AttentionSpec read_attention_heads(const ConfigReader& r, int64_t hidden) {
  AttentionSpec a;
  a.hidden = hidden;
  a.n_heads = r.req_int("num_attention_heads", 1);
  a.n_kv_heads = r.get_int("num_key_value_heads", a.n_heads, 1);
  if (a.n_heads % a.n_kv_heads != 0)
    fail("{}: num_attention_heads ({}) must be a multiple of num_key_value_heads ({})", r.where(), a.n_heads, a.n_kv_heads);
  if (!r.has("head_dim") && hidden % a.n_heads != 0)
    fail("{}: hidden_size {} is not a multiple of num_attention_heads {} and head_dim is not given", r.where(), hidden,
         a.n_heads);
  a.head_dim = r.get_int("head_dim", hidden / a.n_heads, 1);
  return a;
}

std::vector<int64_t> read_layer_windows(const ConfigReader& r, int64_t n_layers, int64_t window) {
  auto types = r.get_string_list("layer_types");
  std::vector<int64_t> out(n_layers, 0);
  if (types.empty()) return out;
  if (int64_t(types.size()) != n_layers)
    fail("{}: layer_types has {} entries for {} layers", r.where(), types.size(), n_layers);
  for (int64_t i = 0; i < n_layers; ++i) {
    if (types[i] == "sliding_attention") {
      if (window <= 0) fail("{}: layer {} is \"sliding_attention\" but sliding_window is not set", r.where(), i);
      out[i] = window;
    } else if (types[i] != "full_attention") {
      fail("{}: layer_types[{}] is \"{}\" (expected full_attention or sliding_attention)", r.where(), i, types[i]);
    }
  }
  return out;
}

const AttentionLayout& LayerInputs::layout(int64_t window, const at::Device& device) {
  auto it = layouts_.find(window);
  if (it != layouts_.end()) return it->second;
  AttentionLayout l;
  l.window = window;
  if (cu_seqlens.defined()) l.cu_seqlens = cu_seqlens, l.max_seqlen = max_seqlen;
  else l.mask = attention_mask(doc_ids_BS, seq, window, device);
  return layouts_.emplace(window, std::move(l)).first->second;
}

DecoderModel::DecoderModel(WeightSource& src, const LoadOptions& opt, DecoderConfig cfg)
    : cfg_(std::move(cfg)), dtype_(opt.dtype), w_(at::Device(opt.device), opt.dtype), src_(&src),
      placement_(opt.expert_placement) {
  const auto where = src.config_where();
  ESFT_CHECK(cfg_.vocab > 0 && cfg_.hidden > 0 && cfg_.n_layers > 0,
             "{}: vocab_size, hidden_size and num_hidden_layers must be positive", where);
  ESFT_CHECK(cfg_.pad_id < cfg_.vocab, "{}: pad_token_id {} is outside the vocabulary (vocab_size {})", where, cfg_.pad_id,
             cfg_.vocab);
  ESFT_CHECK(cfg_.rms_eps > 0 && cfg_.rms_eps < 1, "{}: rms_norm_eps must be in (0, 1), not {}", where, cfg_.rms_eps);
  if (cfg_.sliding_window.empty()) cfg_.sliding_window.assign(cfg_.n_layers, 0);
  ESFT_CHECK(int64_t(cfg_.sliding_window.size()) == cfg_.n_layers, "{}: {} layer types for {} layers", where,
             cfg_.sliding_window.size(), cfg_.n_layers);
}

std::string DecoderModel::layer_prefix(int64_t i) const { return fmt::format("model.layers.{}.", i); }

void DecoderModel::add(const std::string& name, const std::vector<int64_t>& shape, ParamGroup group, bool keep_fp32) {
  w_.add(name, src_->take(name, shape), group, keep_fp32);
}

void DecoderModel::load_attention(int64_t layer) { load_attention_weights(attn_, layer_prefix(layer) + "self_attn.", *src_, w_); }

void DecoderModel::load_weights() {
  const int64_t V = cfg_.vocab, H = cfg_.hidden;
  add("model.embed_tokens.weight", {V, H});
  for (int64_t i = 0; i < cfg_.n_layers; ++i) {
    const auto lp = layer_prefix(i);
    add(lp + "input_layernorm.weight", {H}, ParamGroup::NonExpert, cfg_.norms_fp32);
    add(lp + "post_attention_layernorm.weight", {H}, ParamGroup::NonExpert, cfg_.norms_fp32);
    load_attention(i);
    if (auto spec = moe_spec(i)) {
      if (moe_.empty()) n_experts_ = int(spec->router.n_experts), top_k_ = int(spec->router.top_k);
      ESFT_CHECK(spec->router.n_experts == n_experts_ && spec->router.top_k == top_k_,
                 "{}: MoE layers differ in expert count or top-k", src_->config_where());
      auto codec = expert_codec(i, *spec);
      ExpertPlacement placement = placement_ ? placement_(i, spec->experts.n_experts) : ExpertPlacement{};
      moe_[i] = std::make_unique<MoeBlock>(lp + spec->module + ".", std::move(*spec), *src_, w_, std::move(codec),
                                           std::move(placement));
    } else {
      ESFT_CHECK(cfg_.dense_inter > 0, "{}: layer {} is dense but intermediate_size is not set",
                 src_->config_where(), i);
      load_gated_mlp(lp + "mlp.", H, cfg_.dense_inter, *src_, w_);
    }
  }
  add("model.norm.weight", {H}, ParamGroup::NonExpert, cfg_.norms_fp32);
  if (!cfg_.tie_embeddings) add("lm_head.weight", {V, H});
  else if (src_->has("lm_head.weight")) src_->ignore("lm_head.weight");  // tied: the embedding is used
  src_->check_all_used(cfg_.architecture);
  src_ = nullptr;
}

std::vector<int> DecoderModel::moe_layers() const {
  std::vector<int> out;
  for (auto& [l, b] : moe_) out.push_back(int(l));
  return out;
}

MoeBlock* DecoderModel::moe_block(int64_t layer) {
  auto it = moe_.find(layer);
  return it == moe_.end() ? nullptr : it->second.get();
}

int64_t DecoderModel::active_parameters() const {
  int64_t n = w_.numel();
  for (auto& [l, b] : moe_) n += b->spec().router.top_k * b->params_per_expert();
  return n;
}

double DecoderModel::attention_core_flops(int64_t, double pairs) const {
  return 4.0 * pairs * double(attn_.n_heads) * double(attn_.head_dim);  // Q K^T and P V
}

double DecoderModel::flops(const FlopQuery& q) const {
  int64_t T = 0;
  for (auto n : q.doc_lengths) T += n;
  // Matmul weights per layer (norms, biases and such elementwise work are not counted).
  auto matmul = [](const std::string& n) {
    return n.find("norm") == std::string::npos && n.find(".bias") == std::string::npos &&
           n.find("sinks") == std::string::npos && n.find("e_score_correction") == std::string::npos;
  };
  std::map<int64_t, double> dense, trained_dense;  // per layer
  double head_trained = 0;
  for (auto& t : w_.export_tensors(false))
    if (t.name.rfind("model.layers.", 0) == 0 && matmul(t.name))
      dense[std::stoll(t.name.substr(13))] += double(t.tensor.numel());
  for (auto& t : w_.trainable()) {
    if (t.name.rfind("model.layers.", 0) == 0) {
      if (matmul(t.name)) trained_dense[std::stoll(t.name.substr(13))] += double(t.tensor.numel());
    } else if (t.name == "lm_head.weight" || (cfg_.tie_embeddings && t.name == "model.embed_tokens.weight")) {
      head_trained = 1;
    }
  }
  // Backward work starts at the first layer with anything trained (nothing before needs gradients).
  int64_t first_trained = cfg_.n_layers;
  for (int64_t i = 0; i < cfg_.n_layers && first_trained == cfg_.n_layers; ++i)
    if (!layer_trainables(i).empty()) first_trained = i;
  for (auto& t : w_.trainable())
    if (t.name == "model.embed_tokens.weight") first_trained = 0;

  double fwd = 0, bwd = 0;
  for (int64_t i = 0; i < cfg_.n_layers; ++i) {
    const int64_t W = cfg_.sliding_window[i];
    double pairs = 0;  // causal query-key pairs within documents (and windows)
    for (auto n : q.doc_lengths) {
      double L = double(n);
      pairs += (W <= 0 || W >= n) ? L * (L + 1) / 2 : double(W) * (W + 1) / 2 + double(n - W) * W;
    }
    double layer = 2.0 * dense[i] * T + attention_core_flops(i, pairs);
    if (auto it = moe_.find(i); it != moe_.end())
      layer += 2.0 * double(it->second->params_per_expert()) * double(T) * double(it->second->spec().router.top_k);
    fwd += layer;
    if (q.backward && i >= first_trained)
      bwd += layer + attention_core_flops(i, pairs) + 2.0 * trained_dense[i] * T;  // input grads (+ dK,dV), weight grads
  }
  if (q.backward && !moe_.empty())  // weight gradients of the trained experts, for the rows routed to them
    bwd += 2.0 * double(moe_.begin()->second->params_per_expert()) * double(q.trained_expert_rows);
  const double head = 2.0 * double(cfg_.hidden) * double(cfg_.vocab) * double(q.lm_head_tokens);
  fwd += head;
  if (q.backward) bwd += head * (1 + head_trained);
  return fwd + bwd;
}

at::Tensor DecoderModel::norm(const std::string& name, const at::Tensor& x) const {
  return rms_norm(x, w_.get(name), cfg_.rms_eps);
}

void DecoderModel::prepare(LayerInputs& in) const {
  if (!rope_) return;
  auto dt = attn_.rope_style == RopeStyle::Complex ? at::kFloat : dtype_;
  std::tie(in.cos, in.sin) = rope_->cos_sin(in.position_ids_BS, dt);
}

at::Tensor DecoderModel::attention(int64_t layer, const at::Tensor& x, LayerInputs& in) {
  return gqa_attention(attn_, layer_prefix(layer) + "self_attn.", w_, x, in.cos, in.sin,
                       in.layout(cfg_.sliding_window[layer], device()));
}

at::Tensor DecoderModel::mlp(int64_t layer, const at::Tensor& x, LayerInputs& in) {
  auto it = moe_.find(layer);
  if (it == moe_.end()) return gated_mlp(w_, layer_prefix(layer) + "mlp.", x);
  const int64_t H = x.size(-1);
  RouterOutput r;
  auto y = it->second->forward(x.reshape({-1, H}), w_, &r);
  if (auto* obs = in.observer) {
    at::NoGradGuard ng;
    auto ids = r.ids_TK, w = r.weights_TK.to(at::kFloat);
    if (in.valid_T.defined()) ids = ids.index({in.valid_T}), w = w.index({in.valid_T});
    obs->on_routing(int(layer), ids, w);
  }
  if (in.router_logits) in.router_logits->push_back(r.logits_TE);
  if (!in.recompute) trained_rows_ += it->second->banks().last_trained_rows();
  return y.view(x.sizes());
}

at::Tensor DecoderModel::layer_forward(int64_t layer, const at::Tensor& h, LayerInputs& in) {
  const auto lp = layer_prefix(layer);
  auto h1 = h + attention(layer, norm(lp + "input_layernorm.weight", h), in);
  return h1 + mlp(layer, norm(lp + "post_attention_layernorm.weight", h1), in);
}

std::vector<at::Tensor> DecoderModel::layer_trainables(int64_t layer) const {
  std::vector<at::Tensor> out;
  const auto lp = layer_prefix(layer);
  for (auto& t : w_.trainable())
    if (t.name.compare(0, lp.size(), lp) == 0) out.push_back(t.tensor);
  if (auto it = moe_.find(layer); it != moe_.end()) {
    auto t = it->second->banks().trainable();
    for (auto* x : {&t.gate_up, &t.down, &t.gate_up_bias, &t.down_bias})
      if (x->defined()) out.push_back(*x);
  }
  return out;
}

at::Tensor DecoderModel::checkpointed_layer(int64_t layer, const at::Tensor& h, const std::shared_ptr<LayerInputs>& in) {
  auto params = layer_trainables(layer);
  // Expert parallelism: a layer whose exchanges every rank must run in the backward is
  // checkpointed on every rank alike, with an input that takes part in the graph.
  auto it = moe_.find(layer);
  const bool everywhere = it != moe_.end() && it->second->dispatcher().in_every_backward();
  if (!h.requires_grad() && params.empty() && !everywhere) return layer_forward(layer, h, *in);  // nothing to differentiate
  const at::Tensor h_in = everywhere && !h.requires_grad() ? h.detach().requires_grad_(true) : h;
  const bool aux = in->router_logits != nullptr;
  auto run = [this, layer, in, aux](const at::Tensor& x, bool recompute) {
    // Swap in this run's hooks: the re-run in the backward fires no observer and collects its
    // router logits only to differentiate them.
    std::vector<at::Tensor> logits;
    auto* observer = in->observer;
    auto* collected = in->router_logits;
    in->observer = recompute ? nullptr : observer;
    in->router_logits = aux ? &logits : nullptr;
    in->recompute = recompute;
    std::vector<at::Tensor> out{layer_forward(layer, x, *in)};
    in->observer = observer, in->router_logits = collected, in->recompute = false;
    out.insert(out.end(), logits.begin(), logits.end());
    return out;
  };
  auto outs = checkpoint(run, h_in, params);
  for (size_t i = 1; i < outs.size(); ++i) in->router_logits->push_back(outs[i]);
  return outs[0];
}

ForwardOutput DecoderModel::forward(const Batch& batch, const ForwardOptions& opt) {
  const auto dev = device();
  auto ids = batch.input_ids.to(dev);
  const int64_t B = ids.size(0), S = ids.size(1);
  auto in_ptr = std::make_shared<LayerInputs>();  // shared with checkpointed layers' backward
  auto& in = *in_ptr;
  in.batch = B, in.seq = S, in.observer = opt.observer;
  in.position_ids_BS = batch.position_ids.defined() ? batch.position_ids.to(dev)
                                                    : at::arange(S, ids.options()).unsqueeze(0).expand({B, S});
  if (batch.doc_ids.defined()) {
    in.doc_ids_BS = batch.doc_ids.to(dev);
    in.valid_T = in.doc_ids_BS.reshape({-1}) >= 0;
    // Documents as variable-length sequences: one flash launch on CUDA in 16-bit, a loop over
    // documents elsewhere; a mask only where neither applies (CUDA in fp32).
    if (batch.cu_seqlens.defined() && (!dev.is_cuda() || dtype_ == at::kBFloat16 || dtype_ == at::kHalf))
      in.cu_seqlens = batch.cu_seqlens.to(dev), in.max_seqlen = batch.max_seqlen;
  } else if (dev.is_cuda() && (dtype_ == at::kBFloat16 || dtype_ == at::kHalf)) {
    // Plain rows are documents too: the varlen flash kernel (with sinks too) then takes q/k/v
    // without transposes.
    in.cu_seqlens = at::arange(0, (B + 1) * S, S, at::TensorOptions().dtype(at::kInt).device(dev));
    in.max_seqlen = S;
  }
  std::vector<at::Tensor> router_logits;
  if (opt.router_aux_loss && cfg_.has_aux_loss) in.router_logits = &router_logits;
  prepare(in);

  auto h = at::embedding(w_.get("model.embed_tokens.weight"), ids, cfg_.pad_id);
  const int64_t n_ckpt = at::GradMode::is_enabled() ? checkpointed_layer_count(opt.checkpoint_layers, cfg_.n_layers) : 0;
  for (int64_t i = 0; i < cfg_.n_layers; ++i) h = i < n_ckpt ? checkpointed_layer(i, h, in_ptr) : layer_forward(i, h, in);

  ForwardOutput out;
  if (!opt.return_logits && !batch.labels.defined()) return out;  // routing only (scoring): no LM head
  h = norm("model.norm.weight", h);
  const auto head = w_.get(cfg_.tie_embeddings ? "model.embed_tokens.weight" : "lm_head.weight");
  at::Tensor logits;
  if (opt.return_logits) {
    logits = nn::linear(h, head);
    if (batch.labels.defined()) out.loss_sum = causal_lm_loss_sum(logits, batch.labels.to(dev), &out.n_loss_tokens);
  } else {  // chunked: the [tokens, vocab] fp32 logits never exist whole
    out.loss_sum = lm_loss_sum(h.reshape({-1, h.size(-1)}), head, shift_labels(batch.labels.to(dev)), &out.n_loss_tokens);
  }
  if (!router_logits.empty()) {
    out.aux_loss = load_balancing_loss(router_logits, n_experts_, top_k_, in.valid_T);
    // HF adds coef * aux to the mean loss; in sum form that is coef * aux * n_tokens.
    if (out.loss_sum.defined())
      out.loss_sum = out.loss_sum + cfg_.aux_coef * out.aux_loss.to(at::kFloat) * double(out.n_loss_tokens);
  }
  if (opt.return_logits) out.logits = logits.to(at::kFloat);
  return out;
}

void DecoderModel::configure_training(const ExpertSelection& sel) {
  for (auto& [layer, ids] : sel.experts)
    if (!moe_.count(layer))
      fail("expert config names layer {}, which is not an MoE layer of this model (MoE layers: {})", layer,
           fmt::join(moe_layers(), ", "));
  for (auto& [layer, block] : moe_) {
    auto it = sel.experts.find(int(layer));
    block->banks().split(it == sel.experts.end() ? std::vector<int>{} : it->second);
  }
  if (sel.shared_experts && w_.set_group_trainable(ParamGroup::SharedExpert) == 0)
    log_warn(fmt::format("{} has no shared experts: \"shared_experts\": true has no effect", cfg_.architecture));
  if (sel.non_expert_modules) w_.set_group_trainable(ParamGroup::NonExpert);
}

std::vector<TrainableTensor> DecoderModel::trainable_tensors() {
  auto out = w_.trainable();
  for (auto& [layer, block] : moe_) {
    auto t = block->banks().trainable();
    if (!t.gate_up.defined()) continue;
    const auto p = block->prefix() + "experts.trainable_";
    const auto& ids = block->banks().trainable_ids();
    out.push_back({p + "gate_up_proj", t.gate_up, true, ids});
    out.push_back({p + "down_proj", t.down, true, ids});
    if (t.gate_up_bias.defined()) {
      out.push_back({p + "gate_up_proj_bias", t.gate_up_bias, false, ids});
      out.push_back({p + "down_proj_bias", t.down_bias, false, ids});
    }
  }
  return out;
}

std::vector<HfTensor> DecoderModel::adapter_tensors() {
  auto out = w_.export_tensors(true);
  for (auto& [layer, block] : moe_)
    for (auto& t : block->codec().export_experts(block->banks(), block->banks().trainable_ids())) out.push_back(t);
  return out;
}

std::vector<HfTensor> DecoderModel::full_tensors() {
  auto out = w_.export_tensors(false);
  for (auto& [layer, block] : moe_)
    for (auto& t : block->codec().export_all(block->banks())) out.push_back(t);
  return out;
}

void DecoderModel::load_adapter_tensors(const std::map<std::string, at::Tensor>& tensors) {
  std::map<std::pair<int64_t, int64_t>, std::map<std::string, at::Tensor>> per_expert;  // (layer, expert) -> parts
  for (auto& [name, t] : tensors) {
    if (w_.has(name)) {
      w_.load(name, t);
      continue;
    }
    bool found = false;
    for (auto& [layer, block] : moe_) {
      int64_t e;
      std::string part;
      if (block->codec().parse_adapter_name(name, &e, &part)) {
        per_expert[{layer, e}][part] = t;
        found = true;
        break;
      }
    }
    if (!found) fail("adapter tensor {} does not exist in this {} model", name, cfg_.architecture);
  }
  for (auto& [key, parts] : per_expert) {
    auto& block = *moe_.at(key.first);
    if (!block.banks().holds(key.second)) continue;  // another expert-parallel rank's
    block.banks().set_expert(key.second, block.codec().from_adapter(key.second, parts));
  }
}

}  // namespace esft::nn

namespace esft {

void add_document_layout(Batch& b) {
  if (!b.doc_ids.defined()) return;
  auto doc = b.doc_ids.to(at::kCPU, at::kLong).contiguous();
  const int64_t B = doc.size(0), S = doc.size(1);
  const int64_t* d = doc.data_ptr<int64_t>();
  std::vector<int32_t> cu{0};
  int64_t longest = 0;
  for (int64_t r = 0; r < B; ++r)
    for (int64_t t = 0; t < S; ++t) {
      const int64_t i = r * S + t;
      if (t + 1 == S || d[i + 1] != d[i]) {  // a document (or padding run) ends at token i
        longest = std::max<int64_t>(longest, i + 1 - cu.back());
        cu.push_back(int32_t(i + 1));
      }
    }
  b.cu_seqlens = at::tensor(cu, at::kInt);
  b.max_seqlen = longest;
}

}  // namespace esft
