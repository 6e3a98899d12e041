// Building blocks shared by the model families, each matching HF transformers' eager maths.
// Shapes: B batch, S sequence, V vocab.
#pragma once
#include <ATen/ATen.h>

namespace esft::nn {

// Llama-style RMSNorm: normalise in fp32, cast back to the input dtype, then scale by weight
// (on CUDA: one fused kernel of the same maths).
at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps);
// GPT-OSS's RMSNorm: the weight multiplies in fp32 and the product is cast to the input dtype.
at::Tensor rms_norm_fp32_weight(const at::Tensor& x, const at::Tensor& weight, double eps);

// Sum of next-token cross-entropies in fp32 over positions whose shifted label != -100
// (HF ForCausalLMLoss with reduction "sum"). *n_tokens receives the number of such positions.
at::Tensor causal_lm_loss_sum(const at::Tensor& logits_BSV, const at::Tensor& labels_BS, int64_t* n_tokens);

// x @ w^T (+ b; undefined = none): every matmul of the models goes through here. On the CPU a
// product of fewer than 12 rows is padded to 12, because MKL takes a differently-rounding path
// for such small ones, and a token's result must not depend on how many other tokens share its
// matmul (packed scoring equals one sample per forward bit for bit, a checkpoint re-run equals
// its first run).
at::Tensor linear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b = {});

}  // namespace esft::nn
