// Multi-process training and scoring on the CPU (Gloo) through the esft binary: world sizes 2 and
// 4 with pure expert parallelism, data x expert parallelism and pure data parallelism equal the
// single-process run with the same global batch (losses, gradient norms, trained weights) up to
// the order of float additions; launched by --nproc-per-node and by torchrun; a rank that fails
// ends the job with its error; checkpoints resume at another world size.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <thread>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "esft/tensor_io.h"
#include "test_util.h"

using namespace esft;

namespace {

const fs::path kModel = test::source_dir() / "tests/data/tiny-qwen3-moe";
const fs::path kData = test::source_dir() / "tests/data/tiny-intent-train.tokens.jsonl";
const fs::path kEval = test::source_dir() / "tests/data/tiny-intent-eval.tokens.jsonl";
// torchrun of the Python env the tests use (scripts/setup.sh installs torch there).
const std::string kTorchrun = (fs::path(ESFT_PYTHON).parent_path() / "torchrun").string();

// Layer 3 trains one expert: with 2 or 4 expert-parallel ranks, some rank holds no trained
// expert of that layer (and the ranks without one upstream must still join every backward
// exchange). Layer 2 trains none.
const char* kSelection = R"({"experts": {"1": [4, 11, 0, 7, 2], "3": [6]}, "shared_experts": false, "non_expert_modules": false})";

struct Fixture {
  fs::path dir, cfg;
  std::string common;
};

Fixture& fixture() {
  static Fixture f = [] {
    Fixture x;
    x.dir = test::temp_dir("dist-train");
    x.cfg = x.dir / "expert_config.json";
    write_file_atomic(x.cfg, kSelection);
    // 8 rows per step in micro batches of 2: 4 micro batches, shared by 2 or 4 ranks; 3 steps.
    x.common = " train --model " + kModel.string() + " --data " + kData.string() + " --expert-config " + x.cfg.string() +
               " --device cpu --max-steps 3 --global-batch-size 8 --micro-batch-size 2 --max-length 96"
               " --learning-rate 1e-2 --max-grad-norm 0.5 --router-aux-loss";
    return x;
  }();
  return f;
}

int esft(const std::string& launcher, const std::string& args, const fs::path& out) {
  return test::run("ESFT_COLLECTIVE_TIMEOUT_S=120 " + launcher + test::esft_bin() + fixture().common + " " + args +
                   " --output " + out.string() + " 2> " + (out.string() + ".log"));
}

std::string log_of(const fs::path& out) { return read_file(out.string() + ".log"); }

// The single-process reference, run once.
const fs::path& reference() {
  static fs::path ref = [] {
    auto out = fixture().dir / "single";
    EXPECT_EQ(esft("", "--save-full --save-steps 3 --eval-dataset " + kEval.string(), out), 0) << log_of(out);
    return out;
  }();
  return ref;
}

void expect_same_run(const fs::path& run, const std::string& what, double tol = 2e-5) {
  const auto& ref = reference();
  auto ma = test::read_jsonl(ref / "metrics.jsonl"), mb = test::read_jsonl(run / "metrics.jsonl");
  ASSERT_EQ(ma.size(), 3u);
  ASSERT_EQ(mb.size(), 3u) << what << ": " << log_of(run);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(ma[i]["loss_tokens"], mb[i]["loss_tokens"]) << what;
    EXPECT_EQ(ma[i]["tokens"], mb[i]["tokens"]) << what;
    for (auto k : {"loss", "grad_norm"}) {
      double x = ma[i][k].get<double>(), y = mb[i][k].get<double>();
      EXPECT_NEAR(y, x, tol * std::abs(x)) << what << ": " << k << " at step " << i + 1;
    }
  }
  auto a = load_safetensors(ref / "adapter/model.safetensors"), b = load_safetensors(run / "adapter/model.safetensors");
  ASSERT_EQ(a.size(), b.size()) << what;
  ASSERT_EQ(a.size(), 6u * 3) << "gate, up, down of the six selected experts";
  for (auto& [n, t] : a) {
    ASSERT_TRUE(b.count(n)) << what << ": " << n << " missing from the adapter";
    EXPECT_EQ(b[n].scalar_type(), t.scalar_type()) << n;
    // The adapter is bf16 like the checkpoint: allow one rounding step of the trained weights.
    auto diff = (b[n].to(at::kFloat) - t.to(at::kFloat)).abs().max().item<double>();
    auto scale = t.to(at::kFloat).abs().max().item<double>();
    EXPECT_LE(diff, 1e-2 * scale) << what << ": " << n;
  }
  // Only rank 0 writes: one adapter, one metrics file, no stray temporaries.
  for (auto& e : fs::directory_iterator(run))
    EXPECT_EQ(e.path().filename().string().find(".tmp."), std::string::npos) << e.path();
}

// The fp32 master weights are compared more tightly than the bf16 adapter allows.
void expect_same_state(const fs::path& run, const std::string& what, double tol = 1e-4) {
  auto a = load_safetensors(reference() / "checkpoints/step-3/train_state.safetensors");
  auto b = load_safetensors(run / "checkpoints/step-3/train_state.safetensors");
  ASSERT_EQ(a.size(), b.size()) << what << ": the saved state holds every rank's part";
  for (auto& [n, t] : a) {
    ASSERT_TRUE(b.count(n)) << what << ": " << n;
    if (n.rfind("param.", 0) != 0) continue;
    auto diff = (b[n] - t).abs().max().item<double>(), scale = t.abs().max().item<double>();
    EXPECT_LE(diff, tol * scale) << what << ": " << n;
  }
}

TEST(DistTrain, ExpertParallelTwoRanksEqualsOneProcess) {
  auto out = fixture().dir / "ep2";
  ASSERT_EQ(esft("", "--nproc-per-node 2 --expert-parallel 2 --save-full --save-steps 3 --eval-dataset " + kEval.string(), out),
            0)
      << log_of(out);
  expect_same_run(out, "EP 2");
  // The final evaluation too, and the full checkpoint: frozen weights bit for bit, trained ones close.
  auto ma = test::read_jsonl(reference() / "metrics.jsonl"), mb = test::read_jsonl(out / "metrics.jsonl");
  EXPECT_NEAR(mb[2]["eval_loss"].get<double>(), ma[2]["eval_loss"].get<double>(), 1e-5);
  EXPECT_NE(log_of(out).find("a2a"), std::string::npos) << "the step log reports all-to-all time";
  EXPECT_NE(log_of(out).find("tok/s/gpu"), std::string::npos);
  Checkpoint ca(reference() / "full"), cb(out / "full");
  auto adapter = load_safetensors(out / "adapter/model.safetensors");
  for (auto& n : ca.names()) {
    auto x = load_tensor(ca, n), y = load_tensor(cb, n);
    if (adapter.count(n)) EXPECT_TRUE(at::equal(y, adapter[n])) << n;
    else EXPECT_TRUE(at::equal(x, y)) << n << " is frozen";
  }
  // The --save-steps checkpoint at the end holds the whole state, gathered from both ranks.
  expect_same_state(out, "EP 2");
}

TEST(DistTrain, FourRanksDataTimesExpertAndPureExpertAndPureData) {
  for (auto [ep, name] : {std::pair{2, "dp2xep2"}, {4, "ep4"}, {1, "dp4"}}) {
    auto out = fixture().dir / name;
    ASSERT_EQ(esft("", "--nproc-per-node 4 --expert-parallel " + std::to_string(ep), out), 0) << log_of(out);
    expect_same_run(out, name);
  }
}

TEST(DistTrain, TwoRanksUnderTorchrun) {
  if (!fs::exists(kTorchrun)) GTEST_FAIL() << kTorchrun << " missing (scripts/setup.sh installs torch)";
  for (auto [ep, name] : {std::pair{1, "torchrun-dp2"}, {2, "torchrun-ep2"}}) {
    auto out = fixture().dir / name;
    ASSERT_EQ(esft(kTorchrun + " --standalone --nproc-per-node 2 --no-python ",
                   "--expert-parallel " + std::to_string(ep) + " --save-steps 3", out),
              0)
        << log_of(out);
    expect_same_run(out, name);
    expect_same_state(out, name);
  }
}

TEST(DistTrain, OneLaunchedProcessMatchesThePlainRunExactly) {
  auto out = fixture().dir / "nproc1";
  ASSERT_EQ(esft("", "--nproc-per-node 1 --expert-parallel 1 --eval-dataset " + kEval.string(), out), 0) << log_of(out);
  auto a = load_safetensors(reference() / "adapter/model.safetensors"), b = load_safetensors(out / "adapter/model.safetensors");
  ASSERT_EQ(a.size(), b.size());
  for (auto& [n, t] : a) EXPECT_TRUE(at::equal(t, b[n])) << n;
  auto ma = test::read_jsonl(reference() / "metrics.jsonl"), mb = test::read_jsonl(out / "metrics.jsonl");
  for (size_t i = 0; i < ma.size(); ++i)
    for (auto k : {"loss", "grad_norm", "eval_loss"}) EXPECT_EQ(ma[i].value(k, -1.0), mb[i].value(k, -1.0)) << k;
  EXPECT_NE(log_of(out).find("launching 1 worker"), std::string::npos) << log_of(out);
}

TEST(DistTrain, ResumesAtAnotherWorldSize) {
  // Two ranks with expert parallelism stop after step 2; one process continues from there.
  auto out = fixture().dir / "resume";
  ASSERT_EQ(esft("", "--nproc-per-node 2 --expert-parallel 2 --stop-after 2", out), 0) << log_of(out);
  ASSERT_TRUE(fs::exists(out / "checkpoints/step-2/train_state.safetensors"));
  EXPECT_FALSE(fs::exists(out / "adapter"));
  auto st = load_safetensors(out / "checkpoints/step-2/train_state.safetensors");
  for (auto n : {"param.model.layers.1.mlp.experts.trainable_gate_up_proj.expert_11",
                 "param.model.layers.3.mlp.experts.trainable_down_proj.expert_6", "optim.step"})
    EXPECT_TRUE(st.count(n)) << n << ": every rank's experts are in the one state file";
  ASSERT_EQ(esft("", "--resume " + out.string(), out), 0) << log_of(out);
  expect_same_run(out, "EP 2 for two steps, then one process");
  // And the other way: one process for two steps, four ranks (DP 2 x EP 2) for the last.
  auto out2 = fixture().dir / "resume4";
  ASSERT_EQ(esft("", "--stop-after 2", out2), 0) << log_of(out2);
  ASSERT_EQ(esft("", "--nproc-per-node 4 --expert-parallel 2 --resume " + out2.string(), out2), 0) << log_of(out2);
  expect_same_run(out2, "one process for two steps, then DP 2 x EP 2");
}

TEST(DistTrain, RanksWithoutATrainedExpertUpstreamJoinEveryBackwardExchange) {
  // The first trained layer (2) trains one expert: under expert parallelism only its rank has
  // anything trainable up to there, yet every rank must run that layer's backward exchange.
  auto dir = fixture().dir / "late";
  fs::create_directories(dir);
  auto cfg = dir / "expert_config.json";
  write_file_atomic(cfg, R"({"experts": {"2": [5], "3": [1, 9]}})");
  auto run = [&](const std::string& name, const std::string& args) {
    auto out = dir / name;
    EXPECT_EQ(test::run("ESFT_COLLECTIVE_TIMEOUT_S=60 " + test::esft_bin() + " train --model " + kModel.string() +
                        " --data " + kData.string() + " --expert-config " + cfg.string() +
                        " --device cpu --max-steps 2 --global-batch-size 4 --micro-batch-size 1 --max-length 64"
                        " --learning-rate 1e-2 " + args + " --output " + out.string() + " 2> " + out.string() + ".log"),
              0)
        << read_file(out.string() + ".log");
    return out;
  };
  auto ref = run("single", "");
  // Also with activation checkpointing: every rank re-runs the layers (and their exchanges) alike.
  for (auto [args, name] : {std::pair{"--nproc-per-node 2 --expert-parallel 2", "ep2"},
                            {"--nproc-per-node 4 --expert-parallel 4", "ep4"},
                            {"--nproc-per-node 2 --expert-parallel 2 --activation-checkpointing", "ep2-ckpt"}}) {
    auto out = run(name, args);
    auto ma = test::read_jsonl(ref / "metrics.jsonl"), mb = test::read_jsonl(out / "metrics.jsonl");
    ASSERT_EQ(mb.size(), 2u) << name;
    for (size_t i = 0; i < 2; ++i)
      for (auto k : {"loss", "grad_norm"})
        EXPECT_NEAR(mb[i][k].get<double>(), ma[i][k].get<double>(), 2e-5 * std::abs(ma[i][k].get<double>())) << name << " " << k;
    auto a = load_safetensors(ref / "adapter/model.safetensors"), b = load_safetensors(out / "adapter/model.safetensors");
    ASSERT_EQ(a.size(), 9u);
    ASSERT_EQ(b.size(), 9u) << name;
    for (auto& [n, t] : a) {
      auto diff = (b[n].to(at::kFloat) - t.to(at::kFloat)).abs().max().item<double>();
      EXPECT_LE(diff, 1e-2 * t.to(at::kFloat).abs().max().item<double>()) << name << " " << n;
    }
  }
}

// ---- failures ----

int free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(a);
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

TEST(DistTrain, FailingRankStopsTheJobWithItsError) {
  auto dir = test::temp_dir("dist-fail");
  const auto& f = fixture();
  auto t0 = std::chrono::steady_clock::now();
  const std::string port = std::to_string(free_port());
  // Two workers started by hand (as torchrun would): rank 1 is given a data file that does not
  // exist. It fails after joining the job; rank 0 must stop with rank 1's error, not wait.
  auto worker = [&](int rank, const std::string& data) {
    return "RANK=" + std::to_string(rank) + " WORLD_SIZE=2 LOCAL_RANK=" + std::to_string(rank) +
           " LOCAL_WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=" + port + " ESFT_COLLECTIVE_TIMEOUT_S=120 " + test::esft_bin() +
           " train --model " + kModel.string() + " --data " + data + " --expert-config " + f.cfg.string() +
           " --device cpu --max-steps 50 --expert-parallel 2 --output " + (dir / "out").string() + " 2> " +
           (dir / ("rank" + std::to_string(rank) + ".log")).string();
  };
  int rc = test::run("(" + worker(0, kData.string()) + "; echo $? > " + (dir / "rc0").string() + ") & " +
                     worker(1, (dir / "missing.jsonl").string()) + "; echo $? > " + (dir / "rc1").string() + "; wait");
  EXPECT_EQ(rc, 0);
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_LT(seconds, 60) << "the job ends well before the collective timeout";
  EXPECT_EQ(read_file(dir / "rc1"), "1\n");
  EXPECT_EQ(read_file(dir / "rc0"), "1\n");
  auto log0 = read_file(dir / "rank0.log"), log1 = read_file(dir / "rank1.log");
  EXPECT_NE(log1.find("missing.jsonl"), std::string::npos) << log1;
  EXPECT_NE(log0.find("rank 1 failed"), std::string::npos) << log0;
  EXPECT_NE(log0.find("missing.jsonl"), std::string::npos) << log0;
}

TEST(DistTrain, KilledWorkerStopsTheLaunchedJob) {
  auto dir = test::temp_dir("dist-kill");
  const auto& f = fixture();
  const std::string cmd = "exec " + test::esft_bin() + " train --model " + kModel.string() + " --data " + kData.string() +
                          " --expert-config " + f.cfg.string() +
                          " --device cpu --max-steps 100000 --nproc-per-node 2 --expert-parallel 2 --output " +
                          (dir / "out").string() + " 2> " + (dir / "log").string();
  pid_t launcher = ::fork();
  ASSERT_GE(launcher, 0);
  if (launcher == 0) {
    ::execl("/bin/sh", "sh", "-c", cmd.c_str(), (char*)nullptr);
    ::_exit(127);
  }
  // Wait for training to run (metrics appear), then kill rank 1 outright.
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (std::chrono::steady_clock::now() < deadline &&
         (!fs::exists(dir / "out/metrics.jsonl") || fs::file_size(dir / "out/metrics.jsonl") == 0))
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  ASSERT_TRUE(fs::exists(dir / "out/metrics.jsonl")) << read_file(dir / "log");
  pid_t rank1 = -1;
  for (auto& e : fs::directory_iterator("/proc")) {
    auto name = e.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream stat(e.path() / "stat");
    std::string line;
    std::getline(stat, line);
    auto rp = line.rfind(')');
    if (rp == std::string::npos) continue;
    int ppid = 0;
    char state;
    if (std::sscanf(line.c_str() + rp + 1, " %c %d", &state, &ppid) != 2 || ppid != launcher) continue;
    std::ifstream env(e.path() / "environ");
    std::string all((std::istreambuf_iterator<char>(env)), std::istreambuf_iterator<char>());
    if (all.find(std::string("RANK=1") + '\0') != std::string::npos && all.find("LOCAL_RANK=1") != std::string::npos)
      rank1 = std::stoi(name);
  }
  ASSERT_GT(rank1, 0) << "no worker with RANK=1 under the launcher";
  auto t0 = std::chrono::steady_clock::now();
  ::kill(rank1, SIGKILL);
  int status = 0;
  ::waitpid(launcher, &status, 0);
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_LT(seconds, 30);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) != 0);
  auto log = read_file(dir / "log");
  EXPECT_NE(log.find("worker rank 1 failed (signal 9"), std::string::npos) << log;
}

// ---- scoring ----

TEST(DistScore, ShardsLikeTheReferenceAndMergesOnRankZero) {
  auto dir = test::temp_dir("dist-score");
  auto score = [&](const std::string& args, const fs::path& out) {
    // One thread everywhere: the tiny random router is so close to ties that another summation
    // order inside a matmul changes later layers' choices.
    return test::run("OMP_NUM_THREADS=1 ESFT_COLLECTIVE_TIMEOUT_S=120 " + test::esft_bin() + " score --model " + kModel.string() + " --data " +
                     kData.string() + " --device cpu --n-sample-tokens 3000 " + args + " --output " + out.string() + " 2> " +
                     out.string() + ".log");
  };
  // Two processes by hand (the reference's way) vs. --nproc-per-node 2, with and without EP.
  ASSERT_EQ(score("--rank 0 --world-size 2", dir / "manual"), 0);
  ASSERT_EQ(score("--rank 1 --world-size 2", dir / "manual"), 0);
  ASSERT_EQ(score("--rank 0 --world-size 2", dir / "manual"), 0);  // rank 0 again: its summary sees rank 1's logs
  // Data parallel: the same computation per sample (with the same threads), so the same files
  // byte for byte.
  ASSERT_EQ(score("--nproc-per-node 2", dir / "dp"), 0) << read_file(dir / "dp.log");
  for (int r = 0; r < 2; ++r)
    for (int layer = 1; layer <= 3; ++layer) {
      auto f = fs::path("rank_" + std::to_string(r)) / ("expert_weights_" + std::to_string(layer) + ".txt");
      ASSERT_TRUE(fs::exists(dir / "dp" / f)) << f;
      EXPECT_EQ(read_file(dir / "dp" / f), read_file(dir / "manual" / f)) << f;
    }
  EXPECT_EQ(read_file(dir / "dp/summary.json"), read_file(dir / "manual/summary.json"));
  // Expert parallel: experts compute other ranks' rows too (float results may differ in the last
  // bit), so the same samples and lines, and scores within rounding.
  ASSERT_EQ(score("--nproc-per-node 2 --expert-parallel 2", dir / "ep"), 0) << read_file(dir / "ep.log");
  for (int r = 0; r < 2; ++r) {
    auto f = fs::path("rank_" + std::to_string(r)) / "expert_weights_1.txt";
    auto a = read_file(dir / "ep" / f), b = read_file(dir / "manual" / f);
    EXPECT_EQ(std::count(a.begin(), a.end(), '\n'), std::count(b.begin(), b.end(), '\n')) << f;
  }
  auto sa = nlohmann::json::parse(read_file(dir / "manual/summary.json")), sb = nlohmann::json::parse(read_file(dir / "ep/summary.json"));
  for (auto& [layer, scores] : sa["token_scores"].items())
    for (auto& [e, v] : scores.items())
      EXPECT_NEAR(sb["token_scores"][layer][e].get<double>(), v.get<double>(), 2e-3) << layer << " " << e;
}

}  // namespace

namespace {

// ---- SageMaker ----

TEST(DistSageMaker, TwoHostsOfTwoWorkersRunThePipelineWithoutASharedFileSystem) {
  // Two "hosts" (two processes with their own SM_CURRENT_HOST and model directory) each spawn two
  // workers; the four score, select (rank 0) and train (expert parallel 2 x 2 replicas) together.
  auto dir = test::temp_dir("dist-sagemaker");
  fs::create_directories(dir / "config");
  fs::create_directories(dir / "train");
  fs::copy_file(kData, dir / "train/data.jsonl");
  write_file_atomic(dir / "config/hyperparameters.json",
                    R"({"device": "cpu", "max_steps": "2", "n_sample_tokens": "2000", "top_p": "0.3",
                        "nproc_per_node": "2", "expert_parallel": "2", "max_length": "64",
                        "global_batch_size": "4", "micro_batch_size": "1", "learning_rate": "1e-3"})");
  const std::string port = std::to_string(free_port());
  auto host = [&](int h) {
    auto model_dir = dir / ("host" + std::to_string(h));
    return "ESFT_SAGEMAKER_ROOT=" + (dir / ("root" + std::to_string(h))).string() + " SM_INPUT_CONFIG_DIR=" +
           (dir / "config").string() + " SM_CHANNEL_MODEL=" + kModel.string() + " SM_CHANNEL_TRAIN=" +
           (dir / "train").string() + " SM_MODEL_DIR=" + model_dir.string() + " SM_OUTPUT_DATA_DIR=" +
           model_dir.string() + "-data SM_HOSTS='[\"algo-2\", \"algo-1\"]' SM_CURRENT_HOST=algo-" + std::to_string(h + 1) +
           " SM_NUM_GPUS=0 MASTER_ADDR=127.0.0.1 MASTER_PORT=" + port + " ESFT_COLLECTIVE_TIMEOUT_S=120 " +
           test::esft_bin() + " train 2> " + model_dir.string() + ".log; echo $? > " + model_dir.string() + ".rc";
  };
  ASSERT_EQ(test::run("(" + host(0) + ") & " + host(1) + "; wait"), 0);
  auto h0 = dir / "host0", h1 = dir / "host1";
  const fs::path d0 = h0.string() + "-data", d1 = h1.string() + "-data";
  ASSERT_EQ(read_file(h0.string() + ".rc"), "0\n") << read_file(h0.string() + ".log");
  ASSERT_EQ(read_file(h1.string() + ".rc"), "0\n") << read_file(h1.string() + ".log");
  // Rank 0's host has every rank's routing logs, the summary and the selection (under
  // SM_OUTPUT_DATA_DIR) and the adapter (under SM_MODEL_DIR).
  for (int r = 0; r < 4; ++r)
    EXPECT_TRUE(fs::exists(d0 / "expert_scores" / ("rank_" + std::to_string(r)) / "expert_weights_1.txt")) << r;
  EXPECT_TRUE(fs::exists(d0 / "expert_scores/summary.json"));
  auto sel = nlohmann::json::parse(read_file(d0 / "expert_config.json"));
  size_t n_selected = 0;
  for (auto& [layer, ids] : sel["experts"].items()) n_selected += ids.size();
  EXPECT_GT(n_selected, 0u);
  EXPECT_EQ(load_safetensors(h0 / "adapter/model.safetensors").size(), 3 * n_selected);
  EXPECT_EQ(test::read_jsonl(d0 / "metrics.jsonl").size(), 2u);
  // The other host got the selection from rank 0 and wrote nothing else of the outputs.
  EXPECT_EQ(read_file(d1 / "expert_config.json"), read_file(d0 / "expert_config.json"));
  EXPECT_FALSE(fs::exists(h1 / "adapter"));
  EXPECT_FALSE(fs::exists(d1 / "metrics.jsonl"));
  EXPECT_FALSE(fs::exists(d1 / "expert_scores/summary.json"));
  EXPECT_NE(read_file(h0.string() + ".log").find("launching 2 worker(s) on node 0 of 2 (world size 4"), std::string::npos)
      << read_file(h0.string() + ".log");
}

}  // namespace

namespace {

TEST(DistTrain, SlurmTwoNodesOfTwoWorkersEqualOneProcess) {
  // srun --nodes 2 --ntasks-per-node 1 esft train ... --nproc-per-node 2: each task spawns its
  // node's two workers; ranks node by node; rank 0 at the first host (here MASTER_ADDR).
  auto out = fixture().dir / "slurm";
  const std::string port = std::to_string(free_port());
  auto node = [&](int n) {
    return "SLURM_JOB_ID=77 SLURM_STEP_ID=0 SLURM_PROCID=" + std::to_string(n) +
           " SLURM_NTASKS=2 SLURM_LOCALID=0 SLURM_STEP_TASKS_PER_NODE='1(x2)' SLURM_JOB_NODELIST='node[1-2]'"
           " MASTER_ADDR=127.0.0.1 MASTER_PORT=" + port + " ESFT_COLLECTIVE_TIMEOUT_S=120 " + test::esft_bin() +
           fixture().common + " --nproc-per-node 2 --expert-parallel 2 --output " + out.string() + " 2> " +
           out.string() + ".node" + std::to_string(n) + ".log; echo $? > " + out.string() + ".rc" + std::to_string(n);
  };
  ASSERT_EQ(test::run("(" + node(0) + ") & " + node(1) + "; wait"), 0);
  EXPECT_EQ(read_file(out.string() + ".rc0"), "0\n") << read_file(out.string() + ".node0.log");
  EXPECT_EQ(read_file(out.string() + ".rc1"), "0\n") << read_file(out.string() + ".node1.log");
  EXPECT_NE(read_file(out.string() + ".node1.log").find("launching 2 worker(s) on node 1 of 2 (world size 4"),
            std::string::npos);
  expect_same_run(out, "SLURM 2 nodes x 2");
}

}  // namespace
