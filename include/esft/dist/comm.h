// Process groups on PyTorch's c10d: a TCPStore rendezvous, ProcessGroupGloo for CPU tensors and
// ProcessGroupNCCL for CUDA tensors (when this build has NCCL), wrapped in the few collectives
// esft uses. The c10d headers stay inside src/dist (they are slow to compile).
//
// Failure handling: collectives time out (ESFT_COLLECTIVE_TIMEOUT_S, default 1800 s), and a
// watchdog thread per rank watches the store: a rank that fails posts its error there, the
// others print it and exit within a second or two instead of waiting in a collective; losing
// the store (rank 0 gone) ends them too.
#pragma once
#include <ATen/ATen.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

namespace esft::dist {

struct WorldInfo;

// One process group. A group of one process needs no backend: its collectives are identities.
class Group {
 public:
  Group() = default;  // the group of this process alone
  int rank() const { return rank_; }
  int size() const { return size_; }
  const std::vector<int>& members() const { return members_; }  // world ranks, by group rank
  const at::Device& device() const { return device_; }           // where its tensors must live

  void all_reduce_sum(at::Tensor& t) const;  // in place
  void all_reduce_max(at::Tensor& t) const;
  // Rows of `in` (dim 0) go send_rows[q] to group rank q; returns the received rows, recv_rows[p]
  // from rank p, in rank order.
  at::Tensor all_to_all(const at::Tensor& in, const std::vector<int64_t>& send_rows,
                        const std::vector<int64_t>& recv_rows) const;
  void send(const at::Tensor& t, int dst, int tag) const;  // t contiguous
  void recv(at::Tensor& t, int src, int tag) const;
  void broadcast(at::Tensor& t, int root) const;
  void barrier() const;

  struct Backend;  // c10d backend holder (src/dist/comm.cpp)

 private:
  friend class Comm;
  int rank_ = 0, size_ = 1;
  std::vector<int> members_{0};
  at::Device device_{at::kCPU};
  std::shared_ptr<Backend> backend_;
};

// The rendezvous and every group of one job.
class Comm {
 public:
  // Connects to the store of rank 0 (which serves it) and builds the world group on `device`
  // ("cpu": Gloo; "cuda:N": NCCL).
  Comm(const WorldInfo& world, const at::Device& device);
  ~Comm();
  const Group& world() const { return world_; }
  // A sub-group of `members` (world ranks, every rank of it calls this with the same list,
  // in the same order of creation on every rank). `name` keys its rendezvous.
  Group subgroup(const std::string& name, const std::vector<int>& members);
  // This rank failed: tell the others (they exit with it), unless another rank's failure came
  // first. Returns the failure that counts ("rank R failed: ..."). A communication error here
  // is usually the echo of another rank's end: its report is waited for a moment.
  std::string report_failure(const std::string& message);
  // A clean end: stop watching for failures and wait for everyone.
  void finish();

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
  Group world_;
};

// The job's Comm while one exists (for main()'s error path); null otherwise.
Comm* active_comm();
// Seconds collectives wait before failing (ESFT_COLLECTIVE_TIMEOUT_S).
std::chrono::milliseconds collective_timeout();

}  // namespace esft::dist
