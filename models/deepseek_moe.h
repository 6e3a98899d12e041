// What DeepSeek-V2, DeepSeek-V3 and GLM-4.5 MoE share on top of the core (transformers 5.17):
// - the first first_k_dense_replace layers are dense, every later one is an MoE block (there is
//   no moe_layer_freq in transformers: a value other than 1 is refused);
// - the MoE block is routed experts plus always-on shared_experts (moe_intermediate_size *
//   n_shared_experts, no gate; transformers keeps zero-size tensors for n_shared_experts 0),
//   routed by mlp.gate with fp32 logits and weights, unsorted top-k and routed_scaling_factor;
// - no router aux loss;
// - checkpoints may carry multi-token-prediction layers after the last layer
//   (num_nextn_predict_layers), which transformers ignores and so does esft.
// Private to the family files.
#pragma once
#include <optional>
#include <string>
#include <vector>

#include "esft/nn/decoder.h"
#include "esft/nn/mla.h"

namespace esft::deepseek {

struct MoeConfig {
  nn::MoeSpec moe;
  int64_t n_shared = 0;     // n_shared_experts
  int64_t first_dense = 0;  // first_k_dense_replace
  int64_t n_mtp = 0;        // num_nextn_predict_layers
  std::optional<nn::MoeSpec> spec_of(int64_t layer) const {
    return layer >= first_dense ? std::optional(moe) : std::nullopt;
  }
};

// The keys above with the family's class defaults where config.json is silent.
MoeConfig read_moe_config(const nn::ConfigReader& r, const nn::DecoderConfig& base, int64_t default_shared,
                          int64_t default_first_dense, double default_scaling);

// DeepSeek-V3 / GLM-4.5 routing: sigmoid scores, e_score_correction_bias added for the choice
// only, the best topk_group of n_group groups by the sum of their two best (others -inf), weights
// renormalised with +1e-20 when norm_topk_prob.
void read_sigmoid_router(const nn::ConfigReader& r, int64_t default_n_group, int64_t default_topk_group,
                         nn::RouterSpec* router);

// A key of the original (remote-code) configs that must name what the family does, if present:
// fails naming file, key and the values allowed.
void check_key(const nn::ConfigReader& r, const std::string& key, const std::vector<std::string>& allowed);

// Marks what the family knowingly leaves: MTP layers model.layers.{L..L+n_mtp-1}.* and, with
// n_shared_experts 0, the zero-size shared_experts tensors (shape-checked).
void claim_unused_tensors(nn::WeightSource& src, const MoeConfig& c, int64_t n_layers, int64_t hidden);

// A decoder with multi-head latent attention (DeepSeek-V2 / V3). The derived family's
// constructor calls load_weights().
class MlaDecoder : public nn::DecoderModel {
 protected:
  MlaDecoder(nn::WeightSource& src, const LoadOptions& opt, const nn::DecoderConfig& base, nn::MlaSpec mla,
             MoeConfig moe);

 private:
  void load_attention(int64_t layer) override;
  at::Tensor attention(int64_t layer, const at::Tensor& x_BSH, nn::LayerInputs& in) override;
  std::optional<nn::MoeSpec> moe_spec(int64_t layer) const override { return moe_cfg_.spec_of(layer); }
  nn::MlaSpec mla_;
  MoeConfig moe_cfg_;
};

}  // namespace esft::deepseek
