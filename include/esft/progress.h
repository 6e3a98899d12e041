// A terminal progress bar with a rate, drawn on stderr only when it is a terminal (so logs
// from SLURM or SageMaker stay clean), at most a few times per second.
#pragma once
#include <chrono>
#include <cstdint>
#include <string>

namespace esft {

class ProgressBar {
 public:
  // total: expected units (0 = unknown); unit: shown after the rate, e.g. "tok".
  ProgressBar(std::string label, int64_t total, std::string unit);
  ~ProgressBar();
  void update(int64_t done, const std::string& extra = "");
  void finish();
  double elapsed_s() const;
  double rate() const;  // units per second since start

 private:
  void draw(bool final);
  std::string label_, unit_, extra_;
  int64_t total_, done_ = 0;
  bool enabled_, finished_ = false;
  std::chrono::steady_clock::time_point start_, last_draw_;
};

}  // namespace esft
