// Routing logs, scores and expert selection, reproducing the ESFT reference bit for bit
// (see ../shared/fixtures/esft-official/README.md and docs/esft-reference.md §1.4-1.6).
#include "esft/routing_stats.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <regex>

#include "esft/error.h"

namespace esft {

namespace {

// Python's round(x, 4): correctly rounded from the exact binary value, ties to even. Away from
// ties k/1e4 with k = nearest integer of x*1e4 is that value (IEEE division is correctly rounded);
// near a tie, glibc's printf decides exactly as Python does.
double round4(double x) {
  double y = x * 1e4, k = std::nearbyint(y);
  if (std::fabs(std::fabs(y - k) - 0.5) > 1e-6 && std::fabs(y) < 1e15) return k / 1e4;
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.4f", x);
  return std::strtod(buf, nullptr);
}

// repr() of a value that round4() returned: its 4-decimal form without trailing zeros.
std::string repr4(double x) {
  long long k = std::llround(x * 1e4);
  if (std::fabs(x) >= 1e15 || double(k) / 1e4 != x) return "";  // not a round4 value
  bool neg = k < 0;
  unsigned long long a = neg ? -k : k, ip = a / 10000, fp = a % 10000;
  char buf[40];
  int n = std::snprintf(buf, sizeof buf, "%s%llu.%04llu", neg ? "-" : "", ip, fp);
  while (n > 0 && buf[n - 1] == '0' && buf[n - 2] != '.') --n;
  return std::string(buf, n);
}

// Python's repr(float): shortest digits that round-trip, always with a decimal point.
std::string py_repr(double x) {
  if (auto fast = repr4(x); !fast.empty()) return fast;
  char buf[64];
  for (int p = 1; p <= 17; ++p) {
    std::snprintf(buf, sizeof buf, "%.*g", p, x);
    if (std::strtod(buf, nullptr) == x) break;
  }
  std::string s = buf;
  if (s.find_first_of(".en") == std::string::npos) s += ".0";  // "1" -> "1.0", keep inf/nan/exponents
  return s;
}

// Layer statistics pooled over every logged token.
struct LayerCounts {
  std::vector<int64_t> count;
  std::vector<double> gate;
  int64_t n_ids = 0;  // = K * N tokens
};

nlohmann::json make_summary(const std::map<int, LayerCounts>& layers, int top_k, int n_experts) {
  nlohmann::json token = nlohmann::json::object(), gate = nlohmann::json::object();
  for (auto& [layer, c] : layers) {
    nlohmann::ordered_json t, g;
    double n_tokens = double(c.n_ids) / top_k;
    for (int e = 0; e < n_experts; ++e) {
      int64_t cnt = e < int(c.count.size()) ? c.count[e] : 0;
      double gs = e < int(c.gate.size()) ? c.gate[e] : 0.0;
      // Same operation order as the reference: (count/K) / (Σ count/K), gate / N.
      t[std::to_string(e)] = round4(c.n_ids ? (double(cnt) / top_k) / n_tokens : 0.0);
      g[std::to_string(e)] = round4(c.n_ids ? gs / n_tokens : 0.0);
    }
    token[std::to_string(layer)] = nlohmann::json::parse(t.dump());
    gate[std::to_string(layer)] = nlohmann::json::parse(g.dump());
  }
  return {{"token_scores", token}, {"gate_scores", gate}};
}

}  // namespace

// ---------------------------------------------------------------------------------------------
struct RoutingStats::Impl {
  int n_experts, top_k;
  fs::path log_dir;
  std::map<int, LayerCounts> layers;
  std::map<int, std::unique_ptr<AtomicFile>> logs;
};

RoutingStats::RoutingStats(int n_experts, int top_k, fs::path log_dir) : impl_(new Impl) {
  impl_->n_experts = n_experts;
  impl_->top_k = top_k;
  impl_->log_dir = std::move(log_dir);
  if (!impl_->log_dir.empty()) fs::create_directories(impl_->log_dir);
}
RoutingStats::~RoutingStats() = default;

void RoutingStats::prepare_layers(const std::vector<int>& layers) {
  for (int layer : layers) {
    auto& c = impl_->layers[layer];
    if (c.count.empty()) c.count.assign(impl_->n_experts, 0), c.gate.assign(impl_->n_experts, 0.0);
    if (!impl_->log_dir.empty() && !impl_->logs[layer])
      impl_->logs[layer] = std::make_unique<AtomicFile>(impl_->log_dir / routing_log_name(layer));
  }
}

void RoutingStats::add(int layer, const int64_t* ids, const float* weights, int64_t n_tokens) {
  if (n_tokens <= 0) return;  // the reference never logs an empty forward; an empty line would not parse
  prepare_layers({layer});
  auto& c = impl_->layers.at(layer);
  const int64_t n = n_tokens * impl_->top_k;
  for (int64_t i = 0; i < n; ++i) {
    ESFT_CHECK(ids[i] >= 0 && ids[i] < impl_->n_experts, "layer {}: expert id {} out of range", layer, ids[i]);
    if (!std::isfinite(weights[i]))
      fail("layer {}: the model produced a non-finite gate weight ({}): its weights or inputs hold NaN/Inf", layer,
           weights[i]);
  }
  const bool log = !impl_->log_dir.empty();
  std::string line;
  if (log) line.reserve(size_t(n) * 12);
  char buf[24];
  for (int64_t i = 0; i < n; ++i) {
    c.count[ids[i]]++;
    if (!log) continue;
    if (i) line += '\t';
    line.append(buf, std::to_chars(buf, buf + sizeof buf, ids[i]).ptr);
  }
  line += "\t";
  for (int64_t i = 0; i < n; ++i) {
    // The reference logs round(w, 4) and scores from the logged values: do the same.
    double w = round4(double(weights[i]));
    c.gate[ids[i]] += w;
    if (log) line += '\t', line += py_repr(w);
  }
  c.n_ids += n;
  if (log) {
    line += "\n";
    impl_->logs.at(layer)->write(line);
  }
}

void RoutingStats::finish() {
  for (auto& [layer, f] : impl_->logs) f->commit();
  impl_->logs.clear();
}

nlohmann::json RoutingStats::summary() const { return make_summary(impl_->layers, impl_->top_k, impl_->n_experts); }

// ---------------------------------------------------------------------------------------------
namespace {

struct ParsedLog {
  int layer;
  fs::path path;
  std::vector<std::vector<int64_t>> ids;
  std::vector<std::vector<double>> weights;
  std::vector<int> lineno;  // of each entry of ids/weights, for errors found after parsing
};

ParsedLog parse_log(const fs::path& path, int layer) {
  ParsedLog p{layer, path, {}, {}, {}};
  std::ifstream in(path);
  if (!in) fail("cannot open {}", path.string());
  std::string line;
  for (int lineno = 1; std::getline(in, line); ++lineno) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) continue;
    auto bad = [&](const std::string& why) { fail("{}:{}: {}", path.string(), lineno, why); };
    auto sep = line.find("\t\t");
    if (sep == std::string::npos) bad("no double tab between expert ids and gate weights");
    std::vector<int64_t> ids;
    std::vector<double> ws;
    auto split = [&](size_t b, size_t e, auto&& each) {
      while (b < e) {
        size_t t = line.find('\t', b);
        if (t == std::string::npos || t > e) t = e;
        if (t == b) bad("empty field");
        each(line.substr(b, t - b));
        b = t + 1;
      }
    };
    split(0, sep, [&](const std::string& s) {
      char* end;
      long long v = std::strtoll(s.c_str(), &end, 10);
      // The bound keeps a garbage id from sizing the per-expert tables (no MoE has 2^20 experts).
      if (*end || v < 0 || v >= (1 << 20)) bad("expert id \"" + s + "\" is not an integer in [0, 2^20)");
      ids.push_back(v);
    });
    split(sep + 2, line.size(), [&](const std::string& s) {
      char* end;
      double v = std::strtod(s.c_str(), &end);
      if (*end || !std::isfinite(v)) bad("gate weight \"" + s + "\" is not a number");
      ws.push_back(v);
    });
    if (ids.size() != ws.size()) bad(fmt::format("{} expert ids but {} gate weights", ids.size(), ws.size()));
    p.ids.push_back(std::move(ids));
    p.weights.push_back(std::move(ws));
    p.lineno.push_back(lineno);
  }
  return p;
}

// K from the data when nobody says: the largest group size that divides every line and keeps
// the ids of every group distinct (a token never picks an expert twice).
int infer_top_k(const std::vector<ParsedLog>& logs) {
  size_t g = 0;
  for (auto& l : logs)
    for (auto& ids : l.ids) g = std::__gcd(g, ids.size());
  for (int k = int(g); k >= 1; --k) {
    if (g % k) continue;
    bool ok = true;
    for (auto& l : logs)
      for (auto& ids : l.ids)
        for (size_t b = 0; ok && b < ids.size(); b += k)
          for (int i = 0; ok && i < k; ++i)
            for (int j = i + 1; ok && j < k; ++j) ok = ids[b + i] != ids[b + j];
    if (ok) return k;
  }
  return 1;
}

}  // namespace

std::string routing_log_name(int layer) { return fmt::format("expert_weights_{}.txt", layer); }

int routing_log_layer(const std::string& filename) {
  static const std::regex name_re(R"(expert_weights_(\d+)\.txt)");
  std::smatch m;
  return std::regex_match(filename, m, name_re) ? std::stoi(m[1]) : -1;
}

nlohmann::json summarize_routing_logs(const fs::path& dir, int top_k, int n_experts) {
  if (!fs::is_directory(dir)) fail("{}: not a directory of routing logs", dir.string());
  std::vector<fs::path> folders = {dir};
  for (auto& e : fs::directory_iterator(dir))
    if (e.is_directory() && e.path().filename().string().rfind("rank_", 0) == 0) folders.push_back(e.path());
  std::sort(folders.begin(), folders.end());
  std::vector<ParsedLog> logs;
  for (auto& f : folders)
    for (auto& e : fs::directory_iterator(f))
      if (int layer = routing_log_layer(e.path().filename().string()); layer >= 0 && e.is_regular_file())
        logs.push_back(parse_log(e.path(), layer));
  if (logs.empty()) fail("{}: no expert_weights_{{L}}.txt routing logs here or in rank_*/ folders", dir.string());
  // esft score records K and E beside the logs; official logs leave them to inference.
  nlohmann::json meta = nlohmann::json::object();
  if (auto mp = dir / "score_config.json"; fs::exists(mp)) {
    try {
      meta = nlohmann::json::parse(read_file(mp));
      if (!meta.is_object()) fail("{}: not a JSON object", mp.string());
      (void)meta.value("top_k", 0), (void)meta.value("n_routed_experts", 0);  // type errors surface here
    } catch (const nlohmann::json::exception& e) {
      fail("{}: {}", mp.string(), e.what());
    }
  }
  if (top_k <= 0) {
    top_k = meta.value("top_k", 0);
    if (top_k <= 0) top_k = infer_top_k(logs);
  }
  if (n_experts <= 0) {
    n_experts = meta.value("n_routed_experts", 0);
    if (n_experts <= 0)
      for (auto& l : logs)
        for (auto& ids : l.ids)
          for (auto i : ids) n_experts = std::max<int>(n_experts, int(i) + 1);
  }
  std::map<int, LayerCounts> layers;
  for (auto& l : logs) {
    auto& c = layers[l.layer];
    if (c.count.empty()) c.count.assign(n_experts, 0), c.gate.assign(n_experts, 0.0);
    for (size_t s = 0; s < l.ids.size(); ++s) {
      if (l.ids[s].size() % top_k)
        fail("{}:{}: {} expert ids, not a multiple of top-k {}", l.path.string(), l.lineno[s], l.ids[s].size(), top_k);
      for (size_t i = 0; i < l.ids[s].size(); ++i) {
        if (l.ids[s][i] >= n_experts)
          fail("{}:{}: expert id {} >= number of experts {}", l.path.string(), l.lineno[s], l.ids[s][i], n_experts);
        c.count[l.ids[s][i]]++;
        c.gate[l.ids[s][i]] += l.weights[s][i];
      }
      c.n_ids += l.ids[s].size();
    }
  }
  return make_summary(layers, top_k, n_experts);
}

ExpertSelection select_experts(const nlohmann::json& summary, const SelectOptions& opt) {
  if (opt.score_function != "token" && opt.score_function != "gate")
    fail("score function \"{}\" is not token or gate", opt.score_function);
  auto key = opt.score_function + "_scores";
  if (!summary.contains(key) || !summary[key].is_object()) fail("summary has no \"{}\"", key);
  ExpertSelection sel;
  // Layer and expert keys are decimal integers ("12"), as esft score and the reference write them.
  auto index = [&](const std::string& k, const std::string& what) {
    int v = -1;
    auto [end, ec] = std::from_chars(k.data(), k.data() + k.size(), v);
    if (ec != std::errc() || end != k.data() + k.size() || v < 0 || v >= (1 << 20))
      fail("summary {}: key \"{}\" is not a {} number", key, k, what);
    return v;
  };
  for (auto& [layer, scores] : summary[key].items()) {
    if (!scores.is_object()) fail("summary {}[{}] is not an object of expert scores", key, layer);
    const int layer_id = index(layer, "layer");
    std::vector<std::pair<int, double>> s;
    for (auto& [e, v] : scores.items()) {
      if (!v.is_number()) fail("summary {}[{}][{}] is not a number", key, layer, e);
      s.push_back({index(e, "expert"), v.get<double>()});
    }
    // Reference: dict order (ascending ids), Python's stable sort by score descending.
    std::sort(s.begin(), s.end(), [](auto& a, auto& b) { return a.first < b.first; });
    std::stable_sort(s.begin(), s.end(), [](auto& a, auto& b) { return a.second > b.second; });
    std::vector<int> chosen;
    double cum = 0;
    for (auto& [e, v] : s) {
      if (cum >= opt.top_p) break;  // checked before adding: the expert crossing top_p is kept
      chosen.push_back(e);
      cum += v;
    }
    sel.experts[layer_id] = chosen;
  }
  sel.shared_experts = opt.train_shared_experts;
  sel.non_expert_modules = opt.train_non_expert_modules;
  return sel;
}

namespace {
void dump_py(const nlohmann::json& j, std::string& out);
void dump_py_key(const std::string& k, std::string& out) { out += nlohmann::json(k).dump(); }
void dump_py(const nlohmann::json& j, std::string& out) {
  if (j.is_object()) {
    out += "{";
    bool first = true;
    for (auto& [k, v] : j.items()) {
      if (!first) out += ", ";
      first = false;
      dump_py_key(k, out);
      out += ": ";
      dump_py(v, out);
    }
    out += "}";
  } else if (j.is_array()) {
    out += "[";
    for (size_t i = 0; i < j.size(); ++i) {
      if (i) out += ", ";
      dump_py(j[i], out);
    }
    out += "]";
  } else if (j.is_number_float()) {
    out += py_repr(j.get<double>());
  } else {
    out += j.dump();
  }
}
// Expert keys in numeric order as the reference writes them (nlohmann sorts keys as strings).
nlohmann::ordered_json numeric_order(const nlohmann::json& j) {
  nlohmann::ordered_json o = nlohmann::ordered_json::object();
  std::vector<std::pair<long, std::string>> keys;
  for (auto& [k, v] : j.items()) keys.push_back({std::strtol(k.c_str(), nullptr, 10), k});
  std::sort(keys.begin(), keys.end());
  for (auto& [n, k] : keys) o[k] = j[k];
  return o;
}
}  // namespace

std::string dump_json(const nlohmann::json& j) {
  // Python json.dumps layout (", " and ": " separators, one line). Layer keys sorted as strings
  // (the reference iterates files in that order); expert keys inside a layer numerically.
  std::string out;
  // The summary layout applies to {name: {layer: {expert: number}}} only; anything else (a
  // hand-edited summary.json) is written in the generic layout.
  auto summary_shaped = [&] {
    if (!j.is_object()) return false;
    for (auto name : {"token_scores", "gate_scores"}) {
      if (!j.contains(name)) continue;
      if (!j[name].is_object()) return false;
      for (auto& layer : j[name])
        if (!layer.is_object()) return false;
        else
          for (auto& v : layer)
            if (!v.is_number()) return false;
    }
    return true;
  };
  if ((j.contains("token_scores") || j.contains("gate_scores")) && summary_shaped()) {
    out += "{";
    bool first = true;
    for (auto name : {"token_scores", "gate_scores"}) {
      if (!j.contains(name)) continue;
      if (!first) out += ", ";
      first = false;
      out += std::string("\"") + name + "\": {";
      bool f2 = true;
      for (auto& [layer, scores] : j[name].items()) {
        if (!f2) out += ", ";
        f2 = false;
        dump_py_key(layer, out);
        out += ": ";
        std::string inner = "{";
        bool f3 = true;
        auto ordered = numeric_order(scores);
        for (auto& [e, v] : ordered.items()) {
          if (!f3) inner += ", ";
          f3 = false;
          dump_py_key(e, inner);
          inner += ": " + py_repr(v.get<double>());
        }
        out += inner + "}";
      }
      out += "}";
    }
    return out + "}";
  }
  if (j.is_object() && j.contains("experts")) {
    // expert_config.json: the reference's key order.
    nlohmann::ordered_json o;
    for (auto k : {"experts", "shared_experts", "non_expert_modules"})
      if (j.contains(k)) o[k] = j[k];
    for (auto& [k, v] : j.items())
      if (!o.contains(k)) o[k] = v;
    out += "{";
    bool first = true;
    for (auto& [k, v] : o.items()) {
      if (!first) out += ", ";
      first = false;
      dump_py_key(k, out);
      out += ": ";
      dump_py(nlohmann::json(v), out);
    }
    return out + "}";
  }
  dump_py(j, out);
  return out;
}

}  // namespace esft
