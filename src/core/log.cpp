#include "esft/log.h"

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

namespace esft {

namespace {
spdlog::logger& logger() {
  static std::shared_ptr<spdlog::logger> l = [] {
    auto lg = spdlog::stderr_color_mt("esft");
    lg->set_pattern("[%Y-%m-%d %H:%M:%S] %^%l%$ %v");
    return lg;
  }();
  return *l;
}
}  // namespace

void log_info(const std::string& msg) { logger().info(msg); }
void log_warn(const std::string& msg) { logger().warn(msg); }
void log_error(const std::string& msg) { logger().error(msg); }
void set_log_quiet(bool quiet) { logger().set_level(quiet ? spdlog::level::warn : spdlog::level::info); }

namespace {
bool g_secondary_rank = false;
}

void set_log_rank(int rank) {
  g_secondary_rank = rank > 0;
  if (!g_secondary_rank) return;
  logger().set_pattern("[%Y-%m-%d %H:%M:%S] [rank " + std::to_string(rank) + "] %^%l%$ %v");
  set_log_quiet(true);
}

bool stderr_is_tty() { return !g_secondary_rank && ::isatty(2) != 0; }

}  // namespace esft
