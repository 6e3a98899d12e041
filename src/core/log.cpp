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
bool stderr_is_tty() { return ::isatty(2) != 0; }

}  // namespace esft
