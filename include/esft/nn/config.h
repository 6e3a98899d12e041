// Typed, range-checked access to config.json values with errors that name the file and key.
#pragma once
#include <nlohmann/json.hpp>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "esft/error.h"

namespace esft::nn {

class ConfigReader {
 public:
  static constexpr int64_t kNoMin = std::numeric_limits<int64_t>::min();
  ConfigReader(const nlohmann::json& j, std::string where) : j_(j), where_(std::move(where)) {
    if (!j_.is_object()) fail("{}: expected a JSON object", where_);
  }
  const nlohmann::json& json() const { return j_; }
  const std::string& where() const { return where_; }
  bool has(const std::string& key) const { return j_.contains(key) && !j_[key].is_null(); }

  // An integer >= min.
  int64_t req_int(const std::string& key, int64_t min = kNoMin) const {
    if (!has(key)) fail("{}: required key \"{}\" is missing", where_, key);
    return check_int(key, j_[key], min);
  }
  int64_t get_int(const std::string& key, int64_t dflt, int64_t min = kNoMin) const {
    return has(key) ? req_int(key, min) : dflt;
  }
  // A finite number in [lo, hi].
  double get_double(const std::string& key, double dflt, double lo = -HUGE_VAL, double hi = HUGE_VAL) const {
    if (!has(key)) return dflt;
    if (!j_[key].is_number()) fail("{}: \"{}\" must be a number, not {}", where_, key, j_[key].dump());
    double v = j_[key].get<double>();
    if (!std::isfinite(v) || v < lo || v > hi)
      fail("{}: \"{}\" is {}, expected a value in [{}, {}]", where_, key, j_[key].dump(), lo, hi);
    return v;
  }
  bool get_bool(const std::string& key, bool dflt) const {
    if (!has(key)) return dflt;
    if (!j_[key].is_boolean()) fail("{}: \"{}\" must be true or false, not {}", where_, key, j_[key].dump());
    return j_[key].get<bool>();
  }
  std::string get_string(const std::string& key, const std::string& dflt) const {
    if (!has(key)) return dflt;
    if (!j_[key].is_string()) fail("{}: \"{}\" must be a string, not {}", where_, key, j_[key].dump());
    return j_[key].get<std::string>();
  }
  // A list of integers >= min (null or absent: empty).
  std::vector<int64_t> get_int_list(const std::string& key, int64_t min = kNoMin) const {
    if (!has(key)) return {};
    if (!j_[key].is_array()) fail("{}: \"{}\" must be a list of integers, not {}", where_, key, j_[key].dump());
    std::vector<int64_t> out;
    for (auto& v : j_[key]) out.push_back(check_int(key, v, min));
    return out;
  }
  std::vector<std::string> get_string_list(const std::string& key) const {
    if (!has(key)) return {};
    if (!j_[key].is_array()) fail("{}: \"{}\" must be a list of strings, not {}", where_, key, j_[key].dump());
    std::vector<std::string> out;
    for (auto& v : j_[key]) {
      if (!v.is_string()) fail("{}: \"{}\" must be a list of strings; it holds {}", where_, key, v.dump());
      out.push_back(v.get<std::string>());
    }
    return out;
  }

 private:
  int64_t check_int(const std::string& key, const nlohmann::json& v, int64_t min) const {
    if (!v.is_number_integer()) fail("{}: \"{}\" must be an integer, not {}", where_, key, v.dump());
    if (v.is_number_unsigned() && v.get<uint64_t>() > uint64_t(std::numeric_limits<int64_t>::max()))
      fail("{}: \"{}\" is too large ({})", where_, key, v.dump());
    int64_t x = v.get<int64_t>();
    if (x < min) fail("{}: \"{}\" is {}, it must be at least {}", where_, key, x, min);
    return x;
  }
  const nlohmann::json& j_;
  std::string where_;
};

}  // namespace esft::nn
