// File helpers. Every output goes through AtomicFile / write_file_atomic: it is written to a
// temporary name beside the target and renamed only once complete, so an interrupted run never
// leaves a truncated file where a good one used to be.
#pragma once
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <string>
#include <string_view>

namespace esft {

namespace fs = std::filesystem;

std::string read_file(const fs::path& path);
void write_file_atomic(const fs::path& path, std::string_view content);

// Where a write builds its output before the rename: "<path>.tmp.<pid>" (kind "tmp"), or
// "<path>.old.<pid>" for the copy replace_directory() moves aside (kind "old"). The pid says
// whether the writer still lives; remove_stale_temporaries() (run_control.h) parses these names.
fs::path pid_sibling(const fs::path& path, const char* kind = "tmp");

// A file opened under pid_sibling(path); commit() flushes, fsyncs and renames it to path.
// Destroyed without commit(), the temporary is removed and path is left untouched.
class AtomicFile {
 public:
  explicit AtomicFile(fs::path path);
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  void write(const void* data, size_t n);
  void write(std::string_view s) { write(s.data(), s.size()); }
  void commit();
  const fs::path& path() const { return path_; }

 private:
  fs::path path_, tmp_;
  std::FILE* f_ = nullptr;
};

// Replaces directory `dst` by `src` (a finished temporary directory) as atomically as the
// filesystem allows: an existing dst is moved aside first and deleted after the swap.
void replace_directory(const fs::path& src, const fs::path& dst);

// Read-only memory map of a whole file.
class MappedFile {
 public:
  explicit MappedFile(const fs::path& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace esft
