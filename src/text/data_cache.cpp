#include "data_cache.h"

#include <fmt/format.h>

#include <cstring>
#include <functional>

#include "esft/error.h"
#include "esft/log.h"

namespace esft {

namespace {

constexpr char kMagic[8] = {'E', 'S', 'F', 'T', 'S', 'M', 'P', '1'};
// Bump when the encoding of any record format or chat template changes.
constexpr int kEncodingVersion = 1;

uint64_t hash64(std::string_view s) { return std::hash<std::string_view>{}(s); }

// The tokenizer and model files the encoding depends on (hashed by content).
std::string tokenizer_identity(const DataOptions& opt) {
  std::vector<fs::path> files;
  auto add_dir = [&](const fs::path& d) {
    if (d.empty()) return;
    for (auto name : {"tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json",
                      "chat_template.jinja", "config.json"})
      if (fs::is_regular_file(d / name)) files.push_back(d / name);
  };
  if (!opt.tokenizer_file.empty()) {
    files.push_back(opt.tokenizer_file);
    add_dir(opt.tokenizer_file.parent_path());
  }
  add_dir(opt.model_dir);
  std::string id;
  for (auto& f : files) id += fmt::format("{}={:016x}\n", f.filename().string(), hash64(read_file(f)));
  return id;
}

template <class T>
void put(std::string& b, const T& v) {
  b.append(reinterpret_cast<const char*>(&v), sizeof v);
}

}  // namespace

std::string dataset_cache_key(const std::string& content, const DataOptions& opt, const std::string& format) {
  return fmt::format("esft encoded samples v{}\ndata={:016x} bytes={}\n{}format={}\nskip_bad_lines={} raw_text={} vocab_size={}\n",
                     kEncodingVersion, hash64(content), content.size(), tokenizer_identity(opt), format,
                     opt.skip_bad_lines, opt.raw_text, opt.vocab_size);
}

fs::path dataset_cache_file(const fs::path& cache_dir, const fs::path& jsonl, const std::string& key) {
  return cache_dir / fmt::format("{}.{:016x}.samples", jsonl.stem().string(), hash64(key));
}

bool read_sample_cache(const fs::path& file, const std::string& key, std::vector<Sample>* samples, int64_t* skipped) {
  if (!fs::is_regular_file(file)) return false;
  std::string b;
  try {
    b = read_file(file);
  } catch (const std::exception&) {
    return false;
  }
  size_t pos = 0;
  auto take = [&](void* dst, size_t n) {
    if (b.size() - pos < n) return false;
    std::memcpy(dst, b.data() + pos, n);
    pos += n;
    return true;
  };
  enum class Got { ok, other_key, damaged };
  auto parse = [&]() {
    char magic[8];
    uint32_t key_len = 0;
    uint64_t n = 0, skip = 0;
    if (!take(magic, 8) || std::memcmp(magic, kMagic, 8) != 0 || !take(&key_len, 4) || b.size() - pos < key_len)
      return Got::damaged;
    if (key_len != key.size() || b.compare(pos, key_len, key) != 0) return Got::other_key;
    pos += key_len;
    if (!take(&n, 8) || !take(&skip, 8)) return Got::damaged;
    std::vector<Sample> out;
    out.reserve(std::min<uint64_t>(n, b.size() / 4));
    for (uint64_t i = 0; i < n; ++i) {
      uint32_t len = 0;
      if (!take(&len, 4) || (b.size() - pos) / 8 < len) return Got::damaged;
      Sample s;
      s.input_ids.resize(len);
      s.labels.resize(len);
      take(s.input_ids.data(), 4ull * len);
      take(s.labels.data(), 4ull * len);
      out.push_back(std::move(s));
    }
    if (pos != b.size()) return Got::damaged;
    *samples = std::move(out);
    *skipped = int64_t(skip);
    return Got::ok;
  };
  Got got = parse();
  if (got == Got::damaged) log_warn(fmt::format("{}: damaged cache file, encoding the dataset again", file.string()));
  return got == Got::ok;
}

void write_sample_cache(const fs::path& file, const std::string& key, const std::vector<Sample>& samples, int64_t skipped) {
  try {
    fs::create_directories(file.parent_path());
    AtomicFile f(file);
    std::string b(kMagic, 8);
    put(b, uint32_t(key.size()));
    b += key;
    put(b, uint64_t(samples.size()));
    put(b, uint64_t(skipped));
    f.write(b);
    for (auto& s : samples) {
      b.clear();
      put(b, uint32_t(s.input_ids.size()));
      b.append(reinterpret_cast<const char*>(s.input_ids.data()), 4 * s.input_ids.size());
      b.append(reinterpret_cast<const char*>(s.labels.data()), 4 * s.labels.size());
      f.write(b);
    }
    f.commit();
  } catch (const std::exception& e) {
    log_warn(fmt::format("could not write the dataset cache {}: {}", file.string(), e.what()));
  }
}

}  // namespace esft
