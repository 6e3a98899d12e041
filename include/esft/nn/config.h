// Typed access to config.json values with errors that name the file and key.
#pragma once
#include <nlohmann/json.hpp>

#include <string>
#include <vector>

#include "esft/error.h"

namespace esft::nn {

class ConfigReader {
 public:
  ConfigReader(const nlohmann::json& j, std::string where) : j_(j), where_(std::move(where)) {}
  const nlohmann::json& json() const { return j_; }
  const std::string& where() const { return where_; }
  bool has(const std::string& key) const { return j_.contains(key) && !j_[key].is_null(); }

  int64_t req_int(const std::string& key) const {
    if (!has(key)) fail("{}: required key \"{}\" is missing", where_, key);
    if (!j_[key].is_number_integer()) fail("{}: \"{}\" must be an integer", where_, key);
    return j_[key].get<int64_t>();
  }
  int64_t get_int(const std::string& key, int64_t dflt) const { return has(key) ? req_int(key) : dflt; }
  double get_double(const std::string& key, double dflt) const {
    if (!has(key)) return dflt;
    if (!j_[key].is_number()) fail("{}: \"{}\" must be a number", where_, key);
    return j_[key].get<double>();
  }
  bool get_bool(const std::string& key, bool dflt) const {
    if (!has(key)) return dflt;
    if (!j_[key].is_boolean()) fail("{}: \"{}\" must be true or false", where_, key);
    return j_[key].get<bool>();
  }
  std::string get_string(const std::string& key, const std::string& dflt) const {
    if (!has(key)) return dflt;
    if (!j_[key].is_string()) fail("{}: \"{}\" must be a string", where_, key);
    return j_[key].get<std::string>();
  }
  std::vector<int64_t> get_int_list(const std::string& key) const {
    if (!has(key)) return {};
    if (!j_[key].is_array()) fail("{}: \"{}\" must be a list of integers", where_, key);
    return j_[key].get<std::vector<int64_t>>();
  }

 private:
  const nlohmann::json& j_;
  std::string where_;
};

}  // namespace esft::nn
