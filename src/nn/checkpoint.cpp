#include "esft/nn/checkpoint.h"

#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/custom_function.h>

namespace esft::nn {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// The layer function travels to the backward in a capsule (the context holds IValues only).
struct LayerHolder : torch::CustomClassHolder {
  LayerFn fn;
  bool h_requires_grad = false;
};

struct Checkpointed : public torch::autograd::Function<Checkpointed> {
  static variable_list forward(AutogradContext* ctx, c10::intrusive_ptr<LayerHolder> holder, const at::Tensor& h,
                               at::TensorList params) {
    holder->h_requires_grad = h.requires_grad();
    auto outs = holder->fn(h, /*recompute=*/false);  // grad mode is off in here: nothing is recorded
    ctx->save_for_backward({h});
    ctx->saved_data["layer"] = c10::IValue::make_capsule(holder);
    ctx->saved_data["n_params"] = int64_t(params.size());
    std::vector<at::Tensor> p(params.begin(), params.end());
    ctx->saved_data["params"] = c10::List<at::Tensor>(p);
    return outs;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto holder = c10::static_intrusive_pointer_cast<LayerHolder>(ctx->saved_data["layer"].toCapsule());
    auto params = ctx->saved_data["params"].toTensorList().vec();
    auto h = ctx->get_saved_variables()[0].detach().requires_grad_(true);
    variable_list outs;
    {
      at::AutoGradMode enable(true);
      outs = holder->fn(h, /*recompute=*/true);
    }
    variable_list inputs{h}, outputs, grad_outputs;
    inputs.insert(inputs.end(), params.begin(), params.end());
    for (size_t i = 0; i < outs.size(); ++i)
      if (grads[i].defined() && outs[i].requires_grad()) outputs.push_back(outs[i]), grad_outputs.push_back(grads[i]);
    variable_list g = outputs.empty() ? variable_list(inputs.size())
                                      : torch::autograd::grad(outputs, inputs, grad_outputs, /*retain_graph=*/false,
                                                              /*create_graph=*/false, /*allow_unused=*/true);
    variable_list result{at::Tensor(), holder->h_requires_grad ? g[0] : at::Tensor()};  // holder, h
    result.insert(result.end(), g.begin() + 1, g.end());                                // params
    return result;
  }
};

}  // namespace

std::vector<at::Tensor> checkpoint(LayerFn fn, const at::Tensor& h, const std::vector<at::Tensor>& params) {
  auto holder = c10::make_intrusive<LayerHolder>();
  holder->fn = std::move(fn);
  return Checkpointed::apply(holder, h, at::TensorList(params));
}

}  // namespace esft::nn
