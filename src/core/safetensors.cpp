// Safetensors: 8-byte little-endian header length N, N bytes of JSON header, then the data
// section. Every check below exists because a truncated download or a hand-edited file must
// fail here, naming the file and tensor, not later as garbage numbers or a segfault.
#include "esft/safetensors.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <regex>
#include <set>

#include "esft/error.h"

namespace esft {

namespace {
struct DTypeInfo {
  DType d;
  const char* name;
  size_t size;
};
constexpr DTypeInfo kDTypes[] = {
    {DType::BOOL, "BOOL", 1}, {DType::U8, "U8", 1},   {DType::I8, "I8", 1},       {DType::I16, "I16", 2},
    {DType::I32, "I32", 4},   {DType::I64, "I64", 8}, {DType::F16, "F16", 2},     {DType::BF16, "BF16", 2},
    {DType::F32, "F32", 4},   {DType::F64, "F64", 8}, {DType::F8_E4M3, "F8_E4M3", 1}, {DType::F8_E5M2, "F8_E5M2", 1},
};
constexpr uint64_t kMaxHeader = uint64_t(100) << 20;
}  // namespace

const char* dtype_name(DType d) {
  for (auto& i : kDTypes)
    if (i.d == d) return i.name;
  return "?";
}
bool parse_dtype(const std::string& s, DType* out) {
  for (auto& i : kDTypes)
    if (s == i.name) return *out = i.d, true;
  return false;
}
size_t dtype_size(DType d) {
  for (auto& i : kDTypes)
    if (i.d == d) return i.size;
  return 0;
}

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (auto s : shape) n *= s;
  return n;
}

SafetensorsFile::SafetensorsFile(const fs::path& path) : map_(path) {
  const std::string p = path.string();
  if (map_.size() < 8) fail("{}: not a safetensors file ({} bytes, shorter than the 8-byte header length)", p, map_.size());
  uint64_t n = 0;
  std::memcpy(&n, map_.data(), 8);  // little-endian on every platform we build for
  if (n > kMaxHeader) fail("{}: header length {} is implausible (corrupt file?)", p, n);
  if (n > map_.size() - 8) fail("{}: header length {} exceeds the file size {} (truncated file?)", p, n, map_.size());
  data_start_ = 8 + n;
  const size_t data_size = map_.size() - data_start_;
  nlohmann::json h;
  try {
    h = nlohmann::json::parse(reinterpret_cast<const char*>(map_.data()) + 8,
                              reinterpret_cast<const char*>(map_.data()) + 8 + n);
  } catch (const std::exception& e) {
    fail("{}: header is not valid JSON: {}", p, e.what());
  }
  if (!h.is_object()) fail("{}: header is not a JSON object", p);
  for (auto& [name, v] : h.items()) {
    if (name == "__metadata__") {
      if (!v.is_object()) fail("{}: __metadata__ is not an object", p);
      for (auto& [k, mv] : v.items()) {
        if (!mv.is_string()) fail("{}: __metadata__ value for \"{}\" is not a string", p, k);
        metadata_[k] = mv.get<std::string>();
      }
      continue;
    }
    const std::string& tensor = name;  // (clang 14 cannot capture a structured binding)
    auto bad = [&](const std::string& why) { fail("{}: tensor {}: {}", p, tensor, why); };
    if (!v.is_object()) bad("entry is not an object");
    TensorInfo t;
    t.name = name;
    if (!v.contains("dtype") || !v["dtype"].is_string()) bad("missing dtype");
    if (!parse_dtype(v["dtype"].get<std::string>(), &t.dtype)) bad("unknown dtype " + v["dtype"].get<std::string>());
    if (!v.contains("shape") || !v["shape"].is_array()) bad("missing shape");
    for (auto& d : v["shape"]) {
      if (!d.is_number_integer() || d.get<int64_t>() < 0) bad("shape has a negative or non-integer dimension");
      t.shape.push_back(d.get<int64_t>());
    }
    if (!v.contains("data_offsets") || !v["data_offsets"].is_array() || v["data_offsets"].size() != 2 ||
        !v["data_offsets"][0].is_number_unsigned() || !v["data_offsets"][1].is_number_unsigned())
      bad("data_offsets must be [begin, end]");
    uint64_t b = v["data_offsets"][0].get<uint64_t>(), e = v["data_offsets"][1].get<uint64_t>();
    if (b > e) bad(fmt::format("data_offsets [{}, {}] end before they begin", b, e));
    if (e > data_size) bad(fmt::format("data_offsets [{}, {}] run past the data section ({} bytes; truncated file?)", b, e, data_size));
    // Overflow-safe numel*dtype_size: absurd shapes must fail as a size mismatch, not wrap.
    uint64_t expect = dtype_size(t.dtype);
    bool overflow = false;
    for (auto d : t.shape) overflow |= __builtin_mul_overflow(expect, uint64_t(d), &expect);
    if (overflow) bad(fmt::format("shape [{}] is too large", fmt::join(t.shape, ", ")));
    if (e - b != expect)
      bad(fmt::format("holds {} bytes but shape [{}] of {} needs {}", e - b, fmt::join(t.shape, ", "), dtype_name(t.dtype), expect));
    t.offset = b;
    t.nbytes = e - b;
    tensors_.push_back(std::move(t));
  }
  std::vector<const TensorInfo*> by_off;
  for (auto& t : tensors_) by_off.push_back(&t);
  std::sort(by_off.begin(), by_off.end(), [](auto* a, auto* b) { return a->offset < b->offset; });
  for (size_t i = 1; i < by_off.size(); ++i)
    if (by_off[i]->offset < by_off[i - 1]->offset + by_off[i - 1]->nbytes && by_off[i]->nbytes > 0)
      fail("{}: tensors {} and {} overlap in the data section", p, by_off[i - 1]->name, by_off[i]->name);
  for (size_t i = 0; i < tensors_.size(); ++i) index_[tensors_[i].name] = i;
}

const TensorInfo* SafetensorsFile::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

const TensorInfo& SafetensorsFile::at(const std::string& name) const {
  auto* t = find(name);
  if (!t) fail("{}: no tensor named {}", path().string(), name);
  return *t;
}

Checkpoint::Checkpoint(const fs::path& dir) : dir_(dir) {
  if (!fs::is_directory(dir)) fail("{}: not a directory (expected a Hugging Face checkpoint directory)", dir.string());
  auto cfg = dir / "config.json";
  if (!fs::exists(cfg)) fail("{}: config.json not found", dir.string());
  try {
    config_ = nlohmann::json::parse(read_file(cfg));
  } catch (const nlohmann::json::exception& e) {
    fail("{}: not valid JSON: {}", cfg.string(), e.what());
  }
  auto add_file = [&](const fs::path& f) {
    files_.push_back(std::make_unique<SafetensorsFile>(f));
    for (auto& t : files_.back()->tensors()) {
      if (where_.count(t.name))
        fail("{}: tensor {} appears in both {} and {}", dir.string(), t.name,
             files_[where_[t.name]]->path().filename().string(), f.filename().string());
      where_[t.name] = files_.size() - 1;
    }
  };
  auto index = dir / "model.safetensors.index.json";
  if (fs::exists(index)) {
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(read_file(index));
    } catch (const nlohmann::json::exception& e) {
      fail("{}: not valid JSON: {}", index.string(), e.what());
    }
    if (!j.contains("weight_map") || !j["weight_map"].is_object()) fail("{}: no weight_map", index.string());
    std::vector<std::string> shards;
    for (auto& [name, shard] : j["weight_map"].items()) {
      if (!shard.is_string()) fail("{}: weight_map entry for {} is not a file name", index.string(), name);
      auto s = shard.get<std::string>();
      if (std::find(shards.begin(), shards.end(), s) == shards.end()) shards.push_back(s);
    }
    std::sort(shards.begin(), shards.end());
    for (auto& s : shards) {
      if (!fs::exists(dir / s)) fail("{}: shard {} listed in model.safetensors.index.json is missing", dir.string(), s);
      add_file(dir / s);
    }
    for (auto& [name, shard] : j["weight_map"].items()) {
      auto it = where_.find(name);
      if (it == where_.end() || files_[it->second]->path().filename() != shard.get<std::string>())
        fail("{}: tensor {} is listed in model.safetensors.index.json under {} but is not in that file", dir.string(),
             name, shard.get<std::string>());
    }
  } else if (fs::exists(dir / "model.safetensors")) {
    add_file(dir / "model.safetensors");
  } else {
    std::vector<fs::path> found;
    for (auto& e : fs::directory_iterator(dir))
      if (e.path().extension() == ".safetensors") found.push_back(e.path());
    std::sort(found.begin(), found.end());
    if (found.empty()) fail("{}: no model.safetensors, model.safetensors.index.json or *.safetensors files", dir.string());
    for (auto& f : found) add_file(f);
  }
}

std::vector<std::string> Checkpoint::names() const {
  std::vector<std::string> out;
  for (auto& [k, v] : where_) out.push_back(k);
  return out;
}
bool Checkpoint::has(const std::string& name) const { return where_.count(name) > 0; }
const SafetensorsFile& Checkpoint::file_of(const std::string& name) const {
  auto it = where_.find(name);
  if (it == where_.end()) fail("{}: checkpoint has no tensor {}", dir_.string(), name);
  return *files_[it->second];
}
const TensorInfo& Checkpoint::info(const std::string& name) const { return file_of(name).at(name); }
const uint8_t* Checkpoint::data(const std::string& name) const {
  auto& f = file_of(name);
  return f.data(f.at(name));
}

namespace {
std::string header_json(const std::vector<TensorToWrite>& tensors, const std::map<std::string, std::string>& metadata,
                        size_t* total) {
  // Key order: __metadata__ first, then tensors in the given order (nlohmann's ordered_json).
  nlohmann::ordered_json h;
  if (!metadata.empty()) h["__metadata__"] = metadata;
  size_t off = 0;
  for (auto& t : tensors) {
    int64_t numel = 1;
    for (auto s : t.shape) numel *= s;
    size_t n = size_t(numel) * dtype_size(t.dtype);
    h[t.name] = {{"dtype", dtype_name(t.dtype)}, {"shape", t.shape}, {"data_offsets", {off, off + n}}};
    off += n;
  }
  *total = off;
  std::string s = h.dump();
  s.append((8 - s.size() % 8) % 8, ' ');
  return s;
}
size_t nbytes_of(const TensorToWrite& t) {
  int64_t numel = 1;
  for (auto s : t.shape) numel *= s;
  return size_t(numel) * dtype_size(t.dtype);
}
}  // namespace

void write_safetensors(const fs::path& path, const std::vector<TensorToWrite>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  size_t total = 0;
  std::string header = header_json(tensors, metadata, &total);
  AtomicFile f(path);
  uint64_t n = header.size();
  f.write(&n, 8);
  f.write(header);
  for (auto& t : tensors) f.write(t.data, nbytes_of(t));
  f.commit();
}

void write_checkpoint_tensors(const fs::path& dir, const std::vector<TensorToWrite>& tensors, size_t max_shard_bytes) {
  fs::create_directories(dir);
  // Files of a previous save in either layout are removed so the directory holds one consistent
  // set, in an order that leaves a loadable checkpoint (old or new) at every instant: the file
  // Checkpoint prefers (index, then model.safetensors) appears last / disappears first.
  static const std::regex shard_re(R"(model-\d{5}-of-\d{5}\.safetensors)");
  auto remove_old_shards = [&](const std::set<std::string>& keep) {
    std::vector<fs::path> stale;
    for (auto& e : fs::directory_iterator(dir)) {
      auto fn = e.path().filename().string();
      if (std::regex_match(fn, shard_re) && !keep.count(fn)) stale.push_back(e.path());
    }
    for (auto& p : stale) fs::remove(p);
  };
  size_t total = 0;
  for (auto& t : tensors) total += nbytes_of(t);
  if (total <= max_shard_bytes) {
    fs::remove(dir / "model.safetensors.index.json");
    write_safetensors(dir / "model.safetensors", tensors);
    remove_old_shards({});
    return;
  }

  // Greedy in the given order, like transformers' shard_checkpoint: a tensor larger than the
  // limit gets a shard of its own.
  std::vector<std::vector<TensorToWrite>> shards(1);
  size_t cur = 0;
  for (auto& t : tensors) {
    size_t n = nbytes_of(t);
    if (cur > 0 && cur + n > max_shard_bytes) shards.emplace_back(), cur = 0;
    shards.back().push_back(t);
    cur += n;
  }
  nlohmann::ordered_json index;
  index["metadata"] = {{"total_size", total}};
  nlohmann::ordered_json wm = nlohmann::ordered_json::object();
  std::set<std::string> names;
  for (size_t i = 0; i < shards.size(); ++i) {
    auto name = fmt::format("model-{:05d}-of-{:05d}.safetensors", i + 1, shards.size());
    write_safetensors(dir / name, shards[i]);
    names.insert(name);
    for (auto& t : shards[i]) wm[t.name] = name;
  }
  index["weight_map"] = wm;
  write_file_atomic(dir / "model.safetensors.index.json", index.dump(2) + "\n");
  fs::remove(dir / "model.safetensors");
  remove_old_shards(names);
}

}  // namespace esft
