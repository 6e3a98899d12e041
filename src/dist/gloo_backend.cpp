// ProcessGroupGloo for CPU tensors. The PyPI torch wheel has Gloo inside libtorch_cpu but ships
// no Gloo headers; CMake finds them (Debian's libgloo-dev) and defines ESFT_HAVE_GLOO. Only the
// constructor, the device factories and the Backend interface are used, none of Gloo's own
// inline code, so the headers' version need not be the one torch was built with.
#include <cstdlib>

#include "backends.h"
#include "esft/error.h"

#ifdef ESFT_HAVE_GLOO
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#endif

namespace esft::dist {

#ifdef ESFT_HAVE_GLOO
namespace {
bool is_loopback(const std::string& addr) { return addr == "localhost" || addr.rfind("127.", 0) == 0 || addr == "::1"; }
}  // namespace

c10::intrusive_ptr<c10d::Backend> make_gloo_backend(const c10::intrusive_ptr<c10d::Store>& store, int rank, int size,
                                                    const std::string& master_addr, std::chrono::milliseconds timeout) {
  auto opts = c10d::ProcessGroupGloo::Options::create(timeout);
  // GLOO_SOCKET_IFNAME picks the interface, as in PyTorch; a single-node job stays on loopback.
  if (const char* ifname = std::getenv("GLOO_SOCKET_IFNAME"); ifname && *ifname)
    opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(ifname));
  else if (is_loopback(master_addr))
    opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
  else
    opts->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
  return c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, size, opts);
}
#else
c10::intrusive_ptr<c10d::Backend> make_gloo_backend(const c10::intrusive_ptr<c10d::Store>&, int, int, const std::string&,
                                                    std::chrono::milliseconds) {
  fail("multi-process runs on the CPU need Gloo, and this esft was built without its headers (install libgloo-dev "
       "and reconfigure)");
}
#endif

}  // namespace esft::dist
