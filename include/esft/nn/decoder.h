// The family base: everything a decoder-only MoE family shares, so that a family file holds only
// its config parsing, its table of HF tensors and whatever of the per-layer forward differs.
//
// It owns the parameter store (non-expert weights, shared experts), the MoE blocks (router,
// dispatcher, expert banks), the forward loop (embeddings -> [pre-norm attention, pre-norm MLP]
// x L -> norm -> lm_head, loss and router aux loss), training set-up (trainable and frozen banks,
// expert_config.json switches), trainable tensors, adapter and full export, adapter load and the
// active-parameter count.
//
// A family derives from DecoderModel, parses config.json into a DecoderConfig plus its own
// fields, sets the attention spec and rope, and calls load_weights(), which asks the family for
// each layer's MoE spec (or none: a dense layer) through moe_spec(). Families with attention
// other than gqa_attention override load_attention() and attention(). A family registers with
// ESFT_REGISTER_FAMILY("XxxForCausalLM", Class), Class having a (WeightSource&, const
// LoadOptions&) constructor.
#pragma once
#include <ATen/ATen.h>

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "esft/model.h"
#include "esft/nn/attention.h"
#include "esft/nn/config.h"
#include "esft/nn/moe_block.h"
#include "esft/nn/param_store.h"
#include "esft/nn/rope.h"
#include "esft/nn/weight_source.h"

namespace esft::nn {

struct DecoderConfig {
  std::string architecture;
  int64_t vocab = 0, hidden = 0, n_layers = 0;
  int64_t dense_inter = 0;         // intermediate size of dense (non-MoE) MLP layers; 0 = none allowed
  double rms_eps = 1e-6;
  bool tie_embeddings = false;
  int64_t pad_id = -1;             // nn.Embedding padding_idx: that row gets no gradient
  bool norms_fp32 = false;         // layer and final norm weights stay fp32 (GPT-OSS _keep_in_fp32_modules)
  bool has_aux_loss = true;        // the family defines the router load-balancing loss
  double aux_coef = 0.001;         // router_aux_loss_coef
  std::vector<int64_t> sliding_window;  // per layer: 0 = full attention, W = sliding window of W
};

// Per-forward state the layers share: rope tables, masks per window size, padding, hooks.
struct LayerInputs {
  int64_t batch = 0, seq = 0;
  at::Tensor position_ids_BS, doc_ids_BS, valid_T;
  at::Tensor cos, sin;
  RoutingObserver* observer = nullptr;               // null while a checkpointed layer re-runs
  std::vector<at::Tensor>* router_logits = nullptr;  // collected for the aux loss when asked
  bool recompute = false;                            // a checkpointed layer re-running in the backward
  at::Tensor cu_seqlens;  // Batch::cu_seqlens on the device, when the varlen kernel can be used
  int64_t max_seqlen = 0;
  // The attention layout for a sliding window (0 = full), built once per forward and window.
  const AttentionLayout& layout(int64_t window, const at::Device& device);

 private:
  std::map<int64_t, AttentionLayout> layouts_;
};

class DecoderModel : public MoeModel {
 public:
  std::string architecture() const override { return cfg_.architecture; }
  std::vector<int> moe_layers() const override;
  int n_routed_experts() const override { return n_experts_; }
  int64_t vocab_size() const override { return cfg_.vocab; }
  int top_k() const override { return top_k_; }
  const at::Device& device() const override { return w_.device(); }
  bool has_router_aux_loss() const override { return cfg_.has_aux_loss; }
  int64_t active_parameters() const override;
  double flops(const FlopQuery& q) const override;
  int64_t take_trained_expert_rows() override { return std::exchange(trained_rows_, 0); }

  ForwardOutput forward(const Batch& batch, const ForwardOptions& opt) override;
  void configure_training(const ExpertSelection& sel) override;
  std::vector<TrainableTensor> trainable_tensors() override;
  std::vector<HfTensor> adapter_tensors() override;
  void load_adapter_tensors(const std::map<std::string, at::Tensor>& tensors) override;
  std::vector<HfTensor> full_tensors() override;

  // The MoE block of an HF layer index (nullptr for dense layers); expert parallelism uses it.
  MoeBlock* moe_block(int64_t layer);

 protected:
  DecoderModel(WeightSource& src, const LoadOptions& opt, DecoderConfig cfg);

  // ---- loading: the family's constructor sets attn_ / rope_ and calls load_weights() ----
  void load_weights();
  // The MoE spec of a layer, or nullopt for a dense MLP layer.
  virtual std::optional<MoeSpec> moe_spec(int64_t layer) const = 0;
  // A custom expert codec for a layer (nullptr: the gated codec of the spec's naming).
  virtual std::unique_ptr<ExpertCodec> expert_codec(int64_t layer, const MoeSpec& spec) const { return nullptr; }
  virtual void load_attention(int64_t layer);
  void add(const std::string& name, const std::vector<int64_t>& shape, ParamGroup group = ParamGroup::NonExpert,
           bool keep_fp32 = false);
  std::string layer_prefix(int64_t layer) const;  // "model.layers.{i}."

  // ---- forward pieces ----
  virtual at::Tensor attention(int64_t layer, const at::Tensor& x_BSH, LayerInputs& in);
  virtual at::Tensor norm(const std::string& weight_name, const at::Tensor& x) const;
  virtual void prepare(LayerInputs& in) const;  // rope tables
  at::Tensor mlp(int64_t layer, const at::Tensor& x_BSH, LayerInputs& in);
  virtual at::Tensor layer_forward(int64_t layer, const at::Tensor& h_BSH, LayerInputs& in);
  // layer_forward keeping only the layer's input for the backward (activation checkpointing).
  at::Tensor checkpointed_layer(int64_t layer, const at::Tensor& h_BSH, const std::shared_ptr<LayerInputs>& in);
  // The trained leaf tensors a decoder layer uses.
  std::vector<at::Tensor> layer_trainables(int64_t layer) const;
  // FLOPs of the attention core (scores and weighted values) over `pairs` query-key pairs.
  virtual double attention_core_flops(int64_t layer, double pairs) const;

  DecoderConfig cfg_;
  at::ScalarType dtype_;
  ParamStore w_;
  AttentionSpec attn_;
  std::optional<Rope> rope_;
  WeightSource* src_;  // during loading only
  std::map<int64_t, std::unique_ptr<MoeBlock>> moe_;
  int n_experts_ = 0, top_k_ = 0;
  int64_t trained_rows_ = 0;
};

// Config-reading helpers shared by the family files.
// The keys every family spells alike: vocab_size, hidden_size, num_hidden_layers, rms_norm_eps,
// tie_word_embeddings, pad_token_id, router_aux_loss_coef, and hidden_act (which must be silu).
// default_pad: the family's pad_token_id when config.json does not mention it (null = none).
DecoderConfig read_decoder_config(const ConfigReader& r, const std::string& architecture, double default_eps,
                                  int64_t default_pad = -1);
// num_attention_heads, num_key_value_heads (default: heads), head_dim (default: hidden / heads).
AttentionSpec read_attention_heads(const ConfigReader& r, int64_t hidden);
// Per-layer sliding windows from layer_types ("sliding_attention" -> window, else 0).
std::vector<int64_t> read_layer_windows(const ConfigReader& r, int64_t n_layers, int64_t window);

}  // namespace esft::nn

#define ESFT_REGISTER_FAMILY(architecture, Class)                                                       \
  static ::esft::ModelRegistrar esft_family_registrar_##Class(                                          \
      architecture, [](::esft::nn::WeightSource& src, const ::esft::LoadOptions& opt) {                  \
        return std::unique_ptr<::esft::MoeModel>(new Class(src, opt));                                   \
      })
