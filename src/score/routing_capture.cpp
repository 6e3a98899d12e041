#include "esft/routing_capture.h"

#include <c10/core/impl/DeviceGuardImplInterface.h>

#include "esft/error.h"

namespace esft {

HostRouting RoutingCapture::to_host(const std::vector<int>& layers, const at::Device& dev) {
  std::vector<at::Tensor> ids, ws;
  for (int l : layers) {
    auto it = layers_.find(l);
    ESFT_CHECK(it != layers_.end(), "no routing was captured for MoE layer {}", l);
    ids.push_back(it->second.first), ws.push_back(it->second.second);
  }
  layers_.clear();
  auto dev_ids = at::stack(ids).to(at::kLong), dev_w = at::stack(ws).to(at::kFloat);
  const auto host = at::TensorOptions().device(at::kCPU).pinned_memory(dev.is_cuda());
  HostRouting h;
  h.ids = at::empty(dev_ids.sizes(), host.dtype(at::kLong));
  h.weights = at::empty(dev_w.sizes(), host.dtype(at::kFloat));
  h.ids.copy_(dev_ids, /*non_blocking=*/true);
  h.weights.copy_(dev_w, /*non_blocking=*/true);
  if (!dev.is_cpu()) {
    h.copied.emplace(dev.type());
    h.copied->record(c10::impl::getDeviceGuardImpl(dev.type())->getStream(dev));
  }
  return h;
}

}  // namespace esft
