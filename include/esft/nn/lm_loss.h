// The language-model head and its cross-entropy, computed in chunks of tokens so that the
// [tokens, vocab] fp32 logits never exist whole (151936-wide vocabularies make them the largest
// activation of a step). Only positions with a label are computed at all.
#pragma once
#include <ATen/ATen.h>

namespace esft::nn {

// Labels shifted by one within each row (position t predicts labels[t+1]; the last position has
// none), flattened: HF ForCausalLMLoss's shift_labels.
at::Tensor shift_labels(const at::Tensor& labels_BS);

// Sum over positions with shifted label != -100 of cross_entropy(fp32(h_TH @ w_VH^T), label), the
// logits rounded to h's dtype first as HF's lm_head output is. Differentiable in h and w (w may
// be a graph-connected cast of a trained fp32 master); recomputes each chunk's logits in the
// backward instead of keeping them. *n_tokens receives the number of labelled positions.
// chunk_tokens 0: sized so one chunk's fp32 logits take about 1 GiB.
at::Tensor lm_loss_sum(const at::Tensor& h_TH, const at::Tensor& w_VH, const at::Tensor& shifted_labels_T,
                       int64_t* n_tokens, int64_t chunk_tokens = 0);

}  // namespace esft::nn
