// Pieces of the multi-process support that need no second process: the launch environment of
// torchrun / srun / SageMaker, SLURM node lists, what --nproc-per-node means where, expert
// placement, and expert banks that hold (and load) only some experts of a layer.
#include <gtest/gtest.h>

#include <map>

#include "esft/dist/launch.h"
#include "esft/dist/parallel.h"
#include "esft/error.h"
#include "esft/nn/decoder.h"
#include "esft/tensor_io.h"
#include "test_util.h"

using namespace esft;

namespace {

dist::Env env_of(std::map<std::string, std::string> m) {
  auto shared = std::make_shared<std::map<std::string, std::string>>(std::move(m));
  return [shared](const char* k) -> const char* {
    auto it = shared->find(k);
    return it == shared->end() ? nullptr : it->second.c_str();
  };
}

TEST(DistLaunch, NodeListExpansion) {
  using V = std::vector<std::string>;
  EXPECT_EQ(dist::expand_nodelist("node7"), V({"node7"}));
  EXPECT_EQ(dist::expand_nodelist("gpu[01-03,07],cpu5"), V({"gpu01", "gpu02", "gpu03", "gpu07", "cpu5"}));
  EXPECT_EQ(dist::expand_nodelist("io-[8-10]-ib,a[1]"), V({"io-8-ib", "io-9-ib", "io-10-ib", "a1"}));
  EXPECT_EQ(dist::expand_nodelist("n[008-010]"), V({"n008", "n009", "n010"}));
  EXPECT_NE(test::error_of([] { dist::expand_nodelist("gpu[01-03"); }).find("unbalanced"), std::string::npos);
  EXPECT_NE(test::error_of([] { dist::expand_nodelist("gpu[3-1]"); }).find("backwards"), std::string::npos);
  EXPECT_NE(test::error_of([] { dist::expand_nodelist("gpu[a-b]"); }).find("not a number"), std::string::npos);
}

TEST(DistLaunch, WorldFromEnvironment) {
  auto none = dist::world_from_env(env_of({}));
  EXPECT_FALSE(none.launched());
  EXPECT_EQ(none.world_size, 1);

  auto tr = dist::world_from_env(env_of({{"RANK", "5"}, {"WORLD_SIZE", "8"}, {"LOCAL_RANK", "1"}, {"LOCAL_WORLD_SIZE", "4"},
                                         {"MASTER_ADDR", "10.0.0.2"}, {"MASTER_PORT", "29411"}}));
  EXPECT_EQ(tr.launcher, "torchrun");
  EXPECT_EQ(tr.rank, 5);
  EXPECT_EQ(tr.world_size, 8);
  EXPECT_EQ(tr.local_rank, 1);
  EXPECT_EQ(tr.local_world_size, 4);
  EXPECT_EQ(tr.master_addr, "10.0.0.2");
  EXPECT_EQ(tr.master_port, 29411);

  // srun: the master is the first host of the node list, the port follows the job id.
  auto sl = dist::world_from_env(env_of({{"SLURM_PROCID", "3"}, {"SLURM_NTASKS", "4"}, {"SLURM_LOCALID", "1"},
                                         {"SLURM_STEP_ID", "0"}, {"SLURM_TASKS_PER_NODE", "2(x2)"},
                                         {"SLURM_JOB_NODELIST", "gpu[12-13]"}, {"SLURM_JOB_ID", "123456"}}));
  EXPECT_EQ(sl.launcher, "slurm");
  EXPECT_EQ(sl.rank, 3);
  EXPECT_EQ(sl.world_size, 4);
  EXPECT_EQ(sl.local_rank, 1);
  EXPECT_EQ(sl.local_world_size, 2);
  EXPECT_EQ(sl.master_addr, "gpu12");
  EXPECT_EQ(sl.master_port, 20000 + 123456 % 20000);
  // The batch script itself (no step id) is not a rank; MASTER_ADDR/PORT override SLURM's.
  EXPECT_FALSE(dist::world_from_env(env_of({{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "4"}})).launched());
  auto sl2 = dist::world_from_env(env_of({{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "2"}, {"SLURM_STEP_ID", "1"},
                                          {"MASTER_ADDR", "head"}, {"MASTER_PORT", "4000"}}));
  EXPECT_EQ(sl2.master_addr, "head");
  EXPECT_EQ(sl2.master_port, 4000);

  // SageMaker: hosts in sorted order, one process per host.
  auto sm = dist::world_from_env(env_of({{"SM_HOSTS", R"(["algo-2","algo-1"])"}, {"SM_CURRENT_HOST", "algo-2"},
                                         {"SM_NUM_GPUS", "8"}}));
  EXPECT_EQ(sm.launcher, "sagemaker");
  EXPECT_EQ(sm.rank, 1);
  EXPECT_EQ(sm.world_size, 2);
  EXPECT_EQ(sm.local_world_size, 1);
  EXPECT_EQ(sm.master_addr, "algo-1");

  // Malformed values name the variable.
  EXPECT_NE(test::error_of([] { dist::world_from_env(env_of({{"RANK", "x"}, {"WORLD_SIZE", "2"}})); }).find("RANK=\"x\""),
            std::string::npos);
  EXPECT_NE(test::error_of([] { dist::world_from_env(env_of({{"RANK", "2"}, {"WORLD_SIZE", "2"}})); }).find("outside"),
            std::string::npos);
  EXPECT_NE(test::error_of([] {
              dist::world_from_env(env_of({{"SM_HOSTS", R"(["a"])"}, {"SM_CURRENT_HOST", "b"}}));
            }).find("SM_CURRENT_HOST \"b\""),
            std::string::npos);
}

TEST(DistLaunch, WhatNprocPerNodeMeans) {
  // Alone: spawn N on this node.
  auto alone = dist::plan_launch(4, env_of({}));
  EXPECT_TRUE(alone.spawn);
  EXPECT_EQ(alone.nproc, 4);
  EXPECT_EQ(alone.n_nodes, 1);
  // Not given: do as the environment says.
  EXPECT_FALSE(dist::plan_launch(0, env_of({})).spawn);
  // A worker of our own launcher or of torchrun with the same count: do the work.
  auto worker = dist::plan_launch(2, env_of({{"RANK", "1"}, {"WORLD_SIZE", "2"}, {"LOCAL_WORLD_SIZE", "2"}}));
  EXPECT_FALSE(worker.spawn);
  EXPECT_EQ(worker.world.rank, 1);
  // srun with one task per node: each task spawns its node's workers.
  auto node = dist::plan_launch(8, env_of({{"SLURM_PROCID", "1"}, {"SLURM_NTASKS", "3"}, {"SLURM_STEP_ID", "0"},
                                           {"SLURM_JOB_NODELIST", "h[1-3]"}, {"SLURM_JOB_ID", "7"}}));
  EXPECT_TRUE(node.spawn);
  EXPECT_EQ(node.node_rank, 1);
  EXPECT_EQ(node.n_nodes, 3);
  EXPECT_EQ(node.master_addr, "h1");
  // A contradiction is an error naming both counts.
  auto msg = test::error_of([] { dist::plan_launch(8, env_of({{"RANK", "0"}, {"WORLD_SIZE", "4"}, {"LOCAL_WORLD_SIZE", "4"}})); });
  EXPECT_NE(msg.find("--nproc-per-node 8"), std::string::npos) << msg;
  EXPECT_NE(msg.find("started 4"), std::string::npos) << msg;
}

TEST(DistPlacement, TrainableExpertsSpreadEvenly) {
  // ESFT trains the busiest experts, e.g. 0..3: contiguous blocks would put them all on rank 0.
  const std::vector<int> trainable = {3, 0, 2, 1, 9};
  for (int ep : {1, 2, 4, 8}) {
    std::vector<int64_t> held_total(16, 0), trained_per_rank(ep, 0);
    for (int r = 0; r < ep; ++r) {
      auto p = dist::place_experts(16, trainable, ep, r);
      auto held = p.held(16);
      EXPECT_EQ(int64_t(held.size()), 16 / ep) << "ep " << ep << " rank " << r;
      for (auto e : held) ++held_total[e];
      for (int e : trainable)
        if (p.owner_of(e) == r) ++trained_per_rank[r];
    }
    for (int e = 0; e < 16; ++e) EXPECT_EQ(held_total[e], 1) << "expert " << e << " held once, ep " << ep;
    const int64_t lo = int64_t(trainable.size()) / ep, hi = lo + (int64_t(trainable.size()) % ep ? 1 : 0);
    for (int r = 0; r < ep; ++r) {
      EXPECT_GE(trained_per_rank[r], lo) << "ep " << ep;
      EXPECT_LE(trained_per_rank[r], hi) << "ep " << ep;
    }
  }
  EXPECT_NE(test::error_of([] { dist::place_experts(16, {}, 3, 0); }).find("--expert-parallel 3"), std::string::npos);
}

// A copy of the tiny checkpoint with transformers 5's fused expert tensors.
fs::path fused_copy(const fs::path& src, const fs::path& dir) {
  Checkpoint c(src);
  std::vector<HfTensor> out;
  std::map<std::string, std::vector<at::Tensor>> gate, up, down;
  for (auto& n : c.names()) {
    auto t = load_tensor(c, n);
    auto p = n.find(".mlp.experts.");
    if (p == std::string::npos) {
      out.push_back({n, t});
      continue;
    }
    auto prefix = n.substr(0, p + 12);
    if (n.find("gate_proj") != std::string::npos) gate[prefix].push_back(t);
    if (n.find("up_proj") != std::string::npos) up[prefix].push_back(t);
    if (n.find("down_proj") != std::string::npos) down[prefix].push_back(t);
  }
  // Names sort as experts.0, experts.1, experts.10, ...: put the rows back in id order.
  auto by_id = [](std::vector<at::Tensor> v) {
    std::vector<std::string> keys;
    for (size_t i = 0; i < v.size(); ++i) keys.push_back(std::to_string(i));
    std::sort(keys.begin(), keys.end());
    std::vector<at::Tensor> r(v.size());
    for (size_t i = 0; i < v.size(); ++i) r[std::stoi(keys[i])] = v[i];
    return r;
  };
  for (auto& [prefix, g] : gate) {
    auto gs = by_id(g), us = by_id(up[prefix]), ds = by_id(down[prefix]);
    std::vector<at::Tensor> gu;
    for (size_t e = 0; e < gs.size(); ++e) gu.push_back(at::cat({gs[e], us[e]}, 0));
    out.push_back({prefix + ".gate_up_proj", at::stack(gu)});
    out.push_back({prefix + ".down_proj", at::stack(ds)});
  }
  fs::create_directories(dir);
  save_checkpoint_tensors(dir, out);
  fs::copy_file(src / "config.json", dir / "config.json");
  return dir;
}

TEST(DistPlacement, BanksHoldAndLoadOnlyTheirExperts) {
  const fs::path tiny = test::source_dir() / "tests/data/tiny-qwen3-moe";
  auto dir = test::temp_dir("dist-banks");
  ExpertSelection sel;
  sel.experts = {{1, {5, 0, 9}}, {3, {12}}};
  auto full = load_model(tiny, LoadOptions{});
  full->configure_training(sel);
  auto* full_dec = dynamic_cast<nn::DecoderModel*>(full.get());
  for (const auto& ckpt : {tiny, fused_copy(tiny, dir / "fused")}) {
    for (int rank = 0; rank < 4; ++rank) {
      LoadOptions lo;
      lo.expert_placement = [&](int64_t layer, int64_t n) {
        auto it = sel.experts.find(int(layer));
        return dist::place_experts(n, it == sel.experts.end() ? std::vector<int>{} : it->second, 4, rank);
      };
      auto part = load_model(ckpt, lo);
      part->configure_training(sel);
      auto* dec = dynamic_cast<nn::DecoderModel*>(part.get());
      for (int layer : part->moe_layers()) {
        auto& banks = dec->moe_block(layer)->banks();
        auto& all = full_dec->moe_block(layer)->banks();
        EXPECT_EQ(banks.slots_per_rank().size(), 4u);
        EXPECT_EQ(banks.slots_per_rank()[rank], 4);
        // Slots of every rank in one numbering: a permutation of 0..15.
        auto slots = std::get<0>(banks.slot_of_expert().sort());
        EXPECT_TRUE(at::equal(slots, at::arange(16, at::kLong))) << ckpt << " layer " << layer;
        for (int64_t e = 0; e < 16; ++e) {
          ASSERT_EQ(banks.holds(e), banks.placement().owner_of(e) == rank);
          if (!banks.holds(e)) continue;
          EXPECT_TRUE(at::equal(banks.expert(e).gate_up, all.expert(e).gate_up)) << ckpt << " expert " << e;
          EXPECT_TRUE(at::equal(banks.expert(e).down, all.expert(e).down)) << ckpt << " expert " << e;
        }
        // This rank's trainable tensors are exactly its selected experts.
        std::vector<int64_t> mine;
        auto it = sel.experts.find(layer);
        if (it != sel.experts.end())
          for (int e : it->second)
            if (banks.holds(e)) mine.push_back(e);
        std::sort(mine.begin(), mine.end());
        EXPECT_EQ(banks.trainable_ids(), mine);
      }
    }
  }
}

}  // namespace
