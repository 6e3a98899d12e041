// Private to src/dist: c10d backend construction (Gloo here, NCCL in nccl_backend.cpp when the
// torch build and the headers have it).
#pragma once
#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/Store.hpp>

#include <chrono>

namespace esft::dist {

c10::intrusive_ptr<c10d::Backend> make_gloo_backend(const c10::intrusive_ptr<c10d::Store>& store, int rank, int size,
                                                    const std::string& master_addr, std::chrono::milliseconds timeout);
// Fails clearly when this esft was built without NCCL.
c10::intrusive_ptr<c10d::Backend> make_nccl_backend(const c10::intrusive_ptr<c10d::Store>& store, int rank, int size,
                                                    const at::Device& device, std::chrono::milliseconds timeout);
bool have_nccl();

}  // namespace esft::dist
