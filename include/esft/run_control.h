// What keeps a long run safe to interrupt and to restart: an exclusive lock on its output
// directory, stop signals turned into a clean stop, and clean-up of the temporaries an earlier,
// killed run left behind. Torch-free.
#pragma once
#include <string>
#include <vector>

#include "esft/fs.h"

namespace esft {

// Exit status of a run stopped by SIGTERM/SIGINT after writing a checkpoint: BSD's EX_TEMPFAIL
// ("try again later"). Job scripts requeue on it (scripts/slurm/*.sbatch); the launcher of a
// multi-process job passes it on when its workers stopped that way.
constexpr int kExitInterrupted = 75;

// An exclusive lock on a directory (flock on DIR/.esft.lock, released by the kernel when the
// process dies, so a kill -9 never leaves a stale lock). A second run on the same directory fails
// at once, naming the holder's pid and command. The lock file is removed on release.
class DirectoryLock {
 public:
  // what: the flag, for the error ("--output"); dir is created if missing.
  DirectoryLock(const fs::path& dir, const std::string& what);
  ~DirectoryLock();
  DirectoryLock(const DirectoryLock&) = delete;
  DirectoryLock& operator=(const DirectoryLock&) = delete;

 private:
  fs::path path_;
  int fd_ = -1;
};

// SIGTERM / SIGINT (what SLURM, SageMaker and Ctrl-C send) set a flag instead of ending the
// process; the training loop polls it between steps. A second signal ends the process at once.
void install_stop_handlers();
void remove_stop_handlers();
int stop_signal();  // the signal received since install, 0 if none
// For tests and for a launcher that learns of a stop another way.
void request_stop(int sig);

// Removes what writes interrupted by a kill left in dir: "NAME.tmp.PID" entries (AtomicFile and
// directory temporaries) and "NAME.old.PID" directories of replace_directory() (restored to NAME
// when NAME itself is missing, i.e. the kill fell between its two renames). Only entries of
// processes no longer alive are touched. Returns the paths removed or restored, for the log.
std::vector<std::string> remove_stale_temporaries(const fs::path& dir);

// True when p is the same path as dir or lies inside it (symbolic links and ".." resolved as far
// as the paths exist).
bool path_within(const fs::path& p, const fs::path& dir);

}  // namespace esft
