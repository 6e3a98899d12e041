// Multi-head attention with grouped KV heads, as a spec: the options the families differ in
// (biases, q/k norms, qkv clipping, partial / interleaved / complex RoPE, sliding window, sinks,
// softmax scale) are fields, so a family states its attention instead of writing it.
// Multi-head latent attention (DeepSeek) has its own function beside this one.
// Shapes: B batch, S sequence, N heads, D head dim, H hidden; q/k/v travel as [B,S,N,D].
#pragma once
#include <ATen/ATen.h>

#include <string>

#include "esft/nn/rope.h"

namespace esft::nn {

class ParamStore;
class WeightSource;

enum class QkNorm {
  None,
  PerHead,    // RMSNorm over head_dim with one [D] weight shared by the heads (Qwen3, GLM use_qk_norm)
  FullWidth,  // RMSNorm over the whole projection before the head split (OLMoE: [N*D] and [Nkv*D])
};

struct AttentionSpec {
  int64_t hidden = 0, n_heads = 0, n_kv_heads = 0, head_dim = 0;
  bool q_bias = false, k_bias = false, v_bias = false, o_bias = false;
  QkNorm qk_norm = QkNorm::None;
  double norm_eps = 1e-6;
  double clip_qkv = 0;  // > 0: clamp q, k, v to [-clip, clip] after the projections (OLMoE)
  RopeStyle rope_style = RopeStyle::Half;  // rotary channels: the rope tables' width
  bool sinks = false;   // a learned per-head logit joins every softmax (GPT-OSS self_attn.sinks [N])
  double scale = 0;     // softmax scale; 0 = head_dim^-0.5
};

// Boolean attention mask [B,1,S,S] (true = may attend), or undefined when plain causal attention
// over the whole row suffices. doc_ids_BS: attention only within equal ids, -1 = padding.
// sliding_window > 0: keys limited to the last W positions (the query's own included).
at::Tensor attention_mask(const at::Tensor& doc_ids_BS, int64_t seq_len, int64_t sliding_window, const at::Device& device);

// Who may attend to whom in one forward, for one sliding-window size: a mask, or (on CUDA in
// 16-bit, where the flash kernel takes them) the documents as variable-length sequences, which
// costs no S x S mask and no work across documents.
struct AttentionLayout {
  at::Tensor mask;        // as attention_mask gives it (undefined: plain causal)
  at::Tensor cu_seqlens;  // int32 on the device: documents over the flattened B*S tokens
  int64_t max_seqlen = 0;
  int64_t window = 0;     // sliding window (0 = none), applied by the varlen kernel
};

// Softmax attention, causal within the layout; q [B,S,N,D], k/v [B,S,Nkv,D] (the projections'
// own layout: the flash kernel then needs no transposes); sinks_N optional. Returns [B,S,N*Dv].
// Sinks with cu_seqlens on CUDA in 16-bit take fused_sink_attention.
at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const AttentionLayout& layout,
                     double scale, const at::Tensor& sinks_N = {});

// Attention with sinks through a fused kernel that keeps no S x S matrix: flash attention over
// layout.cu_seqlens (with its window) on CUDA in 16-bit, PyTorch's CPU flash kernel with
// layout.mask on the CPU. Equal to the eager path up to rounding, gradients included
// (attention.cpp says why). q/k/v [B,S,N,D] as for attention(); returns [B,S,N*Dv].
at::Tensor fused_sink_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                const AttentionLayout& layout, double scale, const at::Tensor& sinks_N);

// Loads prefix{q,k,v,o}_proj.{weight,bias}, prefix{q,k}_norm.weight, prefix sinks (prefix ends
// in "self_attn.") into the store, shapes from the spec.
void load_attention_weights(const AttentionSpec& spec, const std::string& prefix, WeightSource& src, ParamStore& store);

// The whole attention block on x_BSH with rope tables cos/sin [B,S,rotary_dim].
at::Tensor gqa_attention(const AttentionSpec& spec, const std::string& prefix, const ParamStore& w, const at::Tensor& x_BSH,
                         const at::Tensor& cos, const at::Tensor& sin, const AttentionLayout& layout);

}  // namespace esft::nn
