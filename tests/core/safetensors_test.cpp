// Safetensors files and checkpoint directories: round trips, the exact on-disk layout, every
// kind of corruption (each must fail naming the file and the tensor), sharding, and interop with
// the reference `safetensors` Python package in both directions.
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <optional>

#include "esft/error.h"
#include "esft/safetensors.h"
#include "test_util.h"

using namespace esft;

namespace {

// Runs f, expects an esft::Error whose message contains every one of `needles`.
template <class F>
void expect_error(F&& f, std::initializer_list<std::string> needles) {
  try {
    f();
    ADD_FAILURE() << "no error thrown; expected one mentioning " << *needles.begin();
  } catch (const Error& e) {
    std::string msg = e.what();
    for (auto& n : needles) EXPECT_NE(msg.find(n), std::string::npos) << "\"" << n << "\" not in: " << msg;
  }
}

// A file with an arbitrary header text and data section; header_len overrides the length field.
void write_raw(const fs::path& p, const std::string& header, const std::string& data,
               std::optional<uint64_t> header_len = std::nullopt) {
  std::ofstream o(p, std::ios::binary);
  uint64_t n = header_len.value_or(header.size());
  o.write(reinterpret_cast<const char*>(&n), 8);
  o << header << data;
}

uint16_t bf16_bits(float f) {  // exact for the values used here (short mantissas)
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return uint16_t(u >> 16);
}

// The tensors of tests/python/safetensors_interop.py, built the same way on this side.
struct Expected {
  std::vector<float> gate;
  std::vector<int64_t> ids{1, -2, 3, -4};
  std::vector<uint16_t> half;
  std::vector<uint8_t> bytes{0, 1, 2, 3, 4, 5, 6};
  std::vector<uint8_t> mask{1, 0, 1};
  double scalar = 7.0;
  Expected() {
    for (int i = 0; i < 12; ++i) gate.push_back(i * 0.5f - 1.0f);
    for (float f : {0.0f, 1.0f, -2.5f, 3.25f, 1024.0f}) half.push_back(bf16_bits(f));
  }
  std::vector<TensorToWrite> tensors() const {
    return {{"model.layers.0.mlp.gate.weight", DType::F32, {3, 4}, gate.data()},
            {"ids", DType::I64, {4}, ids.data()},
            {"half_precision", DType::BF16, {5}, half.data()},
            {"bytes", DType::U8, {7}, bytes.data()},
            {"mask", DType::BOOL, {3}, mask.data()},
            {"scalar", DType::F64, {}, &scalar},
            {"empty", DType::F32, {0, 3}, nullptr}};
  }
};

void expect_matches(const SafetensorsFile& f, const std::vector<TensorToWrite>& want) {
  ASSERT_EQ(f.tensors().size(), want.size()) << f.path();
  for (auto& w : want) {
    const TensorInfo* t = f.find(w.name);
    ASSERT_NE(t, nullptr) << w.name;
    EXPECT_EQ(t->dtype, w.dtype) << w.name;
    EXPECT_EQ(t->shape, w.shape) << w.name;
    ASSERT_EQ(t->nbytes, size_t(t->numel()) * dtype_size(w.dtype)) << w.name;
    if (t->nbytes) EXPECT_EQ(std::memcmp(f.data(*t), w.data, t->nbytes), 0) << w.name;
  }
}

TEST(Safetensors, RoundTripAndLayout) {
  auto dir = test::temp_dir("st-roundtrip");
  Expected ex;
  auto tensors = ex.tensors();
  write_safetensors(dir / "a.safetensors", tensors, {{"format", "pt"}, {"k", "v"}});
  SafetensorsFile f(dir / "a.safetensors");
  expect_matches(f, tensors);
  EXPECT_EQ(f.metadata(), (std::map<std::string, std::string>{{"format", "pt"}, {"k", "v"}}));
  EXPECT_EQ(f.find("nope"), nullptr);
  expect_error([&] { f.at("nope"); }, {"a.safetensors", "nope"});

  // Layout: header length multiple of 8, padded with spaces, __metadata__ first, tensors in the
  // given order with contiguous offsets, file = 8 + header + data exactly.
  auto raw = read_file(dir / "a.safetensors");
  uint64_t n;
  std::memcpy(&n, raw.data(), 8);
  EXPECT_EQ(n % 8, 0u);
  std::string header = raw.substr(8, n);
  auto json_end = header.find_last_of('}');
  EXPECT_EQ(header.find_first_not_of(' ', json_end + 1), std::string::npos) << "padding is spaces";
  EXPECT_LT(header.size() - json_end - 1, 8u);
  EXPECT_EQ(header.find("{\"__metadata__\""), 0u) << header;
  auto ordered = nlohmann::ordered_json::parse(header);
  std::vector<std::string> keys;
  for (auto& [k, v] : ordered.items()) keys.push_back(k);
  ASSERT_EQ(keys.size(), tensors.size() + 1);
  size_t off = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    EXPECT_EQ(keys[i + 1], tensors[i].name);
    auto& t = f.at(tensors[i].name);
    EXPECT_EQ(t.offset, off) << t.name;
    off += t.nbytes;
  }
  EXPECT_EQ(raw.size(), 8 + n + off);
}

TEST(Safetensors, CorruptFilesNameFileAndTensor) {
  auto dir = test::temp_dir("st-corrupt");
  auto p = dir / "bad.safetensors";
  const std::string ps = p.string();
  auto open = [&] { SafetensorsFile f(p); };
  auto entry = [](const std::string& name, const std::string& dtype, const std::string& shape, size_t b, size_t e) {
    return fmt::format("\"{}\":{{\"dtype\":\"{}\",\"shape\":{},\"data_offsets\":[{},{}]}}", name, dtype, shape, b, e);
  };
  const std::string data16(16, '\x01');

  // Truncated: shorter than the length field; a valid file cut inside its data section.
  std::ofstream(p, std::ios::binary | std::ios::trunc) << "abc";
  expect_error(open, {ps, "8-byte"});
  float four[4] = {1, 2, 3, 4};
  write_safetensors(p, {{"w.trunc", DType::F32, {4}, four}});
  auto whole = read_file(p);
  std::ofstream(p, std::ios::binary | std::ios::trunc) << whole.substr(0, whole.size() - 4);
  expect_error(open, {ps, "tensor w.trunc", "past the data section"});

  // Header length beyond the file, and implausibly large.
  write_raw(p, "{}", "", 4096);
  expect_error(open, {ps, "header length 4096 exceeds"});
  write_raw(p, "{}", "", uint64_t(1) << 40);
  expect_error(open, {ps, "implausible"});

  // Not JSON / not an object / bad metadata.
  write_raw(p, "{\"a\": [1,", "");
  expect_error(open, {ps, "not valid JSON"});
  write_raw(p, "[1, 2]", "");
  expect_error(open, {ps, "not a JSON object"});
  write_raw(p, "{\"__metadata__\":{\"format\":3}}", "");
  expect_error(open, {ps, "__metadata__", "format"});

  // Per-tensor errors.
  write_raw(p, "{" + entry("w.q", "F24", "[2]", 0, 6) + "}", data16);
  expect_error(open, {ps, "tensor w.q", "unknown dtype F24"});
  write_raw(p, "{" + entry("w.neg", "F32", "[-1,2]", 0, 8) + "}", data16);
  expect_error(open, {ps, "tensor w.neg", "negative"});
  write_raw(p, "{" + entry("w.out", "F32", "[2,2]", 8, 24) + "}", data16);
  expect_error(open, {ps, "tensor w.out", "past the data section"});
  write_raw(p, "{" + entry("w.rev", "U8", "[0]", 8, 4) + "}", data16);
  expect_error(open, {ps, "tensor w.rev", "end before"});
  write_raw(p, "{" + entry("w.size", "F32", "[3]", 0, 16) + "}", data16);
  expect_error(open, {ps, "tensor w.size", "holds 16 bytes", "needs 12"});
  write_raw(p, "{" + entry("w.huge", "F32", "[4611686018427387904,8]", 0, 16) + "}", data16);
  expect_error(open, {ps, "tensor w.huge"});
  write_raw(p, "{\"w.nodt\":{\"shape\":[1],\"data_offsets\":[0,1]}}", data16);
  expect_error(open, {ps, "tensor w.nodt", "dtype"});
  write_raw(p, "{" + entry("w.a", "F32", "[2]", 0, 8) + "," + entry("w.b", "F32", "[2]", 4, 12) + "}", data16);
  expect_error(open, {ps, "w.a", "w.b", "overlap"});

  // Control: the same construction without a defect opens.
  write_raw(p, "{" + entry("w.a", "F32", "[2]", 0, 8) + "," + entry("w.b", "F32", "[2]", 8, 16) + "}", data16);
  EXPECT_NO_THROW(open());
}

void write_config(const fs::path& dir) { write_file_atomic(dir / "config.json", "{\"model_type\": \"test\"}\n"); }

TEST(Checkpoint, SingleAndShardedLayouts) {
  auto dir = test::temp_dir("st-ckpt");
  write_config(dir);
  std::vector<std::vector<float>> bufs;
  std::vector<TensorToWrite> tensors;
  for (int i = 0; i < 5; ++i) {
    bufs.emplace_back(25 + i);  // 100..116 bytes each
    for (size_t j = 0; j < bufs.back().size(); ++j) bufs.back()[j] = float(i * 100 + j);
  }
  for (int i = 0; i < 5; ++i)
    tensors.push_back({fmt::format("layers.{}.w", i), DType::F32, {int64_t(bufs[i].size())}, bufs[i].data()});
  size_t total = 0;
  for (auto& b : bufs) total += b.size() * 4;

  // Sharded: at most 250 bytes per shard -> greedy groups {0,1}, {2,3}, {4}.
  write_checkpoint_tensors(dir, tensors, 250);
  EXPECT_FALSE(fs::exists(dir / "model.safetensors"));
  for (auto s : {"model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors",
                 "model-00003-of-00003.safetensors"})
    EXPECT_TRUE(fs::exists(dir / s)) << s;
  auto index = nlohmann::json::parse(read_file(dir / "model.safetensors.index.json"));
  EXPECT_EQ(index["metadata"]["total_size"].get<size_t>(), total);
  EXPECT_EQ(index["weight_map"]["layers.0.w"], "model-00001-of-00003.safetensors");
  EXPECT_EQ(index["weight_map"]["layers.3.w"], "model-00002-of-00003.safetensors");
  EXPECT_EQ(index["weight_map"]["layers.4.w"], "model-00003-of-00003.safetensors");
  {
    Checkpoint ck(dir);
    EXPECT_EQ(ck.config()["model_type"], "test");
    EXPECT_EQ(ck.names().size(), 5u);
    for (auto& t : tensors) {
      ASSERT_TRUE(ck.has(t.name));
      EXPECT_EQ(ck.info(t.name).shape, t.shape);
      EXPECT_EQ(std::memcmp(ck.data(t.name), t.data, ck.info(t.name).nbytes), 0) << t.name;
    }
    EXPECT_EQ(ck.file_of("layers.4.w").path().filename(), "model-00003-of-00003.safetensors");
    expect_error([&] { ck.info("layers.9.w"); }, {dir.string(), "layers.9.w"});
  }

  // Re-sharded into 2 files: the stale third shard goes.
  write_checkpoint_tensors(dir, tensors, 350);
  EXPECT_FALSE(fs::exists(dir / "model-00003-of-00003.safetensors"));
  EXPECT_TRUE(fs::exists(dir / "model-00002-of-00002.safetensors"));
  EXPECT_EQ(Checkpoint(dir).names().size(), 5u);

  // Single file: index and shards go, unrelated files stay.
  write_file_atomic(dir / "notes.txt", "keep me");
  write_checkpoint_tensors(dir, tensors);
  EXPECT_TRUE(fs::exists(dir / "model.safetensors"));
  EXPECT_FALSE(fs::exists(dir / "model.safetensors.index.json"));
  EXPECT_FALSE(fs::exists(dir / "model-00001-of-00002.safetensors"));
  EXPECT_TRUE(fs::exists(dir / "notes.txt"));
  Checkpoint single(dir);
  expect_matches(single.file_of("layers.0.w"), tensors);

  // And back to shards: model.safetensors goes.
  write_checkpoint_tensors(dir, tensors, 250);
  EXPECT_FALSE(fs::exists(dir / "model.safetensors"));
  EXPECT_EQ(Checkpoint(dir).names().size(), 5u);
}

TEST(Checkpoint, BrokenDirectoriesNameTheProblem) {
  auto dir = test::temp_dir("st-ckpt-bad");
  float v[2] = {1, 2};
  expect_error([&] { Checkpoint c(dir); }, {dir.string(), "config.json"});
  write_file_atomic(dir / "config.json", "{\"a\": ");
  expect_error([&] { Checkpoint c(dir); }, {(dir / "config.json").string(), "not valid JSON"});
  write_config(dir);
  expect_error([&] { Checkpoint c(dir); }, {dir.string(), "no model.safetensors"});

  // Without index or model.safetensors: every *.safetensors, and a name in two files is an error.
  write_safetensors(dir / "b.safetensors", {{"x", DType::F32, {2}, v}});
  write_safetensors(dir / "a.safetensors", {{"y", DType::F32, {2}, v}});
  EXPECT_EQ(Checkpoint(dir).names(), (std::vector<std::string>{"x", "y"}));
  write_safetensors(dir / "c.safetensors", {{"x", DType::F32, {2}, v}});
  expect_error([&] { Checkpoint c(dir); }, {"tensor x", "b.safetensors", "c.safetensors"});
  fs::remove(dir / "c.safetensors");

  // Index naming a missing shard, or a tensor its shard lacks.
  write_file_atomic(dir / "model.safetensors.index.json",
                    R"({"metadata": {}, "weight_map": {"x": "b.safetensors", "z": "gone.safetensors"}})");
  expect_error([&] { Checkpoint c(dir); }, {dir.string(), "gone.safetensors", "missing"});
  write_file_atomic(dir / "model.safetensors.index.json",
                    R"({"metadata": {}, "weight_map": {"x": "b.safetensors", "z": "a.safetensors"}})");
  expect_error([&] { Checkpoint c(dir); }, {"tensor z", "a.safetensors"});
  write_file_atomic(dir / "model.safetensors.index.json",
                    R"({"metadata": {}, "weight_map": {"x": "b.safetensors", "y": "a.safetensors"}})");
  EXPECT_EQ(Checkpoint(dir).names().size(), 2u);
  // A corrupt shard is reported with its own path.
  std::ofstream(dir / "a.safetensors", std::ios::binary | std::ios::trunc) << "xy";
  expect_error([&] { Checkpoint c(dir); }, {(dir / "a.safetensors").string()});
}

TEST(Safetensors, InteropWithThePythonPackage) {
  auto dir = test::temp_dir("st-interop");
  Expected ex;
  // Ours -> safetensors.torch.load_file.
  write_safetensors(dir / "ours.safetensors", ex.tensors(), {{"format", "pt"}, {"written_by", "interop-test"}});
  test::run_python("safetensors_interop.py", "check " + (dir / "ours.safetensors").string());
  // safetensors.torch.save_file -> ours.
  test::run_python("safetensors_interop.py", "write " + (dir / "theirs.safetensors").string());
  SafetensorsFile theirs(dir / "theirs.safetensors");
  expect_matches(theirs, ex.tensors());
  EXPECT_EQ(theirs.metadata().at("written_by"), "interop-test");
}

}  // namespace
