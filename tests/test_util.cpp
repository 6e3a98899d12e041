#include "test_util.h"

#include "esft/error.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>

#ifndef ESFT_BIN  // torch-free builds (ESFT_CORE_ONLY) have no esft binary
#define ESFT_BIN ""
#endif

namespace esft::test {

namespace {
// Build-time paths, overridable from the environment (a test binary run on another machine).
std::string setting(const char* env, const char* built_in) {
  const char* v = std::getenv(env);
  return v && *v ? v : built_in;
}
}  // namespace

fs::path temp_dir(const std::string& name) {
  fs::path p = fs::path(setting("ESFT_TEST_TMP", ESFT_BINARY_DIR "/test-tmp")) / (name + "-" + std::to_string(::getpid()));
  fs::remove_all(p);
  fs::create_directories(p);
  return p;
}

int run(const std::string& cmd) {
  int rc = std::system(cmd.c_str());
  if (rc == -1) return -1;
  return WEXITSTATUS(rc);
}

void run_python(const std::string& script, const std::string& args) {
  std::string cmd = setting("ESFT_TEST_PYTHON", ESFT_PYTHON) + " " + (source_dir() / "tests/python" / script).string() + " " + args;
  int rc = run(cmd);
  ASSERT_EQ(rc, 0) << "python reference failed: " << cmd;
}

fs::path source_dir() { return setting("ESFT_TEST_SOURCE_DIR", ESFT_SOURCE_DIR); }
fs::path shared_dir() { return setting("ESFT_TEST_SHARED_DIR", ESFT_SHARED_DIR); }
std::string esft_bin() { return setting("ESFT_TEST_BIN", ESFT_BIN); }

std::vector<nlohmann::json> read_jsonl(const fs::path& path) {
  std::vector<nlohmann::json> out;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) out.push_back(nlohmann::json::parse(line));
  return out;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace esft::test
