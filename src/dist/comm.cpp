#include "esft/dist/comm.h"

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <thread>

#include "backends.h"
#include "esft/dist/launch.h"
#include "esft/error.h"
#include "esft/log.h"

namespace esft::dist {

struct Group::Backend {
  c10::intrusive_ptr<c10d::Backend> pg;
};

namespace {

Comm* g_active = nullptr;
const char* kFailedKey = "esft/failed";

}  // namespace

std::chrono::milliseconds collective_timeout() {
  const char* v = std::getenv("ESFT_COLLECTIVE_TIMEOUT_S");
  long s = 1800;
  if (v && *v) {
    char* end;
    s = std::strtol(v, &end, 10);
    if (*end || s <= 0) fail("ESFT_COLLECTIVE_TIMEOUT_S=\"{}\": expected a positive number of seconds", v);
  }
  return std::chrono::seconds(s);
}

Comm* active_comm() { return g_active; }

// ---- Group ----------------------------------------------------------------------------------

void Group::all_reduce_sum(at::Tensor& t) const {
  if (size_ == 1) return;
  std::vector<at::Tensor> v{t};
  backend_->pg->allreduce(v)->wait();
}

void Group::all_reduce_max(at::Tensor& t) const {
  if (size_ == 1) return;
  std::vector<at::Tensor> v{t};
  c10d::AllreduceOptions o;
  o.reduceOp = c10d::ReduceOp::MAX;
  backend_->pg->allreduce(v, o)->wait();
}

at::Tensor Group::all_to_all(const at::Tensor& in, const std::vector<int64_t>& send_rows,
                             const std::vector<int64_t>& recv_rows) const {
  ESFT_CHECK(int(send_rows.size()) == size_ && int(recv_rows.size()) == size_, "all-to-all: {} send and {} receive "
             "counts for a group of {}", send_rows.size(), recv_rows.size(), size_);
  if (size_ == 1) return in;
  int64_t n = 0;
  for (auto r : recv_rows) n += r;
  auto shape = in.sizes().vec();
  shape[0] = n;
  auto out = at::empty(shape, in.options());
  auto src = in.contiguous();
  auto s = send_rows, r = recv_rows;  // c10d takes them by non-const reference
  backend_->pg->alltoall_base(out, src, r, s)->wait();
  return out;
}

void Group::send(const at::Tensor& t, int dst, int tag) const {
  std::vector<at::Tensor> v{t};
  backend_->pg->send(v, dst, tag)->wait();
}

void Group::recv(at::Tensor& t, int src, int tag) const {
  std::vector<at::Tensor> v{t};
  backend_->pg->recv(v, src, tag)->wait();
}

void Group::broadcast(at::Tensor& t, int root) const {
  if (size_ == 1) return;
  std::vector<at::Tensor> v{t};
  c10d::BroadcastOptions o;
  o.rootRank = root;
  backend_->pg->broadcast(v, o)->wait();
}

void Group::barrier() const {
  if (size_ == 1) return;
  // A tiny all-reduce rather than Backend::barrier: NCCL's barrier guesses a device.
  auto t = at::zeros({1}, at::TensorOptions().device(device_));
  all_reduce_sum(t);
}

// ---- Comm -------------------------------------------------------------------------------------

struct Comm::Impl {
  WorldInfo world;
  at::Device device{at::kCPU};
  std::chrono::milliseconds timeout;
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::Store> watch_store;  // own connection: the watchdog polls from its thread
  std::thread watchdog;
  std::atomic<bool> stop{false}, posted{false};

  c10::intrusive_ptr<c10d::Backend> backend(const std::string& name, int rank, int size) {
    auto prefixed = c10::make_intrusive<c10d::PrefixStore>(name, store);
    if (device.is_cuda()) return make_nccl_backend(prefixed, rank, size, device, timeout);
    return make_gloo_backend(prefixed, rank, size, world.master_addr, timeout);
  }

  void watch() {
    while (!stop.load()) {
      bool failed = false;
      std::string lost;
      try {
        failed = watch_store->check({kFailedKey});
      } catch (const std::exception& e) {
        lost = e.what();
      }
      if (stop.load() || posted.load()) return;
      if (failed || !lost.empty()) {
        std::string msg;
        if (failed) {
          try {
            auto v = watch_store->get(kFailedKey);
            msg = std::string(v.begin(), v.end());
          } catch (const std::exception&) {
            msg = "another rank failed";
          }
        } else {
          msg = fmt::format("lost the rendezvous store at {}:{} (rank 0 ended?)", world.master_addr, world.master_port);
        }
        std::fprintf(stderr, "esft [rank %d]: stopping: %s\n", world.rank, msg.c_str());
        std::fflush(stderr);
        std::_Exit(1);
      }
      for (int i = 0; i < 10 && !stop.load(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }
};

Comm::Comm(const WorldInfo& world, const at::Device& device) : impl_(std::make_unique<Impl>()) {
  auto& m = *impl_;
  m.world = world;
  m.device = device;
  m.timeout = collective_timeout();
  c10d::TCPStoreOptions so;
  so.port = uint16_t(world.master_port);
  so.isServer = world.rank == 0 && !world.agent_store;
  so.numWorkers = world.world_size;
  so.waitWorkers = true;
  so.timeout = m.timeout;
  try {
    // Keys live under esft/attempt_N/ (a store shared with torchrun's agent, restarted attempts).
    const auto prefix = fmt::format("esft/attempt_{}", world.restart);
    if (world.agent_store) so.numWorkers = std::nullopt, so.waitWorkers = false;
    m.store = c10::make_intrusive<c10d::PrefixStore>(prefix, c10::make_intrusive<c10d::TCPStore>(world.master_addr, so));
    c10d::TCPStoreOptions wo = so;
    wo.isServer = false;
    wo.numWorkers = std::nullopt;
    wo.waitWorkers = false;
    m.watch_store = c10::make_intrusive<c10d::PrefixStore>(prefix, c10::make_intrusive<c10d::TCPStore>(world.master_addr, wo));
  } catch (const std::exception& e) {
    fail("rank {}: rendezvous with {}:{} ({} ranks) failed: {}", world.rank, world.master_addr, world.master_port,
         world.world_size, e.what());
  }
  world_.rank_ = world.rank;
  world_.size_ = world.world_size;
  world_.members_.resize(world.world_size);
  for (int r = 0; r < world.world_size; ++r) world_.members_[r] = r;
  world_.device_ = device;
  if (world.world_size > 1) world_.backend_ = std::make_shared<Group::Backend>(Group::Backend{m.backend("world", world.rank, world.world_size)});
  m.watchdog = std::thread([this] { impl_->watch(); });
  g_active = this;
}

Comm::~Comm() {
  if (g_active == this) g_active = nullptr;
  impl_->stop = true;
  if (impl_->watchdog.joinable()) impl_->watchdog.join();
}

Group Comm::subgroup(const std::string& name, const std::vector<int>& members) {
  Group g;
  g.device_ = impl_->device;
  g.members_ = members;
  g.size_ = int(members.size());
  auto it = std::find(members.begin(), members.end(), impl_->world.rank);
  ESFT_CHECK(it != members.end(), "rank {} builds group {} without being in it", impl_->world.rank, name);
  g.rank_ = int(it - members.begin());
  if (g.size_ > 1) g.backend_ = std::make_shared<Group::Backend>(Group::Backend{impl_->backend(name, g.rank_, g.size_)});
  return g;
}

std::string Comm::report_failure(const std::string& message) {
  impl_->posted = true;  // the watchdog must not end this process before it has said why
  auto text = fmt::format("rank {} failed: {}", impl_->world.rank, message);
  try {
    auto& store = *impl_->watch_store;
    const bool echo = message.find("Connection closed") != std::string::npos ||
                      message.find("Connection reset") != std::string::npos || message.find("gloo") != std::string::npos ||
                      message.find("NCCL") != std::string::npos || message.find("imed out") != std::string::npos;
    for (int i = 0; echo && i < 60 && !store.check({kFailedKey}); ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    auto v = store.compareSet(kFailedKey, std::vector<uint8_t>{}, std::vector<uint8_t>(text.begin(), text.end()));
    return std::string(v.begin(), v.end());
  } catch (const std::exception&) {
    return text;  // the store is gone (rank 0 ended): the launcher still stops everyone
  }
}

void Comm::finish() {
  impl_->stop = true;
  if (impl_->watchdog.joinable()) impl_->watchdog.join();
  world_.barrier();
}

}  // namespace esft::dist
