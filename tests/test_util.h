// Helpers shared by the test executables.
#pragma once
#include <nlohmann/json.hpp>

#include <functional>
#include <string>
#include <vector>

#include "esft/fs.h"

namespace esft::test {

// A fresh directory under the build tree, removed at exit unless ESFT_KEEP_TEST_DIRS is set.
fs::path temp_dir(const std::string& name);
// Runs a command through /bin/sh, returns its exit status; output goes to the test log.
int run(const std::string& cmd);
// Runs `ESFT_PYTHON tests/python/<script> args...` and fails the test if it exits non-zero.
void run_python(const std::string& script, const std::string& args);
fs::path source_dir();
fs::path shared_dir();
std::string esft_bin();
// The message of the esft::Error that f throws, or "" when it throws none.
std::string error_of(const std::function<void()>& f);
// Every non-empty line of a jsonl file, parsed.
std::vector<nlohmann::json> read_jsonl(const fs::path& path);

}  // namespace esft::test
