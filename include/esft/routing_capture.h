// Router hook for scoring: keeps every MoE layer's decision of a forward on the device (no sync),
// then copies all layers to (pinned) host memory in one go without waiting for it.
#pragma once
#include <ATen/ATen.h>
#include <c10/core/Event.h>

#include <map>
#include <optional>
#include <vector>

#include "esft/model.h"

namespace esft {

struct HostRouting {
  at::Tensor ids, weights;         // [L,T,K] int64 / float32 on the host, layers in moe_layers() order
  std::optional<c10::Event> copied;  // recorded after the copies (device runs only)
  void wait() {
    if (copied) copied->synchronize();
  }
};

class RoutingCapture : public RoutingObserver {
 public:
  void on_routing(int layer, const at::Tensor& ids_TK, const at::Tensor& weights_TK) override {
    layers_[layer] = {ids_TK, weights_TK};
  }
  // Starts the copy of the given layers' routing to the host; clears the capture.
  HostRouting to_host(const std::vector<int>& layers, const at::Device& device);

 private:
  std::map<int, std::pair<at::Tensor, at::Tensor>> layers_;
};

}  // namespace esft
