#include "esft/progress.h"

#include <fmt/format.h>

#include <cstdio>

#include "esft/log.h"

namespace esft {

ProgressBar::ProgressBar(std::string label, int64_t total, std::string unit)
    : label_(std::move(label)), unit_(std::move(unit)), total_(total), enabled_(stderr_is_tty()),
      start_(std::chrono::steady_clock::now()), last_draw_(start_) {}

ProgressBar::~ProgressBar() { finish(); }

double ProgressBar::elapsed_s() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}
double ProgressBar::rate() const {
  double t = elapsed_s();
  return t > 0 ? done_ / t : 0;
}

void ProgressBar::update(int64_t done, const std::string& extra) {
  done_ = done;
  extra_ = extra;
  auto now = std::chrono::steady_clock::now();
  if (enabled_ && now - last_draw_ > std::chrono::milliseconds(200)) {
    last_draw_ = now;
    draw(false);
  }
}

std::string format_duration(double seconds) {
  const int64_t s = int64_t(seconds + 0.5);
  if (s >= 3600) return fmt::format("{}:{:02d}:{:02d}", s / 3600, s / 60 % 60, s % 60);
  return fmt::format("{}:{:02d}", s / 60, s % 60);
}

std::string ProgressBar::timing() const {
  const double t = elapsed_s(), r = rate();
  if (finished_ || total_ <= 0 || done_ >= total_) return format_duration(t);
  if (done_ <= 0 || r <= 0) return format_duration(t) + " ETA ?";
  return format_duration(t) + " ETA " + format_duration(double(total_ - done_) / r);
}

void ProgressBar::draw(bool final) {
  std::string bar;
  if (total_ > 0) {
    double f = std::min(1.0, double(done_) / double(total_));
    int width = 30, full = int(f * width);
    bar = "[" + std::string(full, '#') + std::string(width - full, '.') + "] " +
          fmt::format("{:3.0f}% {}/{}", 100 * f, done_, total_);
  } else {
    bar = fmt::format("{}", done_);
  }
  std::fprintf(stderr, "\r%s %s %.0f %s/s %s %s\033[K%s", label_.c_str(), bar.c_str(), rate(), unit_.c_str(),
               timing().c_str(), extra_.c_str(), final ? "\n" : "");
  std::fflush(stderr);
}

void ProgressBar::finish() {
  if (finished_) return;
  finished_ = true;
  if (enabled_) draw(true);
}

}  // namespace esft
