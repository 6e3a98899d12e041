// Error reporting shared by every component: one exception type whose message names the file,
// line or tensor at fault, so the CLI can print it and exit non-zero.
#pragma once
#include <fmt/format.h>

#include <stdexcept>
#include <string>

namespace esft {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

template <class... Args>
[[noreturn]] void fail(fmt::format_string<Args...> f, Args&&... args) {
  throw Error(fmt::format(f, std::forward<Args>(args)...));
}

#define ESFT_CHECK(cond, ...)                \
  do {                                       \
    if (!(cond)) ::esft::fail(__VA_ARGS__);  \
  } while (0)

}  // namespace esft
