#include "esft/dist/launch.h"

#include <arpa/inet.h>
#include <fmt/format.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <map>
#include <thread>

#include "esft/error.h"
#include "esft/log.h"
#include "esft/run_control.h"

extern char** environ;

namespace esft::dist {

Env process_env() {
  return [](const char* name) -> const char* { return std::getenv(name); };
}

namespace {

std::optional<std::string> get(const Env& env, const char* name) {
  const char* v = env(name);
  if (!v || !*v) return std::nullopt;
  return std::string(v);
}

int get_int(const Env& env, const char* name, int lo, int hi) {
  auto v = get(env, name);
  if (!v) fail("environment variable {} is not set", name);
  char* end = nullptr;
  errno = 0;
  long x = std::strtol(v->c_str(), &end, 10);
  if (errno || end == v->c_str() || *end || x < lo || x > hi)
    fail("environment variable {}=\"{}\": expected an integer in [{}, {}]", name, *v, lo, hi);
  return int(x);
}

int get_int_or(const Env& env, const char* name, int dflt, int lo, int hi) {
  return get(env, name) ? get_int(env, name, lo, hi) : dflt;
}

// "8(x2),4" -> 8: the task count of the first node group, which holds node 0 (SLURM_TASKS_PER_NODE).
int first_task_count(const std::string& s, const char* name) {
  size_t i = 0;
  while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) ++i;
  if (i == 0) fail("environment variable {}=\"{}\": expected counts such as 8(x2),4", name, s);
  return std::stoi(s.substr(0, i));
}

void check_world(const WorldInfo& w, const std::string& from) {
  ESFT_CHECK(w.world_size >= 1 && w.rank >= 0 && w.rank < w.world_size, "{}: rank {} is outside the world of {}", from,
             w.rank, w.world_size);
  ESFT_CHECK(w.local_world_size >= 1 && w.local_rank >= 0 && w.local_rank < w.local_world_size,
             "{}: local rank {} is outside the {} processes of this node", from, w.local_rank, w.local_world_size);
  ESFT_CHECK(w.master_port > 0 && w.master_port < 65536, "{}: master port {} out of range", from, w.master_port);
}

}  // namespace

std::vector<std::string> expand_nodelist(const std::string& list) {
  std::vector<std::string> out;
  auto bad = [&](const std::string& why) { fail("SLURM node list \"{}\": {}", list, why); };
  size_t i = 0;
  while (i < list.size()) {
    // One item: prefix[ranges]suffix? -- only one bracket group per item, as SLURM writes them.
    size_t j = i;
    int depth = 0;
    while (j < list.size() && (depth > 0 || list[j] != ',')) {
      if (list[j] == '[') ++depth;
      if (list[j] == ']') --depth;
      if (depth < 0 || depth > 1) bad("unbalanced brackets");
      ++j;
    }
    if (depth != 0) bad("unbalanced brackets");
    std::string item = list.substr(i, j - i);
    i = j + 1;
    if (item.empty()) bad("empty host name");
    size_t lb = item.find('[');
    if (lb == std::string::npos) {
      out.push_back(item);
      continue;
    }
    size_t rb = item.find(']', lb);
    std::string prefix = item.substr(0, lb), suffix = item.substr(rb + 1), ranges = item.substr(lb + 1, rb - lb - 1);
    if (suffix.find('[') != std::string::npos) bad("more than one bracket group in a host name");
    size_t k = 0;
    while (k <= ranges.size()) {
      size_t c = ranges.find(',', k);
      if (c == std::string::npos) c = ranges.size();
      std::string r = ranges.substr(k, c - k);
      k = c + 1;
      size_t dash = r.find('-');
      std::string a = r.substr(0, dash), b = dash == std::string::npos ? a : r.substr(dash + 1);
      auto digits = [](const std::string& s) {
        return !s.empty() && s.find_first_not_of("0123456789") == std::string::npos && s.size() < 10;
      };
      if (!digits(a) || !digits(b)) bad(fmt::format("\"{}\" is not a number or range", r));
      long lo = std::stol(a), hi = std::stol(b);
      if (hi < lo) bad(fmt::format("range {} runs backwards", r));
      if (hi - lo > 100000) bad(fmt::format("range {} is implausibly large", r));
      const size_t width = a.size();  // zero padding as written
      for (long n = lo; n <= hi; ++n) {
        std::string num = std::to_string(n);
        if (num.size() < width) num = std::string(width - num.size(), '0') + num;
        out.push_back(prefix + num + suffix);
      }
    }
  }
  return out;
}

WorldInfo world_from_env(const Env& env) {
  WorldInfo w;
  if (get(env, "RANK") || get(env, "WORLD_SIZE")) {
    // torchrun, or esft's own launcher (which sets the same variables)
    w.launcher = get(env, "ESFT_LAUNCHER").value_or("torchrun");
    w.rank = get_int(env, "RANK", 0, 1 << 20);
    w.world_size = get_int(env, "WORLD_SIZE", 1, 1 << 20);
    w.local_rank = get_int_or(env, "LOCAL_RANK", w.rank, 0, 1 << 20);
    w.local_world_size = get_int_or(env, "LOCAL_WORLD_SIZE", w.world_size, 1, 1 << 20);
    w.master_addr = get(env, "MASTER_ADDR").value_or("127.0.0.1");
    w.master_port = get_int_or(env, "MASTER_PORT", 29500, 1, 65535);
    auto agent = get(env, "TORCHELASTIC_USE_AGENT_STORE");
    w.agent_store = agent && (*agent == "True" || *agent == "true" || *agent == "1");
    w.restart = get_int_or(env, "TORCHELASTIC_RESTART_COUNT", 0, 0, 1 << 20);
    check_world(w, "RANK/WORLD_SIZE/LOCAL_RANK/LOCAL_WORLD_SIZE");
    return w;
  }
  if (get(env, "SLURM_PROCID") && (get(env, "SLURM_STEP_ID") || get(env, "SLURM_STEPID"))) {
    // A task of an srun step (the batch script itself has no step id: it is not a rank).
    w.launcher = "slurm";
    w.rank = get_int(env, "SLURM_PROCID", 0, 1 << 20);
    w.world_size = get(env, "SLURM_STEP_NUM_TASKS") ? get_int(env, "SLURM_STEP_NUM_TASKS", 1, 1 << 20)
                                                    : get_int(env, "SLURM_NTASKS", 1, 1 << 20);
    w.local_rank = get_int_or(env, "SLURM_LOCALID", 0, 0, 1 << 20);
    if (auto s = get(env, "SLURM_STEP_TASKS_PER_NODE")) w.local_world_size = first_task_count(*s, "SLURM_STEP_TASKS_PER_NODE");
    else if (auto s = get(env, "SLURM_NTASKS_PER_NODE")) w.local_world_size = first_task_count(*s, "SLURM_NTASKS_PER_NODE");
    else if (auto s = get(env, "SLURM_TASKS_PER_NODE")) w.local_world_size = first_task_count(*s, "SLURM_TASKS_PER_NODE");
    else w.local_world_size = 1;
    if (auto a = get(env, "MASTER_ADDR")) {
      w.master_addr = *a;
    } else {
      auto nodes = get(env, "SLURM_STEP_NODELIST") ? get(env, "SLURM_STEP_NODELIST") : get(env, "SLURM_JOB_NODELIST");
      if (!nodes) fail("under srun, set MASTER_ADDR or SLURM_JOB_NODELIST so that the ranks find rank 0's host");
      w.master_addr = expand_nodelist(*nodes).at(0);
    }
    // Jobs sharing a first node must not share a port: derive it from the job id unless given.
    w.master_port = get(env, "MASTER_PORT") ? get_int(env, "MASTER_PORT", 1, 65535)
                                            : 20000 + get_int_or(env, "SLURM_JOB_ID", 9500, 0, 1 << 30) % 20000;
    check_world(w, "SLURM_PROCID/SLURM_NTASKS/SLURM_LOCALID");
    return w;
  }
  if (get(env, "SM_HOSTS") && get(env, "SM_CURRENT_HOST")) {
    // SageMaker: one process per host; --nproc-per-node spawns the workers of each host.
    auto hosts = nlohmann::json::parse(*get(env, "SM_HOSTS"), nullptr, false);
    if (hosts.is_discarded() || !hosts.is_array() || hosts.empty())
      fail("SM_HOSTS=\"{}\": expected a JSON list of host names", *get(env, "SM_HOSTS"));
    std::vector<std::string> names;
    for (auto& h : hosts) {
      if (!h.is_string()) fail("SM_HOSTS=\"{}\": expected a JSON list of host names", *get(env, "SM_HOSTS"));
      names.push_back(h.get<std::string>());
    }
    std::sort(names.begin(), names.end());  // every host must agree on the order: SageMaker's is not promised
    auto me = *get(env, "SM_CURRENT_HOST");
    auto it = std::find(names.begin(), names.end(), me);
    if (it == names.end()) fail("SM_CURRENT_HOST \"{}\" is not among SM_HOSTS {}", me, *get(env, "SM_HOSTS"));
    w.launcher = "sagemaker";
    w.rank = int(it - names.begin());
    w.world_size = int(names.size());
    w.master_addr = get(env, "MASTER_ADDR").value_or(names[0]);
    w.master_port = get_int_or(env, "MASTER_PORT", 29500, 1, 65535);
    check_world(w, "SM_HOSTS/SM_CURRENT_HOST");
    return w;
  }
  return w;
}

LaunchPlan plan_launch(int nproc, const Env& env) {
  ESFT_CHECK(nproc >= 0, "--nproc-per-node must be >= 1");
  LaunchPlan p;
  p.world = world_from_env(env);
  const auto& w = p.world;
  if (nproc == 0) return p;  // as the environment says
  if (!w.launched()) {
    // Alone: this process launches nproc workers on this node.
    p.spawn = true;
    p.nproc = nproc;
    p.master_addr = get(env, "MASTER_ADDR").value_or("127.0.0.1");
    p.master_port = get_int_or(env, "MASTER_PORT", 0, 1, 65535);
    return p;
  }
  if (w.local_world_size == nproc) return p;  // the launcher already started nproc per node: we are one of them
  if (w.local_world_size == 1) {
    // One process per node (srun --ntasks-per-node 1, SageMaker): each spawns the workers of its node.
    p.spawn = true;
    p.nproc = nproc;
    p.node_rank = w.rank;
    p.n_nodes = w.world_size;
    p.master_addr = w.master_addr;
    p.master_port = w.master_port;
    return p;
  }
  fail("--nproc-per-node {} but {} started {} processes on this node: pass the same count or leave the flag out", nproc,
       w.launcher, w.local_world_size);
}

namespace {

int free_local_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  ESFT_CHECK(fd >= 0, "cannot open a socket to find a free port: {}", std::strerror(errno));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t len = sizeof(a);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0 || ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    ::close(fd);
    fail("cannot find a free local port: {}", std::strerror(errno));
  }
  int port = ntohs(a.sin_port);
  ::close(fd);
  return port;
}

volatile sig_atomic_t g_forward_signal = 0;
void on_signal(int sig) { g_forward_signal = sig; }

std::string describe(int status) {
  if (WIFEXITED(status)) return fmt::format("exit status {}", WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return fmt::format("signal {} ({})", WTERMSIG(status), strsignal(WTERMSIG(status)));
  return "unknown status";
}

int exit_code(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return 1;
}

}  // namespace

int spawn_workers(const LaunchPlan& plan, const std::vector<std::string>& args) {
  const int port = plan.master_port > 0 ? plan.master_port : free_local_port();
  const int world = plan.nproc * plan.n_nodes;
  std::map<pid_t, int> ranks;  // running workers: pid -> global rank
  const pid_t parent = ::getpid();
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  struct sigaction old_int {}, old_term {};
  ::sigaction(SIGINT, &sa, &old_int);
  ::sigaction(SIGTERM, &sa, &old_term);

  std::vector<std::string> base_env;
  for (char** e = environ; *e; ++e) {
    std::string kv = *e;
    auto key = kv.substr(0, kv.find('='));
    for (auto k : {"RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "ESFT_LAUNCHER",
                   "GROUP_RANK", "NODE_RANK"})
      if (key == k) key.clear();
    if (!key.empty()) base_env.push_back(kv);
  }
  log_info(fmt::format("launching {} worker(s) on node {} of {} (world size {}, rendezvous {}:{})", plan.nproc,
                       plan.node_rank, plan.n_nodes, world, plan.master_addr, port));
  for (int local = 0; local < plan.nproc; ++local) {
    const int rank = plan.node_rank * plan.nproc + local;
    std::vector<std::string> env = base_env;
    for (auto& kv : std::vector<std::pair<std::string, std::string>>{
             {"RANK", std::to_string(rank)},
             {"WORLD_SIZE", std::to_string(world)},
             {"LOCAL_RANK", std::to_string(local)},
             {"LOCAL_WORLD_SIZE", std::to_string(plan.nproc)},
             {"GROUP_RANK", std::to_string(plan.node_rank)},
             {"MASTER_ADDR", plan.master_addr},
             {"MASTER_PORT", std::to_string(port)},
             {"ESFT_LAUNCHER", "esft"}})
      env.push_back(kv.first + "=" + kv.second);
    // The workers of a node share its cores (as torchrun does, unless the user says otherwise).
    if (!std::getenv("OMP_NUM_THREADS"))
      env.push_back("OMP_NUM_THREADS=" + std::to_string(std::max(1u, std::thread::hardware_concurrency() / unsigned(plan.nproc))));
    pid_t pid = ::fork();
    ESFT_CHECK(pid >= 0, "fork failed: {}", std::strerror(errno));
    if (pid == 0) {
      // The worker: ends with the launcher (also when the launcher is killed outright).
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent) ::_exit(1);
      ::sigaction(SIGINT, &old_int, nullptr);
      ::sigaction(SIGTERM, &old_term, nullptr);
      std::vector<char*> argv, envp;
      std::string prog = "esft";
      argv.push_back(prog.data());
      for (auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
      argv.push_back(nullptr);
      for (auto& e : env) envp.push_back(const_cast<char*>(e.c_str()));
      envp.push_back(nullptr);
      ::execve("/proc/self/exe", argv.data(), envp.data());
      std::fprintf(stderr, "esft: cannot start worker %d: %s\n", rank, std::strerror(errno));
      ::_exit(127);
    }
    ranks[pid] = rank;
  }

  int result = 0;
  bool interrupted = false;  // a worker stopped cleanly on a signal (checkpoint written)
  int forwarded = 0;         // the signal passed on to the workers
  auto stop_all = [&](int sig) {
    for (auto& [pid, r] : ranks) ::kill(pid, sig);
  };
  bool stopping = false;  // SIGTERM sent after a failure: SIGKILL at kill_at
  auto kill_at = std::chrono::steady_clock::now();
  const auto grace = std::chrono::seconds(15);
  while (!ranks.empty()) {
    if (g_forward_signal) {
      // SIGTERM/SIGINT: the workers finish their step together, checkpoint and exit with
      // kExitInterrupted; they get the time they need (a second signal ends them at once).
      int sig = g_forward_signal;
      g_forward_signal = 0;
      log_warn(fmt::format("launcher: got signal {}, passing it to the workers", sig));
      stop_all(sig);
      forwarded = sig;
    }
    int status = 0;
    pid_t pid = ::waitpid(-1, &status, WNOHANG);
    if (pid > 0 && ranks.count(pid)) {
      const int rank = ranks[pid];
      ranks.erase(pid);
      const bool ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
      if (WIFEXITED(status) && WEXITSTATUS(status) == kExitInterrupted) {
        interrupted = true;  // stopped on a signal after a checkpoint; the others stop at the same step
      } else if (!ok && !result) {
        result = exit_code(status);
        if (forwarded && WIFSIGNALED(status) && WTERMSIG(status) == forwarded) continue;  // ended by the signal we passed on
        log_error(fmt::format("worker rank {} failed ({}); stopping the other {} worker(s)", rank, describe(status),
                              ranks.size()));
        stop_all(SIGTERM);
        stopping = true;
        kill_at = std::chrono::steady_clock::now() + grace;
      }
      continue;
    }
    if (pid < 0 && errno == ECHILD) break;
    if (stopping && std::chrono::steady_clock::now() > kill_at) {
      if (!ranks.empty()) log_error(fmt::format("{} worker(s) still running after {}s: killing them", ranks.size(), grace.count()));
      stop_all(SIGKILL);
      stopping = false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  if (!result && interrupted) result = kExitInterrupted;
  ::sigaction(SIGINT, &old_int, nullptr);
  ::sigaction(SIGTERM, &old_term, nullptr);
  return result;
}

std::optional<int> launch_if_asked(int nproc_per_node, const std::vector<std::string>& args) {
  auto plan = plan_launch(nproc_per_node, process_env());
  if (!plan.spawn) return std::nullopt;
  return spawn_workers(plan, args);
}

}  // namespace esft::dist
