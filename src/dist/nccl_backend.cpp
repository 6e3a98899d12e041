// ProcessGroupNCCL for CUDA tensors. Compiled with NCCL when CMake found nccl.h next to a CUDA
// torch build (ESFT_HAVE_NCCL); otherwise asking for it fails with a clear message.
#include "backends.h"

#include "esft/error.h"

#ifdef ESFT_HAVE_NCCL
#include <c10/cuda/CUDAFunctions.h>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

namespace esft::dist {

#ifdef ESFT_HAVE_NCCL
bool have_nccl() { return true; }

c10::intrusive_ptr<c10d::Backend> make_nccl_backend(const c10::intrusive_ptr<c10d::Store>& store, int rank, int size,
                                                    const at::Device& device, std::chrono::milliseconds timeout) {
  ESFT_CHECK(device.is_cuda() && device.has_index(), "NCCL process groups need a CUDA device with an index, not {}",
             device.str());
  c10::cuda::set_device(device.index());
  auto opts = c10d::ProcessGroupNCCL::Options::create();
  opts->timeout = timeout;
  auto pg = c10::make_intrusive<c10d::ProcessGroupNCCL>(store, rank, size, opts);
  pg->setBoundDeviceId(device);  // one GPU per rank: lets NCCL create its communicator eagerly
  return pg;
}
#else
bool have_nccl() { return false; }

c10::intrusive_ptr<c10d::Backend> make_nccl_backend(const c10::intrusive_ptr<c10d::Store>&, int, int, const at::Device& device,
                                                    std::chrono::milliseconds) {
  fail("multi-GPU runs on {} need NCCL, and this esft was built without it (no nccl.h found at configure time: "
       "install the torch wheel's nvidia-nccl package or set -DESFT_NCCL_INCLUDE_DIR)",
       device.str());
}
#endif

}  // namespace esft::dist
