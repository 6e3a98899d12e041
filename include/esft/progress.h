// A terminal progress bar with a rate, the time spent and the time left (ETA at the rate so far), drawn on stderr only when it is a terminal (so logs
// from SLURM or SageMaker stay clean), at most a few times per second.
#pragma once
#include <chrono>
#include <cstdint>
#include <string>

namespace esft {

// 75 -> "1:15", 3725 -> "1:02:05".
std::string format_duration(double seconds);

class ProgressBar {
 public:
  // total: expected units (0 = unknown); unit: shown after the rate, e.g. "tok".
  ProgressBar(std::string label, int64_t total, std::string unit);
  ~ProgressBar();
  void update(int64_t done, const std::string& extra = "");
  void finish();
  double elapsed_s() const;
  double rate() const;  // units per second since start
  // "elapsed ETA remaining" ("0:42 ETA 3:10"); only the elapsed time when done or without a total.
  std::string timing() const;

 private:
  void draw(bool final);
  std::string label_, unit_, extra_;
  int64_t total_, done_ = 0;
  bool enabled_, finished_ = false;
  std::chrono::steady_clock::time_point start_, last_draw_;
};

}  // namespace esft
