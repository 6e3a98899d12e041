// TensorBoard event files without TensorFlow or protobuf: scalar summaries encoded by hand.
//
// File: DIR/events.out.tfevents.<unix time>.<host>.<pid>, a TFRecord stream. Each record is
//   uint64 length (little endian) | uint32 masked CRC32C of those 8 bytes | data | uint32 masked CRC32C of data
// with mask(crc) = ((crc >> 15) | (crc << 17)) + 0xa282ead8. Each data is a serialized
// tensorflow.Event: wall_time (field 1, double), step (2, int64), and either file_version
// (3, "brain.Event:2", the first record) or summary (5): Summary.value (1) = {tag (1, string),
// simple_value (2, float)}, or session_log (7). Records are flushed one step at a time, so a killed run leaves a
// readable file.
#pragma once
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "esft/fs.h"

namespace esft {

uint32_t crc32c(const void* data, size_t n, uint32_t crc = 0);
uint32_t masked_crc32c(const void* data, size_t n);

class EventWriter {
 public:
  explicit EventWriter(const fs::path& dir);  // creates dir and a new event file in it
  ~EventWriter();
  EventWriter(const EventWriter&) = delete;
  EventWriter& operator=(const EventWriter&) = delete;

  // One Event holding these scalars at `step`; non-finite values are written as they are
  // (TensorBoard shows NaN / Inf).
  void scalars(int64_t step, const std::vector<std::pair<std::string, double>>& values);
  // A SessionLog START at `step` (Event.session_log, field 7, status START = 1): TensorBoard then
  // drops what earlier files hold from that step on, so a resumed run that redoes steps shows
  // each step once.
  void session_start(int64_t step);
  void flush();
  const fs::path& path() const { return path_; }

 private:
  void record(std::string_view data);
  fs::path path_;
  std::FILE* f_ = nullptr;
};

// The protobuf pieces, exposed for tests and the fuzzer.
std::string encode_scalar_event(double wall_time, int64_t step, const std::vector<std::pair<std::string, double>>& values);
std::string encode_tfrecord(std::string_view data);

}  // namespace esft
