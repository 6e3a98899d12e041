// Logging for every component. Implemented in esft_core on top of spdlog; this header has no
// spdlog/fmt dependency so LibTorch translation units (which see a different fmt) can use it.
#pragma once
#include <string>

namespace esft {

void log_info(const std::string& msg);
void log_warn(const std::string& msg);
void log_error(const std::string& msg);
void set_log_quiet(bool quiet);  // warnings and errors only
// Multi-process jobs: ranks other than 0 log only warnings and errors, tagged with their rank,
// and draw no progress bars.
void set_log_rank(int rank);

// True when stderr is a terminal (progress bars are drawn only then).
bool stderr_is_tty();

}  // namespace esft
