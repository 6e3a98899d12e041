#include "esft/tfevents.h"

#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>

#include "esft/error.h"

namespace esft {

namespace {

// CRC-32C (Castagnoli, reflected polynomial 0x82f63b78), table driven.
struct Crc32cTable {
  uint32_t t[256];
  Crc32cTable() {
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = c & 1 ? (c >> 1) ^ 0x82f63b78u : c >> 1;
      t[i] = c;
    }
  }
};

// Protobuf wire format: varints, tags (field << 3 | wire type), little-endian fixed widths.
void put_varint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out += char(uint8_t(v) | 0x80);
    v >>= 7;
  }
  out += char(uint8_t(v));
}
void put_tag(std::string& out, int field, int wire) { put_varint(out, uint64_t(field) << 3 | uint64_t(wire)); }
template <class T>
void put_fixed(std::string& out, T v) {
  char b[sizeof(T)];
  std::memcpy(b, &v, sizeof(T));  // x86-64 and aarch64 are little endian, as the format is
  out.append(b, sizeof(T));
}
void put_bytes(std::string& out, int field, std::string_view s) {
  put_tag(out, field, 2);
  put_varint(out, s.size());
  out.append(s.data(), s.size());
}

std::string event_header(double wall_time, int64_t step) {
  std::string e;
  put_tag(e, 1, 1);  // wall_time: double
  put_fixed(e, wall_time);
  put_tag(e, 2, 0);  // step: int64 varint (two's complement for negatives, as protobuf does)
  put_varint(e, uint64_t(step));
  return e;
}

double now_s() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

}  // namespace

uint32_t crc32c(const void* data, size_t n, uint32_t crc) {
  static const Crc32cTable table;
  auto p = static_cast<const uint8_t*>(data);
  crc = ~crc;
  for (size_t i = 0; i < n; ++i) crc = table.t[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
  return ~crc;
}

uint32_t masked_crc32c(const void* data, size_t n) {
  uint32_t c = crc32c(data, n);
  return ((c >> 15) | (c << 17)) + 0xa282ead8u;
}

std::string encode_tfrecord(std::string_view data) {
  std::string r;
  const uint64_t len = data.size();
  put_fixed(r, len);
  put_fixed(r, masked_crc32c(r.data(), 8));
  r.append(data.data(), data.size());
  put_fixed(r, masked_crc32c(data.data(), data.size()));
  return r;
}

std::string encode_scalar_event(double wall_time, int64_t step, const std::vector<std::pair<std::string, double>>& values) {
  std::string summary;
  for (auto& [tag, v] : values) {
    std::string value;
    put_bytes(value, 1, tag);  // Summary.Value.tag
    put_tag(value, 2, 5);      // Summary.Value.simple_value: float
    put_fixed(value, float(v));
    put_bytes(summary, 1, value);  // Summary.value (repeated)
  }
  std::string e = event_header(wall_time, step);
  put_bytes(e, 5, summary);  // Event.summary
  return e;
}

EventWriter::EventWriter(const fs::path& dir) {
  fs::create_directories(dir);
  char host[256] = "localhost";
  ::gethostname(host, sizeof host - 1);
  const double t = now_s();
  path_ = dir / ("events.out.tfevents." + std::to_string(int64_t(t)) + "." + host + "." + std::to_string(::getpid()));
  // A resumed run in the same second gets a fresh name: TensorBoard reads every file in the directory.
  for (int i = 1; fs::exists(path_); ++i) path_ += "." + std::to_string(i);
  f_ = std::fopen(path_.c_str(), "wb");
  if (!f_) fail("cannot create the TensorBoard event file {}: {}", path_.string(), std::strerror(errno));
  std::string e = event_header(t, 0);
  put_bytes(e, 3, "brain.Event:2");  // Event.file_version
  record(e);
  flush();
}

EventWriter::~EventWriter() {
  if (f_) std::fclose(f_);
}

void EventWriter::record(std::string_view data) {
  auto r = encode_tfrecord(data);
  if (std::fwrite(r.data(), 1, r.size(), f_) != r.size())
    fail("writing the TensorBoard event file {} failed: {}", path_.string(), std::strerror(errno));
}

void EventWriter::scalars(int64_t step, const std::vector<std::pair<std::string, double>>& values) {
  if (values.empty()) return;
  record(encode_scalar_event(now_s(), step, values));
}

void EventWriter::session_start(int64_t step) {
  std::string log;
  put_tag(log, 1, 0);  // SessionLog.status = START
  put_varint(log, 1);
  std::string e = event_header(now_s(), step);
  put_bytes(e, 7, log);  // Event.session_log
  record(e);
}

void EventWriter::flush() {
  if (std::fflush(f_) != 0) fail("writing the TensorBoard event file {} failed: {}", path_.string(), std::strerror(errno));
}

}  // namespace esft
