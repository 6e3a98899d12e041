#include "esft/runtime.h"

#include <ATen/Context.h>
#include <c10/cuda/CUDACachingAllocator.h>

#include "esft/error.h"
#include "esft/model.h"

namespace esft {

Runtime resolve_runtime(const std::string& device, const std::string& dtype) {
  Runtime r;
  bool cuda = at::hasCUDA();
  r.device = device.empty() ? (cuda ? "cuda" : "cpu") : device;
  if (r.device.rfind("cuda", 0) == 0 && !cuda) fail("--device {}: no CUDA device is available", r.device);
  if (r.device != "cpu" && r.device.rfind("cuda", 0) != 0) fail("--device {}: expected cpu, cuda or cuda:N", r.device);
  r.dtype = dtype.empty() ? (r.device == "cpu" ? at::kFloat : at::kBFloat16) : parse_dtype_flag(dtype);
  return r;
}

namespace {
// The caching allocator asserts on a device it has not set up yet: make it allocate once.
void touch(const std::string& device) { (void)at::empty({1}, at::TensorOptions().device(device)); }
}  // namespace

double peak_device_memory_gib(const std::string& device) {
  if (device.rfind("cuda", 0) != 0) return 0;
  touch(device);
  auto index = at::Device(device).has_index() ? at::Device(device).index() : c10::DeviceIndex(0);
  auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(index);
  return double(stats.allocated_bytes[size_t(c10::CachingAllocator::StatType::AGGREGATE)].peak) / double(1 << 30);
}

void reset_peak_device_memory(const std::string& device) {
  if (device.rfind("cuda", 0) != 0) return;
  touch(device);
  auto index = at::Device(device).has_index() ? at::Device(device).index() : c10::DeviceIndex(0);
  c10::cuda::CUDACachingAllocator::resetPeakStats(index);
}

}  // namespace esft
