// Device and dtype resolution shared by the subcommands.
#pragma once
#include <ATen/ATen.h>

#include <string>

namespace esft {

struct Runtime {
  std::string device;  // "cpu", "cuda", "cuda:N"
  at::ScalarType dtype;
};

// device "" -> cuda when available else cpu; dtype "" -> bf16 on cuda, fp32 on cpu.
// Fails clearly when cuda is asked for but not available.
Runtime resolve_runtime(const std::string& device, const std::string& dtype);

// Peak GiB allocated by the CUDA caching allocator on that device since start or the last reset
// (0 on CPU).
double peak_device_memory_gib(const std::string& device);
void reset_peak_device_memory(const std::string& device);

}  // namespace esft
