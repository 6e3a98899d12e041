// Faults and bad input through the esft binary on the bundled tiny Qwen3-MoE: non-finite losses
// and checkpoints, one run per output directory, SIGTERM and kill -9 against an uninterrupted
// run, stale temporaries, resume fallback, token ids outside the vocabulary, outputs that would
// overwrite inputs, flag errors, merge checks, a micro-batch reaching no trained expert.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <thread>

#include "esft/model.h"
#include "esft/tensor_io.h"
#include "test_util.h"

using namespace esft;

namespace {

const fs::path kModel = test::source_dir() / "tests/data/tiny-qwen3-moe";
const fs::path kData = test::source_dir() / "tests/data/tiny-intent-train.tokens.jsonl";

std::string bin() { return test::esft_bin(); }

// Runs `esft ARGS 2> log`; returns the exit status, *err the log.
int esft(const std::string& args, const fs::path& log, std::string* err = nullptr) {
  int rc = test::run(bin() + " " + args + " 2> " + log.string());
  if (err) *err = read_file(log);
  return rc;
}

fs::path write_config(const fs::path& dir, const std::string& json) {
  auto p = dir / "expert_config.json";
  write_file_atomic(p, json);
  return p;
}

std::string train_args(const fs::path& cfg, const fs::path& out, const std::string& extra) {
  return "train --model " + kModel.string() + " --device cpu --data " + kData.string() + " --expert-config " +
         cfg.string() + " --output " + out.string() + " " + extra;
}

// A copy of the tiny model with `name` overwritten by NaN.
fs::path nan_model(const fs::path& dir, const std::string& name) {
  fs::copy(kModel, dir, fs::copy_options::recursive);
  auto tensors = load_safetensors(dir / "model.safetensors");
  std::vector<HfTensor> out;
  for (auto& [n, t] : tensors) out.push_back({n, n == name ? at::full_like(t, NAN) : t});
  save_safetensors(dir / "model.safetensors", out);
  return dir;
}

bool same_files(const fs::path& a, const fs::path& b) { return read_file(a) == read_file(b); }

// A child process running `esft args`, stderr to log.
struct Child {
  pid_t pid = -1;
  Child(const std::string& args, const fs::path& log) {
    pid = ::fork();
    if (pid == 0) {
      ::execl("/bin/sh", "sh", "-c", ("exec " + bin() + " " + args + " 2> " + log.string()).c_str(), (char*)nullptr);
      ::_exit(127);
    }
  }
  int wait() {
    int status = 0;
    ::waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }
};

size_t lines(const fs::path& p) {
  if (!fs::exists(p)) return 0;
  std::ifstream in(p);
  size_t n = 0;
  for (std::string l; std::getline(in, l);) n += !l.empty();
  return n;
}

// Waits until the run's metrics.jsonl has at least n records (the child still running).
bool wait_for_steps(const fs::path& metrics, size_t n, pid_t pid) {
  for (int i = 0; i < 60000; ++i) {
    if (lines(metrics) >= n) return true;
    if (::waitpid(pid, nullptr, WNOHANG) == pid) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return false;
}

void expect_same_result(const fs::path& a, const fs::path& b, const std::string& what) {
  EXPECT_TRUE(same_files(a / "adapter/model.safetensors", b / "adapter/model.safetensors")) << what;
  auto ma = test::read_jsonl(a / "metrics.jsonl"), mb = test::read_jsonl(b / "metrics.jsonl");
  ASSERT_EQ(ma.size(), mb.size()) << what;
  for (size_t i = 0; i < ma.size(); ++i)
    for (auto k : {"step", "loss", "grad_norm", "lr", "loss_tokens"}) EXPECT_EQ(ma[i][k], mb[i][k]) << what << " step " << i + 1 << " " << k;
}

// ---- non-finite values ----------------------------------------------------------------------

TEST(Reliability, NonFiniteLossStopsNamingTheStepAndKeepsTheLastGoodCheckpoint) {
  auto dir = test::temp_dir("rel-nonfinite");
  auto cfg = write_config(dir, R"({"experts": {"1": [0, 1, 2, 3], "2": [0, 1, 2, 3], "3": [0, 1, 2, 3]}})");
  // An absurd learning rate: step 1 is fine, its update makes step 2's loss overflow.
  const std::string common = "--max-steps 4 --max-length 64 --packing none --micro-batch-size 4 --learning-rate 1e30 "
                             "--save-steps 1 ";
  std::string err;
  EXPECT_EQ(esft(train_args(cfg, dir / "run", common), dir / "err.txt", &err), 1) << err;
  EXPECT_NE(err.find("step 2: the loss"), std::string::npos) << err;
  EXPECT_NE(err.find("is not finite"), std::string::npos) << err;
  EXPECT_NE(err.find("Last good checkpoint: " + (dir / "run/checkpoints/step-1").string()), std::string::npos) << err;
  EXPECT_EQ(err.find("Exception raised from"), std::string::npos) << "no C++ stack frames: " << err;
  EXPECT_TRUE(fs::exists(dir / "run/checkpoints/step-1/train_state.safetensors"));
  EXPECT_FALSE(fs::exists(dir / "run/checkpoints/step-2"));
  EXPECT_FALSE(fs::exists(dir / "run/adapter")) << "no adapter from a diverged run";
  auto m = test::read_jsonl(dir / "run/metrics.jsonl");
  ASSERT_EQ(m.size(), 2u);
  EXPECT_TRUE(m[1].contains("skipped"));
  // The checkpoint is good: resuming from it is refused nothing (it diverges again at step 2).
  EXPECT_EQ(esft(train_args(cfg, dir / "run", common + "--resume " + (dir / "run").string()), dir / "err2.txt", &err), 1);
  EXPECT_NE(err.find("resumed from " + (dir / "run/checkpoints/step-1").string()), std::string::npos) << err;

  // --max-nonfinite-steps: such steps are skipped and counted, the run ends normally.
  EXPECT_EQ(esft(train_args(cfg, dir / "skip", common + "--max-nonfinite-steps 5"), dir / "err3.txt", &err), 0) << err;
  EXPECT_NE(err.find("3 step(s) of 4 were skipped"), std::string::npos) << err;
  m = test::read_jsonl(dir / "skip/metrics.jsonl");
  ASSERT_EQ(m.size(), 4u);
  EXPECT_FALSE(m[0].contains("skipped"));
  for (int i = 1; i < 4; ++i) EXPECT_TRUE(m[i].contains("skipped")) << i;
  auto state = nlohmann::json::parse(read_file(dir / "skip/checkpoints/step-4/trainer_state.json"));
  EXPECT_EQ(state["skipped_nonfinite_steps"], 3);
  EXPECT_EQ(state["optimizer_steps"], 1);
  for (auto& [n, t] : load_safetensors(dir / "skip/adapter/model.safetensors"))
    EXPECT_TRUE(at::isfinite(t).all().item<bool>()) << n << ": a skipped step must not reach the weights";
  // ... but not more of them than allowed.
  EXPECT_EQ(esft(train_args(cfg, dir / "skip2", common + "--max-nonfinite-steps 1"), dir / "err4.txt", &err), 1);
  EXPECT_NE(err.find("step 3: the loss"), std::string::npos) << err;
}

TEST(Reliability, ResumeNeverStartsFromANonFiniteCheckpoint) {
  auto dir = test::temp_dir("rel-nanckpt");
  auto cfg = write_config(dir, R"({"experts": {"1": [0, 1], "2": [3]}})");
  const std::string common = "--max-steps 3 --max-length 64 --save-steps 1 --save-total-limit 3 ";
  ASSERT_EQ(esft(train_args(cfg, dir / "run", common), dir / "t.txt"), 0);
  // Inf in one trained weight of step-3's state and NaN in one optimizer moment of step-2's.
  auto poison = [&](int step, const std::string& prefix, float value) {
    const auto p = dir / ("run/checkpoints/step-" + std::to_string(step)) / "train_state.safetensors";
    std::vector<HfTensor> out;
    bool done = false;
    for (auto& [n, t] : load_safetensors(p)) {
      auto x = t.clone();
      if (!done && n.rfind(prefix, 0) == 0) x.view(-1)[0] = value, done = true;
      out.push_back({n, x});
    }
    ASSERT_TRUE(done) << prefix;
    save_safetensors(p, out);
  };
  poison(3, "param.", INFINITY);
  poison(2, "optim.exp_avg", NAN);
  const auto ckpt = [&](int s) { return (dir / ("run/checkpoints/step-" + std::to_string(s))).string(); };
  std::string err;
  // named explicitly: refused
  EXPECT_EQ(esft(train_args(cfg, dir / "r2", common + "--resume " + ckpt(3)), dir / "e.txt", &err), 1);
  EXPECT_NE(err.find("--resume " + ckpt(3) + ": cannot resume from it"), std::string::npos) << err;
  EXPECT_NE(err.find("holds NaN or Inf"), std::string::npos) << err;
  EXPECT_FALSE(fs::exists(dir / "r2/adapter"));
  // the run directory: both passed over, step 1 taken, and said so
  fs::remove_all(dir / "run/adapter");
  EXPECT_EQ(esft(train_args(cfg, dir / "run", common + "--resume " + (dir / "run").string()), dir / "e.txt", &err), 0) << err;
  EXPECT_NE(err.find("resuming from " + ckpt(1) + ", the newest usable checkpoint; passed over: " + ckpt(3)), std::string::npos)
      << err;
  EXPECT_NE(err.find(ckpt(2) + " (train_state.safetensors: optim.exp_avg"), std::string::npos) << err;
  for (auto& [n, t] : load_safetensors(dir / "run/adapter/model.safetensors"))
    EXPECT_TRUE(at::isfinite(t).all().item<bool>()) << n;
  // none usable: refused, listing them
  fs::remove_all(dir / "run/adapter");
  for (int s = 1; s <= 3; ++s) poison(s, "param.", NAN);
  EXPECT_EQ(esft(train_args(cfg, dir / "run", common + "--resume " + (dir / "run").string()), dir / "e.txt", &err), 1);
  EXPECT_NE(err.find("no usable checkpoint"), std::string::npos) << err;
  EXPECT_FALSE(fs::exists(dir / "run/adapter"));
  EXPECT_EQ(err.find("Exception raised from"), std::string::npos) << err;
}

TEST(Reliability, NanModelFailsTrainingAndScoringWithoutCompleteLookingOutputs) {
  auto dir = test::temp_dir("rel-nanmodel");
  auto model = nan_model(dir / "model", "model.layers.1.self_attn.o_proj.weight");
  auto cfg = write_config(dir, R"({"experts": {"2": [1]}})");
  std::string err;
  EXPECT_EQ(esft("train --model " + model.string() + " --device cpu --data " + kData.string() + " --expert-config " +
                     cfg.string() + " --output " + (dir / "run").string() + " --max-steps 2 --max-length 64",
                 dir / "err.txt", &err),
            1);
  EXPECT_NE(err.find("step 1: the loss (nan)"), std::string::npos) << err;
  EXPECT_NE(err.find("Last good checkpoint: none was written"), std::string::npos) << err;
  EXPECT_FALSE(fs::exists(dir / "run/adapter"));

  // Scoring: a good run first, then the NaN model over the same output: it fails, and what is
  // left has no summary and no routing log (neither the earlier run's, which no longer belong to
  // the directory's scores, nor a partial one with nan in it).
  const std::string score = " --device cpu --data " + kData.string() + " --n-sample-tokens 500 --output " + (dir / "scores").string();
  ASSERT_EQ(esft("score --model " + kModel.string() + score, dir / "s1.txt"), 0);
  ASSERT_TRUE(fs::exists(dir / "scores/summary.json"));
  EXPECT_EQ(esft("score --model " + model.string() + score, dir / "s2.txt", &err), 1);
  EXPECT_NE(err.find("non-finite gate weight"), std::string::npos) << err;
  EXPECT_EQ(err.find("Exception raised from"), std::string::npos) << err;
  EXPECT_FALSE(fs::exists(dir / "scores/summary.json"));
  EXPECT_FALSE(fs::exists(dir / "scores/score_config.json"));
  for (auto& e : fs::recursive_directory_iterator(dir / "scores"))
    EXPECT_EQ(e.path().filename().string().find("expert_weights_"), std::string::npos) << e.path();
  EXPECT_NE(esft("select --scores " + (dir / "scores").string() + " --output " + (dir / "sel.json").string(),
                 dir / "s3.txt"),
            0);
}

TEST(Reliability, MergeRefusesBrokenOrMismatchedAdapters) {
  auto dir = test::temp_dir("rel-merge");
  auto cfg = write_config(dir, R"({"experts": {"1": [0, 7], "3": [12]}})");
  ASSERT_EQ(esft(train_args(cfg, dir / "run", "--max-steps 1 --max-length 64"), dir / "t.txt"), 0);
  auto adapter = dir / "run/adapter";
  auto merge = [&](const fs::path& a, const fs::path& out, std::string* err) {
    return esft("merge --model " + kModel.string() + " --adapter " + a.string() + " --output " + out.string(),
                dir / "m.txt", err);
  };
  std::string err;
  // expert_config.json missing
  fs::copy(adapter, dir / "noconfig", fs::copy_options::recursive);
  fs::remove(dir / "noconfig/expert_config.json");
  EXPECT_EQ(merge(dir / "noconfig", dir / "m1", &err), 1);
  EXPECT_NE(err.find("no expert_config.json"), std::string::npos) << err;
  // expert_config.json that trains other experts than the tensors hold
  fs::copy(adapter, dir / "other", fs::copy_options::recursive);
  write_file_atomic(dir / "other/expert_config.json", R"({"experts": {"1": [0, 7], "3": [11]}})");
  EXPECT_EQ(merge(dir / "other", dir / "m2", &err), 1);
  EXPECT_NE(err.find("experts.12"), std::string::npos) << err;
  EXPECT_NE(err.find("do not belong together"), std::string::npos) << err;
  write_file_atomic(dir / "other/expert_config.json", R"({"experts": {"1": [0, 7], "3": [12, 13]}})");
  EXPECT_EQ(merge(dir / "other", dir / "m2", &err), 1);
  EXPECT_NE(err.find("lacks 3 tensor(s)"), std::string::npos) << err;
  // a NaN tensor
  fs::copy(adapter, dir / "nan", fs::copy_options::recursive);
  {
    auto t = load_safetensors(dir / "nan/model.safetensors");
    std::vector<HfTensor> out;
    for (auto& [n, x] : t) out.push_back({n, n.find("experts.7.up") != std::string::npos ? at::full_like(x, NAN) : x});
    save_safetensors(dir / "nan/model.safetensors", out);
  }
  EXPECT_EQ(merge(dir / "nan", dir / "m3", &err), 1);
  EXPECT_NE(err.find("model.layers.1.mlp.experts.7.up_proj.weight holds NaN or Inf"), std::string::npos) << err;
  EXPECT_FALSE(fs::exists(dir / "m1") || fs::exists(dir / "m2") || fs::exists(dir / "m3"));
  // outputs that would replace inputs
  EXPECT_EQ(merge(adapter, kModel, &err), 1);
  EXPECT_NE(err.find("is --model"), std::string::npos) << err;
  EXPECT_EQ(merge(adapter, dir / "run", &err), 1);
  EXPECT_NE(err.find("holds --adapter"), std::string::npos) << err;
  EXPECT_TRUE(fs::exists(adapter / "model.safetensors"));
  // --max-shard-size out of range
  EXPECT_EQ(esft("merge --model " + kModel.string() + " --adapter " + adapter.string() + " --output " +
                     (dir / "m4").string() + " --max-shard-size 1e30GB",
                 dir / "m.txt", &err),
            1);
  EXPECT_NE(err.find("--max-shard-size \"1e30GB\""), std::string::npos) << err;
  ASSERT_EQ(merge(adapter, dir / "good", &err), 0) << err;
}

// ---- one run per output directory --------------------------------------------------------------

TEST(Reliability, SecondRunOnOneOutputFailsAndLeavesItAlone) {
  auto dir = test::temp_dir("rel-lock");
  auto cfg = write_config(dir, R"({"experts": {"1": [0]}})");
  fs::create_directories(dir / "run");
  write_file_atomic(dir / "run/metrics.jsonl", "{\"step\": 1, \"loss\": 1.0}\n");
  // Another run holds the directory (flock(1) stands in for it).
  pid_t pid = ::fork();
  if (pid == 0) {
    // -o: the lock stays with flock itself (not its child), so killing flock frees it.
    ::execl("/usr/bin/flock", "flock", "-n", "-o", (dir / "run/.esft.lock").c_str(), "sleep", "30", (char*)nullptr);
    ::_exit(127);
  }
  for (int i = 0; i < 500 && !fs::exists(dir / "run/.esft.lock"); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  std::string err;
  EXPECT_EQ(esft(train_args(cfg, dir / "run", "--max-steps 1 --max-length 64"), dir / "err.txt", &err), 1);
  EXPECT_NE(err.find("--output " + (dir / "run").string() + " is in use by another esft run"), std::string::npos) << err;
  EXPECT_EQ(read_file(dir / "run/metrics.jsonl"), "{\"step\": 1, \"loss\": 1.0}\n");
  EXPECT_EQ(esft("score --model " + kModel.string() + " --device cpu --data " + kData.string() + " --output " +
                     (dir / "run").string(),
                 dir / "err2.txt", &err),
            1);
  EXPECT_NE(err.find("is in use by another esft run"), std::string::npos) << err;
  ::kill(pid, SIGKILL);
  ::waitpid(pid, nullptr, 0);
  // Free again (a killed holder leaves no stale lock).
  EXPECT_EQ(esft(train_args(cfg, dir / "run", "--max-steps 1 --max-length 64"), dir / "err3.txt", &err), 0) << err;
  EXPECT_FALSE(fs::exists(dir / "run/.esft.lock"));
}

// ---- interruptions ------------------------------------------------------------------------------

struct Interrupted : ::testing::Test {
  static fs::path dir, cfg;
  static std::string common;
  static void SetUpTestSuite() {
    dir = test::temp_dir("rel-interrupt");
    cfg = write_config(dir, R"({"experts": {"1": [5], "2": [9, 10], "3": [0]}})");
    common = "--max-steps 24 --micro-batch-size 2 --global-batch-size 4 --max-length 96 --learning-rate 5e-3 "
             "--lr-scheduler cosine --warmup-ratio 0.1 --eval-dataset " +
             (test::source_dir() / "tests/data/tiny-intent-eval.tokens.jsonl").string() + " --eval-steps 8 ";
    ASSERT_EQ(esft(train_args(cfg, dir / "whole", common), dir / "whole.txt"), 0);
  }
};
fs::path Interrupted::dir, Interrupted::cfg;
std::string Interrupted::common;

TEST_F(Interrupted, SigtermCheckpointsExits75AndResumeEqualsUninterrupted) {
  const auto out = dir / "term";
  Child c(train_args(cfg, out, common), dir / "term.txt");
  ASSERT_TRUE(wait_for_steps(out / "metrics.jsonl", 3, c.pid)) << read_file(dir / "term.txt");
  ::kill(c.pid, SIGTERM);
  const int rc = c.wait();
  const auto log = read_file(dir / "term.txt");
  ASSERT_EQ(rc, 75) << log;
  const size_t done = lines(out / "metrics.jsonl");
  ASSERT_LT(done, 24u) << "stopped before the end";
  EXPECT_NE(log.find("stopped by signal 15"), std::string::npos) << log;
  EXPECT_TRUE(fs::exists(out / ("checkpoints/step-" + std::to_string(done)) / "train_state.safetensors")) << log;
  EXPECT_FALSE(fs::exists(out / "adapter"));
  EXPECT_FALSE(fs::exists(out / ".esft.lock"));
  std::string err;
  ASSERT_EQ(esft(train_args(cfg, out, common + "--resume " + out.string()), dir / "term2.txt", &err), 0) << err;
  EXPECT_NE(err.find("resumed from " + (out / ("checkpoints/step-" + std::to_string(done))).string()), std::string::npos) << err;
  expect_same_result(dir / "whole", out, "SIGTERM + resume");
}

TEST_F(Interrupted, KillNineStaleTemporariesCorruptNewestCheckpointResumeEqualsUninterrupted) {
  const auto out = dir / "kill";
  Child c(train_args(cfg, out, common + "--save-steps 2 --save-total-limit 3"), dir / "kill.txt");
  ASSERT_TRUE(wait_for_steps(out / "metrics.jsonl", 7, c.pid)) << read_file(dir / "kill.txt");
  ::kill(c.pid, SIGKILL);
  c.wait();
  ASSERT_FALSE(fs::exists(out / "adapter")) << "killed before the end";
  // What a kill during a checkpoint write leaves, and a newest checkpoint that is damaged.
  pid_t dead = ::fork();
  if (dead == 0) ::_exit(0);
  ::waitpid(dead, nullptr, 0);
  const auto stale = out / "checkpoints" / ("step-99.tmp." + std::to_string(dead));
  fs::create_directories(stale);
  std::vector<int> steps;
  for (auto& e : fs::directory_iterator(out / "checkpoints"))
    if (e.path().filename().string().rfind("step-", 0) == 0 && e.path().filename().string().find('.') == std::string::npos)
      steps.push_back(std::stoi(e.path().filename().string().substr(5)));
  std::sort(steps.begin(), steps.end());
  ASSERT_GE(steps.size(), 2u);
  const auto newest = out / "checkpoints" / ("step-" + std::to_string(steps.back()));
  fs::resize_file(newest / "train_state.safetensors", fs::file_size(newest / "train_state.safetensors") / 2);
  std::string err;
  ASSERT_EQ(esft(train_args(cfg, out, common + "--save-steps 2 --save-total-limit 3 --resume " + out.string()),
                 dir / "kill2.txt", &err),
            0)
      << err;
  EXPECT_NE(err.find("cleaning up after an interrupted run: removed " + stale.string()), std::string::npos) << err;
  EXPECT_NE(err.find("resuming from " + (out / "checkpoints" / ("step-" + std::to_string(steps[steps.size() - 2]))).string() +
                     ", the newest usable checkpoint; passed over: " + newest.string()),
            std::string::npos)
      << err;
  EXPECT_FALSE(fs::exists(stale));
  expect_same_result(dir / "whole", out, "kill -9 + resume");
}

TEST_F(Interrupted, SigtermToTheLauncherStopsEveryWorkerAtOneStep) {
  // Two worker processes (expert parallel 2): the signal reaches the launcher, which passes it
  // on; the workers agree on the step, rank 0 writes the checkpoint, all exit 75, and so does the
  // launcher. Resuming (also with two workers) gives the uninterrupted single-process result up
  // to float summation order; here the weights are compared with a tolerance.
  const auto out = dir / "term2p";
  const std::string two = "--nproc-per-node 2 --expert-parallel 2 ";
  Child c(train_args(cfg, out, common + two), dir / "term2p.txt");
  ASSERT_TRUE(wait_for_steps(out / "metrics.jsonl", 3, c.pid)) << read_file(dir / "term2p.txt");
  ::kill(c.pid, SIGTERM);
  const int rc = c.wait();
  const auto log = read_file(dir / "term2p.txt");
  ASSERT_EQ(rc, 75) << log;
  const size_t done = lines(out / "metrics.jsonl");
  EXPECT_TRUE(fs::exists(out / ("checkpoints/step-" + std::to_string(done)) / "train_state.safetensors")) << log;
  std::string err;
  ASSERT_EQ(esft(train_args(cfg, out, common + two + "--resume " + out.string()), dir / "term2p2.txt", &err), 0) << err;
  auto a = load_safetensors(dir / "whole/adapter/model.safetensors"), b = load_safetensors(out / "adapter/model.safetensors");
  ASSERT_EQ(a.size(), b.size());
  for (auto& [n, t] : a) EXPECT_LT((t - b[n]).abs().max().item<double>(), 1e-4) << n;
  EXPECT_EQ(test::read_jsonl(out / "metrics.jsonl").size(), 24u);
}

TEST(Reliability, SlurmExampleRequeuesOnSigtermAndTheNextAllocationFinishes) {
  // scripts/slurm/esft_pipeline.sbatch as SLURM runs it, on the CPU: SIGTERM to the batch shell
  // (--signal=B:TERM) mid-training; it passes the signal on, esft checkpoints and exits 75, the
  // script requeues the job (a stand-in scontrol records it) and exits 0; the next allocation
  // (the same script again) resumes and finishes.
  auto dir = test::temp_dir("rel-sbatch");
  fs::create_directories(dir / "bin");
  write_file_atomic(dir / "bin/scontrol", "#!/bin/sh\necho \"$@\" >> " + (dir / "scontrol.log").string() + "\n");
  fs::permissions(dir / "bin/scontrol", fs::perms::owner_all);
  const auto out = dir / "out";
  const std::string env = "env PATH=" + (dir / "bin").string() + ":/usr/bin:/bin SLURM_JOB_ID=4242 DEVICE=cpu ESFT=" + bin() +
                          " MODEL=" + kModel.string() + " DATA=" + kData.string() + " OUT=" + out.string() +
                          " SAVE_STEPS=1000 TRAIN_ARGS='--max-steps 30 --max-length 64 --learning-rate 1e-3'";
  const std::string script = " bash " + (test::source_dir() / "scripts/slurm/esft_pipeline.sbatch").string();
  pid_t pid = ::fork();
  if (pid == 0) {
    ::execl("/bin/sh", "sh", "-c", ("exec " + env + script + " > " + (dir / "job1.txt").string() + " 2>&1").c_str(), (char*)nullptr);
    ::_exit(127);
  }
  ASSERT_TRUE(wait_for_steps(out / "train/metrics.jsonl", 3, pid)) << read_file(dir / "job1.txt");
  ::kill(pid, SIGTERM);
  int status = 0;
  ::waitpid(pid, &status, 0);
  const auto log1 = read_file(dir / "job1.txt");
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status << "\n" << log1;
  EXPECT_EQ(read_file(dir / "scontrol.log"), "requeue 4242\n") << log1;
  EXPECT_NE(log1.find("(exit status 75)"), std::string::npos) << log1;
  const size_t done = lines(out / "train/metrics.jsonl");
  ASSERT_LT(done, 30u) << log1;
  EXPECT_TRUE(fs::exists(out / ("train/checkpoints/step-" + std::to_string(done)) / "train_state.safetensors")) << log1;
  EXPECT_FALSE(fs::exists(out / "train/adapter"));
  // The requeued job: scores and selection are kept, training resumes and ends.
  ASSERT_EQ(test::run(env + script + " > " + (dir / "job2.txt").string() + " 2>&1"), 0) << read_file(dir / "job2.txt");
  const auto log2 = read_file(dir / "job2.txt");
  EXPECT_NE(log2.find("resumed from " + (out / ("train/checkpoints/step-" + std::to_string(done))).string()), std::string::npos)
      << log2;
  EXPECT_EQ(log2.find("] info scored "), std::string::npos) << "scoring is not redone";
  EXPECT_NE(log1.find("] info scored "), std::string::npos) << log1;
  EXPECT_EQ(test::read_jsonl(out / "train/metrics.jsonl").size(), 30u);
  EXPECT_TRUE(fs::exists(out / "train/adapter/model.safetensors"));
  EXPECT_EQ(read_file(dir / "scontrol.log"), "requeue 4242\n") << "no second requeue";
}

// ---- data and flags -----------------------------------------------------------------------------

TEST(Reliability, TokenIdsOutsideTheVocabularyNameFileLineAndId) {
  auto dir = test::temp_dir("rel-vocab");
  auto cfg = write_config(dir, R"({"experts": {"1": [0]}})");
  write_file_atomic(dir / "ids.jsonl", "{\"input_ids\": [1, 2, 3]}\n{\"input_ids\": [1, 400, 3]}\n");
  write_file_atomic(dir / "labels.jsonl", "{\"input_ids\": [1, 2, 3], \"labels\": [-100, 2, 500]}\n");
  std::string err;
  EXPECT_EQ(esft("train --model " + kModel.string() + " --device cpu --data " + (dir / "ids.jsonl").string() +
                     " --expert-config " + cfg.string() + " --output " + (dir / "r").string(),
                 dir / "e.txt", &err),
            1);
  EXPECT_NE(err.find((dir / "ids.jsonl").string() + ":2: input_ids[1] is token id 400, outside the model's vocabulary "
                                                    "(vocab_size 384"),
            std::string::npos)
      << err;
  EXPECT_EQ(esft("score --model " + kModel.string() + " --device cpu --data " + (dir / "labels.jsonl").string() +
                     " --output " + (dir / "s").string(),
                 dir / "e.txt", &err),
            1);
  EXPECT_NE(err.find((dir / "labels.jsonl").string() + ":1: labels[2] is token id 500"), std::string::npos) << err;
  // A tokenizer whose ids exceed the model's vocabulary (here: a config that says 200).
  fs::create_directories(dir / "small");
  for (auto f : {"tokenizer.json", "tokenizer_config.json"}) fs::copy_file(kModel / f, dir / "small" / f);
  auto c = nlohmann::json::parse(read_file(kModel / "config.json"));
  c["vocab_size"] = 200;
  write_file_atomic(dir / "small/config.json", c.dump());
  EXPECT_EQ(esft("tokenize --model " + (dir / "small").string() + " --data " +
                     (test::source_dir() / "tests/data/tiny-intent-train.jsonl").string() + " --output " +
                     (dir / "t.jsonl").string(),
                 dir / "e.txt", &err),
            1);
  EXPECT_NE(err.find("tiny-intent-train.jsonl:1: the tokenizer produced token id"), std::string::npos) << err;
  EXPECT_NE(err.find("the tokenizer does not match the model"), std::string::npos) << err;
  // --skip-bad-lines skips such a line (counted) instead.
  EXPECT_EQ(esft("tokenize --model " + kModel.string() + " --data " + (dir / "ids.jsonl").string() + " --skip-bad-lines --output " +
                     (dir / "t2.jsonl").string(),
                 dir / "e.txt", &err),
            0)
      << err;
  EXPECT_EQ(lines(dir / "t2.jsonl"), 1u);
}

TEST(Reliability, OutputsThatWouldOverwriteInputsAreRefused) {
  auto dir = test::temp_dir("rel-overwrite");
  auto cfg = write_config(dir, R"({"experts": {"1": [0]}})");
  fs::create_directories(dir / "run");
  fs::copy(kModel, dir / "run/full", fs::copy_options::recursive);  // a model inside the output
  fs::copy_file(kData, dir / "data.jsonl");
  const auto data_before = read_file(dir / "data.jsonl");
  std::string err;
  EXPECT_EQ(esft("train --model " + (dir / "run/full").string() + " --device cpu --data " + kData.string() +
                     " --expert-config " + cfg.string() + " --output " + (dir / "run").string() + " --save-full",
                 dir / "e.txt", &err),
            1);
  EXPECT_NE(err.find("--output " + (dir / "run").string() + " holds --model " + (dir / "run/full").string()), std::string::npos) << err;
  EXPECT_EQ(esft("train --model " + kModel.string() + " --device cpu --data " + kData.string() + " --expert-config " +
                     cfg.string() + " --output " + kModel.string(),
                 dir / "e.txt", &err),
            1);
  EXPECT_NE(err.find("holds --model"), std::string::npos) << err;
  // the expert config inside the adapter directory the run replaces
  fs::create_directories(dir / "r2/adapter");
  auto inner = write_config(dir / "r2/adapter", R"({"experts": {"1": [0]}})");
  EXPECT_EQ(esft(train_args(inner, dir / "r2", "--max-steps 1"), dir / "e.txt", &err), 1);
  EXPECT_NE(err.find("--expert-config " + inner.string() + " lies in " + (dir / "r2/adapter").string()), std::string::npos) << err;
  EXPECT_EQ(esft("tokenize --model " + kModel.string() + " --data " + (dir / "data.jsonl").string() + " --output " +
                     (dir / "data.jsonl").string(),
                 dir / "e.txt", &err),
            1);
  EXPECT_NE(err.find("would overwrite --data"), std::string::npos) << err;
  const auto tokenizer_before = read_file(dir / "run/full/tokenizer.json");
  EXPECT_EQ(esft("tokenize --model " + (dir / "run/full").string() + " --data " + (dir / "data.jsonl").string() +
                     " --output " + (dir / "run/full/tokenizer.json").string(),
                 dir / "e.txt", &err),
            1);
  EXPECT_NE(err.find("would overwrite --model " + (dir / "run/full/tokenizer.json").string()), std::string::npos) << err;
  EXPECT_EQ(read_file(dir / "run/full/tokenizer.json"), tokenizer_before);
  EXPECT_EQ(read_file(dir / "data.jsonl"), data_before);
  EXPECT_EQ(esft("score --model " + (dir / "run/full").string() + " --device cpu --data " + kData.string() +
                     " --output " + (dir / "run").string(),
                 dir / "e.txt", &err),
            1);
  EXPECT_NE(err.find("holds --model"), std::string::npos) << err;
  EXPECT_TRUE(fs::exists(dir / "run/full/model.safetensors"));
}

TEST(Reliability, FlagErrorsNameTheFlag) {
  auto dir = test::temp_dir("rel-flags");
  auto cfg = write_config(dir, R"({"experts": {"1": [0]}})");
  struct Case {
    std::string args, expected;
  };
  const std::string score = "score --model " + kModel.string() + " --data " + kData.string() + " --output " + (dir / "s").string();
  const Case cases[] = {
      {train_args(cfg, dir / "r", "--learning-rate nan"), "--learning-rate \"nan\""},
      {train_args(cfg, dir / "r", "--learning-rate=abc"), "--learning-rate \"abc\""},
      {train_args(cfg, dir / "r", "--max-length -5"), "--max-length -5: must be at least 1"},
      {train_args(cfg, dir / "r", "--max-length 99999999999999999999"), "--max-length \"99999999999999999999\""},
      {train_args(cfg, dir / "r", "--warmup-ratio 1.5"), "--warmup-ratio 1.5: expected a number in [0, 1]"},
      {train_args(cfg, dir / "r", "--save-steps -1"), "--save-steps -1: must be at least 0"},
      {train_args(cfg, dir / "r", "--seed -3"), "--seed \"-3\""},
      {train_args(cfg, dir / "r", "--max-nonfinite-steps x"), "--max-nonfinite-steps \"x\""},
      {score + " --n-sample-tokens -1", "--n-sample-tokens -1: must be at least 0"},
      {score + " --max-length -2", "--max-length -2: must be at least 0"},
      {score + " --batch-tokens 1.5", "--batch-tokens \"1.5\""},
      {"select --scores " + dir.string() + " --output x.json --top-p nan", "--top-p \"nan\""},
      {"tokenize --data " + kData.string() + " --threads -2", "--threads -2"},
      {"train --bogus 1", "Option 'bogus' does not exist"},
  };
  for (auto& c : cases) {
    std::string err;
    EXPECT_NE(esft(c.args, dir / "e.txt", &err), 0) << c.args;
    EXPECT_NE(err.find(c.expected), std::string::npos) << c.args << "\n" << err;
    EXPECT_EQ(err.find("Exception raised from"), std::string::npos) << err;
  }
  EXPECT_FALSE(fs::exists(dir / "r/metrics.jsonl")) << "flag errors stop before anything is written";
}

TEST(Reliability, MicroBatchReachingNoTrainedExpertTrains) {
  // Short data whose tokens never reach the one trained expert: every micro batch has a loss
  // without a gradient. Scoring the same data finds an expert nobody routes to.
  auto dir = test::temp_dir("rel-untouched");
  write_file_atomic(dir / "short.jsonl", "{\"input_ids\": [5, 9, 7]}\n{\"input_ids\": [11, 5]}\n");
  ASSERT_EQ(esft("score --model " + kModel.string() + " --device cpu --batch-tokens 0 --data " +
                     (dir / "short.jsonl").string() + " --output " + (dir / "s").string(),
                 dir / "e.txt"),
            0);
  auto summary = nlohmann::json::parse(read_file(dir / "s/summary.json"));
  int unused = -1;
  for (auto& [e, v] : summary["token_scores"]["2"].items())
    if (v.get<double>() == 0 && unused < 0) unused = std::stoi(e);
  ASSERT_GE(unused, 0);
  auto cfg = write_config(dir, "{\"experts\": {\"2\": [" + std::to_string(unused) + "]}}");
  std::string err;
  ASSERT_EQ(esft("train --model " + kModel.string() + " --device cpu --data " + (dir / "short.jsonl").string() +
                     " --expert-config " + cfg.string() + " --output " + (dir / "r").string() +
                     " --max-steps 2 --packing none --micro-batch-size 1 --global-batch-size 2",
                 dir / "e.txt", &err),
            0)
      << err;
  for (auto& m : test::read_jsonl(dir / "r/metrics.jsonl")) EXPECT_EQ(m["grad_norm"], 0.0);
}

}  // namespace
