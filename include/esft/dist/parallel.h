// The parallel context the engines (trainer, scorer) call at a few points: expert and data
// parallelism over c10d process groups, passed around explicitly (Megatron's pg_collection).
//
// Layout, for world size W and --expert-parallel E (E divides W):
//   world / data-parallel  every rank; each runs its own share of every global batch, and the
//                          replicated (dense) trainable tensors are summed over all W ranks;
//   expert-parallel (EP)   consecutive blocks of E ranks {kE .. kE+E-1}: each block holds every
//                          expert once, and tokens travel by all-to-all within it;
//   expert-data-parallel   the W/E ranks with the same EP rank {i, i+E, ...}: replicas of the same
//   (EDP)                  experts, whose gradients are summed over this group.
// Gradients are SUMs of per-token-sum losses divided by the global label-token count, so the
// result equals one process running the same global batch (up to the order of float additions).
//
// Without a launcher the context is the single process: every group has one member and each
// call below reduces to what the single-process engine did. Launched with one process
// (--nproc-per-node 1) it takes the same path.
#pragma once
#include <ATen/ATen.h>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "esft/dist/comm.h"
#include "esft/dist/ep_dispatch.h"
#include "esft/dist/launch.h"
#include "esft/expert_config.h"
#include "esft/model.h"

namespace esft {
class AdamW;
}

namespace esft::dist {

// The placement rule above, for one layer of n_experts with these trainable experts (in the
// selection's order) over ep_size ranks, as seen from `rank`.
ExpertPlacement place_experts(int64_t n_experts, const std::vector<int>& trainable, int ep_size, int rank);

class ParallelContext {
 public:
  // The job's context, made once per process from the launcher's environment; `device` as the
  // user asked for it ("cpu", "cuda", ...). Fails when E does not divide the world size.
  static ParallelContext& init(int expert_parallel, const std::string& device);
  static ParallelContext* get();  // null before init

  bool launched() const { return world_info_.launched(); }
  int rank() const { return world_.rank(); }
  int world_size() const { return world_.size(); }
  bool is_main() const { return rank() == 0; }
  int ep_size() const { return ep_.size(); }
  int ep_rank() const { return ep_.rank(); }
  int edp_size() const { return edp_.size(); }
  const std::string& device() const { return device_; }  // "cuda" becomes this rank's "cuda:LOCAL_RANK"
  const Group& world() const { return world_; }
  std::string describe() const;  // one line for the log

  // ---- model set-up ----
  // How each MoE layer's experts are placed over the EP group: the selection's trainable experts
  // round-robin in the selection's order (so they spread evenly), then the frozen ones filling
  // each rank up to E/ep experts in ascending id. Null when there is no expert parallelism.
  std::function<ExpertPlacement(int64_t layer, int64_t n_experts)> placement(const ExpertSelection* sel) const;
  // Installs the all-to-all dispatchers (EP > 1). sel: the training selection (null: inference).
  void attach(MoeModel& model, const ExpertSelection* sel);

  // ---- work sharing ----
  // The micro batches of one step, in the single-process order 0..n-1, go round-robin over the
  // ranks: rank r runs r, r+W, ... Every rank runs rounds(n) forward passes when the ranks must
  // stay in lockstep (EP: every forward is a collective); a rank out of work then runs a dummy.
  std::vector<int64_t> my_share(int64_t n) const;
  int64_t rounds(int64_t n) const;
  bool lockstep() const { return ep_size() > 1; }

  // ---- reductions (host values; identities on one process) ----
  std::vector<double> sum(std::vector<double> values) const;
  double max(double value) const;

  // Sums gradients: replicated tensors over the world, expert banks over their EDP group. A tensor
  // with no gradient on any rank keeps none (AdamW skips it, as on one process).
  void reduce_gradients(const std::vector<TrainableTensor>& params) const;
  // clip_grad_norm over the whole model, every expert counted once; returns the norm.
  double clip_grad_norm(const std::vector<TrainableTensor>& params, double max_norm) const;
  // Host seconds spent in all-to-all since the last call.
  double take_comm_seconds();

  // ---- outputs (rank 0 writes; every rank must call these) ----
  // The adapter tensors of the whole model on rank 0 (trained experts gathered from their
  // ranks, in the single-process order); empty on the other ranks.
  std::vector<HfTensor> gather_adapter(MoeModel& model) const;
  // fp32 master weights and optimizer state in a world-size independent form: expert bank rows
  // saved per expert ("param.<bank>.expert_<e>"), so a checkpoint resumes at any world size.
  // Complete on rank 0, empty elsewhere.
  std::vector<HfTensor> gather_train_state(const AdamW& optim) const;
  // Loads this rank's part of such a state (or of the older one-tensor-per-bank form).
  void load_train_state(const std::map<std::string, at::Tensor>& state, AdamW& optim, const std::string& where) const;
  // Named byte blobs (files) of every rank on rank 0, rank by rank; empty elsewhere.
  std::vector<std::pair<std::string, std::string>> gather_blobs(std::vector<std::pair<std::string, std::string>> mine) const;

  // Rank 0's text on every rank (a file only rank 0 wrote, e.g. the selected expert config).
  std::string broadcast_text(const std::string& text) const;

  void barrier() const { world_.barrier(); }
  // Called by main(). A failure: tells the other ranks (report_failure) and returns the failure
  // that counts, which may be another rank's ("" when this process is alone). end_job: a clean
  // end waits for all ranks; after a failure it exits at once (collectives may hang otherwise).
  static std::string report_failure(const std::string& error);
  static void end_job(bool ok);

 private:
  ParallelContext() = default;
  std::vector<HfTensor> gather_named(const Group& g, std::vector<HfTensor> mine) const;

  WorldInfo world_info_;
  std::string device_;
  std::unique_ptr<Comm> comm_;
  Group world_, ep_, edp_;
  std::shared_ptr<CommTimer> timer_ = std::make_shared<CommTimer>();
  std::vector<std::pair<std::string, int64_t>> bank_layer_;  // bank name prefix -> MoE layer (attach)
  std::vector<int64_t> moe_layers_;
};

}  // namespace esft::dist
