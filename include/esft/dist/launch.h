// Where this process stands in a multi-process job, and `--nproc-per-node N`.
//
// A process learns its place from the environment of whoever started it:
//   esft itself (--nproc-per-node) and torchrun: RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE,
//     MASTER_ADDR, MASTER_PORT (the same names, so one reader serves both);
//   srun: SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID, SLURM_NTASKS_PER_NODE (or the first count
//     of SLURM_TASKS_PER_NODE), with MASTER_ADDR/MASTER_PORT from the environment when set, else
//     the first host of SLURM_JOB_NODELIST and a port derived from SLURM_JOB_ID;
//   a SageMaker training job (SM_HOSTS, SM_CURRENT_HOST, SM_NUM_GPUS): one process per host,
//     which spawns one worker per GPU (see plan_launch and src/cli/sagemaker.cpp).
// Without any of these the process is alone (world size 1, not launched).
//
// `--nproc-per-node N` makes the process a launcher: it starts N copies of the same command
// (fork/exec of /proc/self/exe, no Python) with RANK/... set, waits for them, and when one fails
// stops the others and exits with that worker's status. Under a launcher that already started N
// processes per node (torchrun --nproc-per-node N, srun --ntasks-per-node N) the flag is only
// checked against it; under one process per node (srun --ntasks-per-node 1, SageMaker) each of
// them spawns N workers, ranks numbered node by node.
#pragma once
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace esft::dist {

// getenv-like lookup (tests pass a map): nullptr when unset.
using Env = std::function<const char*(const char*)>;
Env process_env();

struct WorldInfo {
  int rank = 0, world_size = 1, local_rank = 0, local_world_size = 1;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  std::string launcher = "none";  // esft | torchrun | slurm | sagemaker | none
  // torchrun's agent already serves the rendezvous store at MASTER_ADDR:MASTER_PORT
  // (TORCHELASTIC_USE_AGENT_STORE): rank 0 joins it instead of serving its own.
  bool agent_store = false;
  int restart = 0;  // TORCHELASTIC_RESTART_COUNT: keys of a restarted attempt stay apart
  bool launched() const { return launcher != "none"; }
};

// Reads the variables above; fails naming the variable when one is malformed or inconsistent.
WorldInfo world_from_env(const Env& env);

// SLURM's compressed host list: "gpu[01-03,07],cpu5,io-[1-2]" -> gpu01 gpu02 gpu03 gpu07 cpu5 io-1 io-2.
// Zero padding of ranges is kept ("[08-10]" -> 08 09 10).
std::vector<std::string> expand_nodelist(const std::string& list);

struct LaunchPlan {
  bool spawn = false;  // start nproc workers here and wait for them
  int nproc = 1, node_rank = 0, n_nodes = 1;
  std::string master_addr;
  int master_port = 0;  // 0: pick a free local port (single node)
  WorldInfo world;      // !spawn: this process's place
};

// What `--nproc-per-node N` (0 = not given) means in this environment; fails when the flag
// contradicts the launcher (torchrun started 4 per node, the flag says 8).
LaunchPlan plan_launch(int nproc_per_node, const Env& env);

// Starts plan.nproc workers running `/proc/self/exe args...` with the RANK/... variables set
// (ESFT_LAUNCHER=esft), forwards SIGINT/SIGTERM to them, and returns when all have ended: 0 when
// all succeeded, else the first failing worker's exit status, after stopping the others
// (SIGTERM, then SIGKILL after a grace period). Workers that stopped cleanly on a forwarded signal
// (exit kExitInterrupted, a checkpoint written) are given the time they need, and their status is
// returned. Workers die with the launcher (PR_SET_PDEATHSIG).
int spawn_workers(const LaunchPlan& plan, const std::vector<std::string>& args);

// For subcommands: handles --nproc-per-node. Returns the exit status when this process was the
// launcher (it has already run the workers), nothing when it should go on and do the work.
// args: the full command line after the program name ("train", flags...).
std::optional<int> launch_if_asked(int nproc_per_node, const std::vector<std::string>& args);

}  // namespace esft::dist
