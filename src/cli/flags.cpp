#include "flags.h"

#include <cmath>
#include <cstring>
#include <limits>

#include "esft/error.h"

namespace esft::cli {

namespace {

// The flag whose value is `text` on the command line ("--flag text" or "--flag=text").
std::string flag_of_value(int argc, char** argv, const std::string& text) {
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a.rfind("--", 0) == 0) {
      auto eq = a.find('=');
      if (eq != std::string::npos && a.substr(eq + 1) == text) return a.substr(0, eq);
      if (eq == std::string::npos && i + 1 < argc && text == argv[i + 1]) return a;
    }
  }
  return "";
}

}  // namespace

cxxopts::ParseResult parse_flags(cxxopts::Options& o, int argc, char** argv) {
  try {
    return o.parse(argc, argv);
  } catch (const cxxopts::exceptions::incorrect_argument_type& e) {
    // cxxopts names the value only: find it among the arguments.
    std::string msg = e.what();
    auto q1 = msg.find('\''), q2 = msg.rfind('\'');
    std::string value;
    if (q1 != std::string::npos && q2 > q1) value = msg.substr(q1 + 1, q2 - q1 - 1);
    else {  // cxxopts quotes with typographic quotes when the terminal allows; strip them
      auto a = msg.find("Argument ") + 9, b = msg.find(" failed to parse");
      value = b != std::string::npos && a < b ? msg.substr(a, b - a) : msg;
      for (const char* q : {"\xe2\x80\x98", "\xe2\x80\x99"})
        for (size_t p; (p = value.find(q)) != std::string::npos;) value.erase(p, std::strlen(q));
    }
    std::string flag = flag_of_value(argc, argv, value);
    if (flag.empty()) fail("{}: \"{}\" is not a valid value (see --help)", argv[0], value);
    fail("{} \"{}\": not a valid value for this flag (a number in range, see --help)", flag, value);
  } catch (const cxxopts::exceptions::exception& e) {
    std::string msg = e.what();
    for (const char* q : {"\xe2\x80\x98", "\xe2\x80\x99"})
      for (size_t p; (p = msg.find(q)) != std::string::npos;) msg.replace(p, std::strlen(q), "'");
    fail("{}: {} (see --help)", argv[0], msg);
  }
}

double flag_number(const cxxopts::ParseResult& a, const std::string& flag, double lo, double hi) {
  double v = a[flag].as<double>();
  if (!std::isfinite(v) || v < lo || v > hi) fail("--{} {}: expected a number in [{}, {}]", flag, v, lo, hi);
  return v;
}

int64_t flag_int(const cxxopts::ParseResult& a, const std::string& flag, int64_t lo, int64_t hi) {
  int64_t v = a[flag].as<int64_t>();
  if (v < lo || v > hi) {
    if (hi == std::numeric_limits<int64_t>::max()) fail("--{} {}: must be at least {}", flag, v, lo);
    fail("--{} {}: expected an integer in [{}, {}]", flag, v, lo, hi);
  }
  return v;
}

void require_flags(const cxxopts::ParseResult& a, std::initializer_list<const char*> names) {
  for (auto name : names)
    if (!a.count(name)) fail("--{} is required (see --help)", name);
}

int64_t checkpoint_layers(const cxxopts::ParseResult& a) {
  const int64_t n = flag_int(a, "checkpoint-layers", 0, std::numeric_limits<int64_t>::max());
  if (a.count("activation-checkpointing") == 0) return n;
  if (n != 0) fail("--activation-checkpointing (every layer) and --checkpoint-layers {}: give one of them", n);
  return -1;
}

}  // namespace esft::cli

namespace esft::cli {

std::map<std::string, bool> flag_names(const cxxopts::Options& o) {
  std::map<std::string, bool> out;
  for (auto& g : o.groups())
    for (auto& d : o.group_help(g).options)
      for (auto& l : d.l) out[l] = d.is_boolean;
  return out;
}

}  // namespace esft::cli
