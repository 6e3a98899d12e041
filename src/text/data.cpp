// jsonl records -> samples (token ids + labels), Python-compatible shuffling, packing.
// This file handles pre-tokenized records; records with text need the text front end
// (tokenizer + chat formats) and are rejected with a clear error until a tokenizer is given.
#include <fmt/format.h>

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>

#include "esft/data.h"
#include "esft/error.h"
#include "esft/log.h"

namespace esft {

namespace {

bool is_text_record(const nlohmann::json& j) {
  for (auto k : {"messages", "conversations", "instruction", "query", "prompt", "text"})
    if (j.contains(k)) return true;
  return false;
}

std::vector<int32_t> int_list(const nlohmann::json& v, const std::string& where, const char* key, bool allow_ignore) {
  if (!v.is_array()) fail("{}: \"{}\" must be a list of integers", where, key);
  std::vector<int32_t> out;
  out.reserve(v.size());
  for (auto& x : v) {
    if (!x.is_number_integer()) fail("{}: \"{}\" holds {}, not an integer", where, key, x.dump());
    int64_t i = x.get<int64_t>();
    if (i < 0 && !(allow_ignore && i == kIgnoreIndex)) fail("{}: \"{}\" holds {}, not a token id", where, key, i);
    if (i > INT32_MAX) fail("{}: \"{}\" holds {}, too large for a token id", where, key, i);
    out.push_back(int32_t(i));
  }
  return out;
}

Sample parse_pretokenized(const nlohmann::json& j, const std::string& where) {
  Sample s;
  s.input_ids = int_list(j["input_ids"], where, "input_ids", false);
  if (j.contains("labels") && !j["labels"].is_null()) {
    s.labels = int_list(j["labels"], where, "labels", true);
    if (s.labels.size() != s.input_ids.size())
      fail("{}: {} labels for {} input_ids (must be equal)", where, s.labels.size(), s.input_ids.size());
  } else {
    s.labels = s.input_ids;  // plain language modelling: every token trained
  }
  return s;
}

}  // namespace

std::vector<Sample> load_samples(const fs::path& path, const DataOptions& opt) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("{}: cannot open the dataset", path.string());
  std::vector<Sample> out;
  int64_t skipped = 0, lineno = 0;
  std::string line;
  while (std::getline(in, line)) {
    ++lineno;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    const std::string where = fmt::format("{}:{}", path.string(), lineno);
    try {
      nlohmann::json j;
      try {
        j = nlohmann::json::parse(line);
      } catch (const nlohmann::json::exception& e) {
        fail("{}: not valid JSON ({})", where, e.what());
      }
      if (!j.is_object()) fail("{}: a record must be a JSON object", where);
      if (j.contains("input_ids")) {
        out.push_back(parse_pretokenized(j, where));
      } else if (is_text_record(j)) {
        fail("{}: this record holds text; a tokenizer is needed to encode it (this build reads pre-tokenized "
             "{{\"input_ids\": [...], \"labels\": [...]}} records only)",
             where);
      } else {
        fail("{}: unrecognised record (expected input_ids, messages, conversations, instruction/output, "
             "query/response, prompt/completion or text)",
             where);
      }
    } catch (const Error& e) {
      if (!opt.skip_bad_lines) throw;
      if (skipped < 5) log_warn(std::string("skipping: ") + e.what());
      ++skipped;
    }
  }
  if (skipped) log_warn(fmt::format("{}: skipped {} bad line(s) of {}", path.string(), skipped, lineno));
  return out;
}

// ---- Python's random.seed(int) + random.shuffle, exactly ------------------------------------
namespace {
class PyRandom {
 public:
  explicit PyRandom(uint64_t seed) {
    // init_by_array with the seed's 32-bit words (little-endian), as CPython seeds from an int.
    std::vector<uint32_t> key;
    do {
      key.push_back(uint32_t(seed & 0xffffffffu));
      seed >>= 32;
    } while (seed);
    init_genrand(19650218u);
    uint32_t i = 1, j = 0;
    size_t k = std::max<size_t>(N, key.size());
    for (; k; --k) {
      mt_[i] = (mt_[i] ^ ((mt_[i - 1] ^ (mt_[i - 1] >> 30)) * 1664525u)) + key[j] + j;
      ++i, ++j;
      if (i >= N) mt_[0] = mt_[N - 1], i = 1;
      if (j >= key.size()) j = 0;
    }
    for (k = N - 1; k; --k) {
      mt_[i] = (mt_[i] ^ ((mt_[i - 1] ^ (mt_[i - 1] >> 30)) * 1566083941u)) - i;
      if (++i >= N) mt_[0] = mt_[N - 1], i = 1;
    }
    mt_[0] = 0x80000000u;
  }
  uint32_t genrand() {
    if (mti_ >= N) {
      for (int kk = 0; kk < N; ++kk) {
        uint32_t y = (mt_[kk] & 0x80000000u) | (mt_[(kk + 1) % N] & 0x7fffffffu);
        mt_[kk] = mt_[(kk + M) % N] ^ (y >> 1) ^ ((y & 1u) ? 0x9908b0dfu : 0u);
      }
      mti_ = 0;
    }
    uint32_t y = mt_[mti_++];
    y ^= y >> 11;
    y ^= (y << 7) & 0x9d2c5680u;
    y ^= (y << 15) & 0xefc60000u;
    y ^= y >> 18;
    return y;
  }
  // random._randbelow_with_getrandbits(n)
  uint64_t randbelow(uint64_t n) {
    int k = 0;
    while ((n >> k) != 0) ++k;  // n.bit_length()
    uint64_t r = getrandbits(k);
    while (r >= n) r = getrandbits(k);
    return r;
  }

 private:
  static constexpr int N = 624, M = 397;
  void init_genrand(uint32_t s) {
    mt_[0] = s;
    for (mti_ = 1; mti_ < N; ++mti_) mt_[mti_] = 1812433253u * (mt_[mti_ - 1] ^ (mt_[mti_ - 1] >> 30)) + uint32_t(mti_);
  }
  uint64_t getrandbits(int k) {
    if (k <= 32) return genrand() >> (32 - k);
    uint64_t lo = genrand(), hi = genrand() >> (64 - k);
    return (hi << 32) | lo;
  }
  uint32_t mt_[N];
  int mti_ = N + 1;
};
}  // namespace

void python_shuffle(std::vector<size_t>& x, uint64_t seed) {
  PyRandom r(seed);
  for (size_t i = x.size(); i-- > 1;) std::swap(x[i], x[r.randbelow(i + 1)]);
}

std::vector<size_t> select_scoring_samples(const std::vector<Sample>& samples, int64_t n_tokens, uint64_t seed) {
  std::vector<size_t> order(samples.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  python_shuffle(order, seed);
  std::vector<size_t> out;
  int64_t done = 0;
  for (size_t i : order) {
    if (n_tokens > 0 && done >= n_tokens) break;
    out.push_back(i);
    done += samples[i].input_ids.size();
  }
  return out;
}

// ---- packing ------------------------------------------------------------------------------
std::vector<PackedRow> pack_samples(const std::vector<Sample>& samples, const PackOptions& opt, PackStats* stats) {
  if (opt.packing != "none" && opt.packing != "causal" && opt.packing != "document")
    fail("--packing must be none, causal or document, not \"{}\"", opt.packing);
  if (opt.truncation != "left" && opt.truncation != "right")
    fail("--truncation must be left or right, not \"{}\"", opt.truncation);
  ESFT_CHECK(opt.max_length > 0, "--max-length must be positive");
  PackStats st;
  std::vector<PackedRow> rows;
  PackedRow cur;
  int32_t doc = 0;
  auto flush = [&] {
    if (!cur.input_ids.empty()) rows.push_back(std::move(cur));
    cur = PackedRow{};
    doc = 0;
  };
  for (auto& s : samples) {
    size_t n = s.input_ids.size(), L = size_t(opt.max_length);
    if (n == 0) continue;
    size_t begin = 0;
    if (n > L) {
      st.truncated_samples++;
      st.dropped_tokens += n - L;
      if (opt.truncation == "left") begin = n - L;
      n = L;
    }
    if (opt.packing == "none" || cur.input_ids.size() + n > L) flush();
    for (size_t i = 0; i < n; ++i) {
      cur.input_ids.push_back(s.input_ids[begin + i]);
      cur.labels.push_back(s.labels[begin + i]);
      // causal packing keeps running positions and one attention span, like the reference.
      cur.position_ids.push_back(opt.packing == "causal" ? int32_t(cur.position_ids.size()) : int32_t(i));
      cur.doc_ids.push_back(opt.packing == "causal" ? 0 : doc);
    }
    ++doc;
  }
  flush();
  if (stats) *stats = st;
  return rows;
}

}  // namespace esft
