// The model-family interface. Each family lives in one file under models/ and registers a
// factory under its config.json `architectures[0]` string (llama.cpp style); load_model()
// fails loudly on anything unknown.
//
// Shape legend used across src/nn and models/: B batch, S sequence, T tokens (B*S flattened),
// H hidden, I expert intermediate, E experts, K top-k, V vocab, N heads, D head dim.
#pragma once
#include <ATen/ATen.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "esft/expert_config.h"
#include "esft/fs.h"

namespace esft {

class Checkpoint;
namespace nn {
class WeightSource;
}

struct Batch {
  at::Tensor input_ids;     // [B,S] int64
  at::Tensor labels;        // [B,S] int64, -100 = no loss; undefined = no loss computed
  at::Tensor position_ids;  // [B,S] int64; undefined = 0..S-1 per row
  at::Tensor doc_ids;       // [B,S] int64; undefined = plain causal over the whole row;
                            // else attention only between equal ids, -1 marks padding
  // The documents as variable-length sequences over the flattened B*S tokens, for attention
  // kernels that take them instead of a mask (add_document_layout fills them from doc_ids):
  // int32 cumulative offsets [n_docs + 1] (a padding run counts as a document) and the longest.
  at::Tensor cu_seqlens;
  int64_t max_seqlen = 0;
};

// Fills batch.cu_seqlens / max_seqlen from batch.doc_ids (a CPU tensor); no-op without doc_ids.
void add_document_layout(Batch& batch);

// Router hook: every MoE layer reports, per token, its top-k expert ids and the gate weights
// the model actually uses (after any renormalisation/scaling). Tensors are [T,K] on the
// model's device; ids int64, weights float32.
class RoutingObserver {
 public:
  virtual ~RoutingObserver() = default;
  virtual void on_routing(int hf_layer, const at::Tensor& ids_TK, const at::Tensor& weights_TK) = 0;
};

struct ForwardOptions {
  bool return_logits = true;     // [B,S,V] fp32 logits (parity, evaluation); without them and without
                                 // labels the LM head is not run at all (scoring)
  RoutingObserver* observer = nullptr;
  bool router_aux_loss = false;  // add router_aux_loss_coef * load-balancing loss to `loss`
  // Decoder layers, from the first, that keep only their input and re-run in the backward
  // (activation checkpointing): 0 none, -1 all.
  int64_t checkpoint_layers = 0;
};

// The number of a model's n_layers decoder layers that checkpoint_layers checkpoints.
inline int64_t checkpointed_layer_count(int64_t checkpoint_layers, int64_t n_layers) {
  return checkpoint_layers < 0 ? n_layers : std::min(checkpoint_layers, n_layers);
}

// What flops() counts: the documents of the micro-batches (attention is causal within each), the
// positions the LM head runs on, and whether a training backward follows.
struct FlopQuery {
  std::vector<int64_t> doc_lengths;  // tokens per document; padding counts as no document
  int64_t lm_head_tokens = 0;        // labelled positions (0: no LM head, as in scoring)
  bool backward = false;             // input gradients, and weight gradients of trained tensors only
  int64_t trained_expert_rows = 0;   // from take_trained_expert_rows()
};

struct ForwardOutput {
  at::Tensor logits;       // [B,S,V] float32 (when asked)
  at::Tensor loss_sum;     // scalar float32: sum of token cross-entropies over labels != -100 (shifted)
  int64_t n_loss_tokens = 0;
  at::Tensor aux_loss;     // scalar, undefined unless router_aux_loss
};

// A tensor the optimizer updates, named stably (used for optimizer state and resume).
struct TrainableTensor {
  std::string name;
  at::Tensor tensor;  // leaf, requires_grad, float32 master copy
  bool decay = true;  // weight decay applies (false for norms and biases)
  // Routed-expert banks: the global expert id of each row (dim 0). Empty for every other tensor.
  // Expert parallelism reduces these over the expert-data-parallel group and saves them per expert.
  std::vector<int64_t> expert_ids;
};

// A tensor in Hugging Face naming and layout, ready to save.
struct HfTensor {
  std::string name;
  at::Tensor tensor;
};

// Expert parallelism: which rank of the expert-parallel group holds each routed expert of an MoE
// layer. The default (no owners) keeps every expert on this process.
struct ExpertPlacement {
  int n_ranks = 1, rank = 0;
  std::vector<int> owner;  // [E] rank holding expert e; empty = all on this process
  int owner_of(int64_t e) const { return owner.empty() ? 0 : owner[e]; }
  std::vector<int64_t> held(int64_t n_experts) const;  // ascending ids held by `rank`
};

struct LoadOptions {
  LoadOptions(std::string device = "cpu", at::ScalarType dtype = at::kFloat) : device(std::move(device)), dtype(dtype) {}
  std::string device;    // "cpu", "cuda", "cuda:1"
  at::ScalarType dtype;  // storage dtype of frozen weights and compute dtype
  // Expert parallelism: the placement of each MoE layer's experts (HF layer index, expert count);
  // only the experts of this rank are loaded. Unset: every expert everywhere.
  std::function<ExpertPlacement(int64_t layer, int64_t n_experts)> expert_placement;
};

class MoeModel {
 public:
  virtual ~MoeModel() = default;
  virtual std::string architecture() const = 0;
  virtual std::vector<int> moe_layers() const = 0;  // HF decoder-layer indices of the MoE layers
  virtual int n_routed_experts() const = 0;
  virtual int64_t vocab_size() const = 0;
  virtual int top_k() const = 0;
  virtual const at::Device& device() const = 0;
  // Whether the family defines the router load-balancing loss (DeepSeek and GLM do not).
  virtual bool has_router_aux_loss() const = 0;
  // Weights one token passes through (non-expert weights plus top_k routed experts per MoE layer).
  virtual int64_t active_parameters() const = 0;
  // The floating-point operations some work needs (model FLOPs: recomputation such as
  // activation checkpointing is extra work and not counted), for TFLOP/s and MFU.
  virtual double flops(const FlopQuery& q) const = 0;
  // (token, top-k slot) rows the forwards since the last call routed to trained experts.
  virtual int64_t take_trained_expert_rows() = 0;

  virtual ForwardOutput forward(const Batch& batch, const ForwardOptions& opt) = 0;

  // Splits every MoE layer's experts into a trainable and a frozen bank and marks the
  // trainable tensors. Frozen tensors never require grad.
  virtual void configure_training(const ExpertSelection& sel) = 0;
  virtual std::vector<TrainableTensor> trainable_tensors() = 0;
  // The trainable tensors under their HF names (per-expert weights split out): the adapter.
  virtual std::vector<HfTensor> adapter_tensors() = 0;
  // Loads adapter tensors (HF names) over the current weights.
  virtual void load_adapter_tensors(const std::map<std::string, at::Tensor>& tensors) = 0;
  // Every weight under its HF name, in the checkpoint's original layout and dtype.
  virtual std::vector<HfTensor> full_tensors() = 0;
  // config.json for the checkpoint full_tensors() makes, from the base model's (e.g. without the
  // quantization_config of experts that full_tensors() writes dequantized).
  virtual void export_config(nlohmann::json& config) const {}
};

using ModelFactory = std::function<std::unique_ptr<MoeModel>(nn::WeightSource&, const LoadOptions&)>;

struct ModelRegistrar {
  ModelRegistrar(const std::string& architecture, ModelFactory factory);
};
std::vector<std::string> registered_architectures();

// Reads dir/config.json, picks the family by architectures[0], loads the weights.
std::unique_ptr<MoeModel> load_model(const fs::path& dir, const LoadOptions& opt);
// The family of config["architectures"][0] with random weights made on opt.device (no checkpoint).
std::unique_ptr<MoeModel> build_random_model(const nlohmann::json& config, const LoadOptions& opt, uint64_t seed = 0);

at::ScalarType parse_dtype_flag(const std::string& s);  // "fp32"|"float32"|"bf16"|"bfloat16"|"fp16"

}  // namespace esft
