// Activation checkpointing in LibTorch C++ (which has no torch.utils.checkpoint): a custom
// autograd function that runs a layer without recording it, keeps only its input, and in the
// backward re-runs the layer under grad mode and back-propagates through the re-run.
#pragma once
#include <ATen/ATen.h>

#include <functional>
#include <vector>

namespace esft::nn {

// fn(h, recompute) runs the layer on h and returns its output plus, optionally, more tensors
// that also receive gradients (the router logits of the aux loss). recompute is true for the
// re-run in the backward, where the layer must not fire its hooks again. params: the trained
// leaf tensors the layer uses; their gradients flow through the re-run. The re-run must compute
// exactly what the first run did (no randomness).
using LayerFn = std::function<std::vector<at::Tensor>(const at::Tensor& h, bool recompute)>;
std::vector<at::Tensor> checkpoint(LayerFn fn, const at::Tensor& h, const std::vector<at::Tensor>& params);

}  // namespace esft::nn
