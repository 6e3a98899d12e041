#include "esft/run_control.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <algorithm>
#include <regex>

#include "esft/error.h"

namespace esft {

// ---- directory lock ------------------------------------------------------------------------

namespace {
std::string own_command() {
  std::ifstream in("/proc/self/cmdline", std::ios::binary);
  std::string raw((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>()), out;
  for (char c : raw) out += c ? c : ' ';
  while (!out.empty() && out.back() == ' ') out.pop_back();
  return out.size() > 300 ? out.substr(0, 300) + " ..." : out;
}
}  // namespace

DirectoryLock::DirectoryLock(const fs::path& dir, const std::string& what) : path_(dir / ".esft.lock") {
  fs::create_directories(dir);
  // The holder unlinks the file before it lets go: a process that opened the old file and got its
  // lock afterwards holds a lock on nothing, so it checks that the file it locked is still there.
  for (int attempt = 0; attempt < 100; ++attempt) {
    int fd = ::open(path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) fail("{} {}: cannot create the lock file {}: {}", what, dir.string(), path_.string(), std::strerror(errno));
    if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
      const int err = errno;
      std::string holder;
      char buf[512];
      ssize_t n = ::pread(fd, buf, sizeof buf - 1, 0);
      if (n > 0) holder.assign(buf, size_t(n));
      while (!holder.empty() && (holder.back() == '\n' || holder.back() == ' ')) holder.pop_back();
      ::close(fd);
      if (err == EWOULDBLOCK)
        fail("{} {} is in use by another esft run{}: two runs must not write one directory (lock {})", what,
             dir.string(), holder.empty() ? "" : " (" + holder + ")", path_.string());
      fail("{} {}: cannot lock {}: {}", what, dir.string(), path_.string(), std::strerror(err));
    }
    struct stat by_fd {}, by_path {};
    if (::fstat(fd, &by_fd) == 0 && ::stat(path_.c_str(), &by_path) == 0 && by_fd.st_ino == by_path.st_ino &&
        by_fd.st_dev == by_path.st_dev) {
      fd_ = fd;
      std::string me = "pid " + std::to_string(::getpid()) + ": " + own_command() + "\n";
      if (::ftruncate(fd_, 0) == 0 && ::pwrite(fd_, me.data(), me.size(), 0) < 0) {
      }  // the holder's description is only informative
      return;
    }
    ::close(fd);  // locked a file that its holder had just removed: try again
  }
  fail("{} {}: could not take the lock {}", what, dir.string(), path_.string());
}

DirectoryLock::~DirectoryLock() {
  if (fd_ < 0) return;
  ::unlink(path_.c_str());
  ::close(fd_);
}

// ---- stop signals ----------------------------------------------------------------------------

namespace {
volatile sig_atomic_t g_stop_signal = 0;
struct sigaction g_old_term {}, g_old_int {};
bool g_installed = false;

void on_stop_signal(int sig) {
  if (g_stop_signal) {  // the second one: stop now, as without a handler
    ::signal(sig, SIG_DFL);
    ::raise(sig);
    return;
  }
  g_stop_signal = sig;
  static const char msg[] =
      "\nesft: stop signal received: finishing the current step, then writing a checkpoint (a second signal ends at "
      "once)\n";
  ssize_t ignored = ::write(2, msg, sizeof msg - 1);
  (void)ignored;
}
}  // namespace

void install_stop_handlers() {
  if (g_installed) return;
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  ::sigaction(SIGTERM, &sa, &g_old_term);
  ::sigaction(SIGINT, &sa, &g_old_int);
  g_installed = true;
}

void remove_stop_handlers() {
  if (!g_installed) return;
  ::sigaction(SIGTERM, &g_old_term, nullptr);
  ::sigaction(SIGINT, &g_old_int, nullptr);
  g_installed = false;
}

int stop_signal() { return g_stop_signal; }
void request_stop(int sig) { g_stop_signal = sig; }

// ---- stale temporaries -----------------------------------------------------------------------

std::vector<std::string> remove_stale_temporaries(const fs::path& dir) {
  std::vector<std::string> done;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return done;
  static const std::regex re(R"((.+)\.(tmp|old)\.(\d+))");  // pid_sibling() names (fs.h)
  std::vector<fs::path> entries;
  for (auto& e : fs::directory_iterator(dir, ec)) entries.push_back(e.path());
  for (auto& p : entries) {
    std::smatch m;
    const std::string name = p.filename().string();
    if (!std::regex_match(name, m, re)) continue;
    const long pid = std::strtol(m[3].str().c_str(), nullptr, 10);
    if (pid <= 0 || pid == ::getpid()) continue;
    if (::kill(pid_t(pid), 0) == 0 || errno != ESRCH) continue;  // its writer is still alive
    const fs::path target = dir / m[1].str();
    if (m[2] == "old" && !fs::exists(target, ec)) {
      fs::rename(p, target, ec);  // the kill fell between moving the old copy aside and putting the new one in
      if (!ec) {
        done.push_back("restored " + target.string());
        continue;
      }
    }
    fs::remove_all(p, ec);
    if (!ec) done.push_back("removed " + p.string());
  }
  return done;
}

bool path_within(const fs::path& p, const fs::path& dir) {
  auto parts = [](const fs::path& x) {
    std::error_code ec;
    auto c = fs::weakly_canonical(fs::absolute(x), ec);
    if (ec) c = fs::absolute(x).lexically_normal();
    std::vector<std::string> out;
    for (auto& e : c)
      if (!e.empty()) out.push_back(e.string());
    return out;
  };
  auto a = parts(p), b = parts(dir);
  return a.size() >= b.size() && std::equal(b.begin(), b.end(), a.begin());
}

}  // namespace esft
