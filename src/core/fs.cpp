#include "esft/fs.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "esft/error.h"

namespace esft {

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("cannot open {}: {}", path.string(), std::strerror(errno));
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write_file_atomic(const fs::path& path, std::string_view content) {
  AtomicFile f(path);
  f.write(content);
  f.commit();
}

fs::path pid_sibling(const fs::path& path, const char* kind) {
  fs::path p = path;
  p += std::string(".") + kind + "." + std::to_string(::getpid());
  return p;
}

AtomicFile::AtomicFile(fs::path path) : path_(std::move(path)) {
  if (path_.has_parent_path()) fs::create_directories(path_.parent_path());
  tmp_ = pid_sibling(path_);
  f_ = std::fopen(tmp_.c_str(), "wb");
  if (!f_) fail("cannot create {}: {}", tmp_.string(), std::strerror(errno));
}

AtomicFile::~AtomicFile() {
  if (f_) {
    std::fclose(f_);
    std::error_code ec;
    fs::remove(tmp_, ec);
  }
}

void AtomicFile::write(const void* data, size_t n) {
  if (n && std::fwrite(data, 1, n, f_) != n) fail("write to {} failed: {}", tmp_.string(), std::strerror(errno));
}

void AtomicFile::commit() {
  if (std::fflush(f_) != 0 || ::fsync(::fileno(f_)) != 0)
    fail("flushing {} failed: {}", tmp_.string(), std::strerror(errno));
  std::fclose(f_);
  f_ = nullptr;
  std::error_code ec;
  fs::rename(tmp_, path_, ec);
  if (ec) {
    fs::remove(tmp_);
    fail("cannot rename {} to {}: {}", tmp_.string(), path_.string(), ec.message());
  }
}

void replace_directory(const fs::path& src, const fs::path& dst) {
  std::error_code ec;
  fs::path old;
  if (fs::exists(dst)) {
    old = pid_sibling(dst, "old");
    fs::rename(dst, old, ec);
    if (ec) fail("cannot move {} aside: {}", dst.string(), ec.message());
  }
  fs::rename(src, dst, ec);
  if (ec) {
    if (!old.empty()) fs::rename(old, dst);
    fail("cannot rename {} to {}: {}", src.string(), dst.string(), ec.message());
  }
  if (!old.empty()) fs::remove_all(old, ec);
}

MappedFile::MappedFile(const fs::path& path) : path_(path) {
  int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) fail("cannot open {}: {}", path.string(), std::strerror(errno));
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    fail("cannot stat {}: {}", path.string(), std::strerror(errno));
  }
  size_ = static_cast<size_t>(st.st_size);
  if (size_ > 0) {
    void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      ::close(fd);
      fail("cannot mmap {}: {}", path.string(), std::strerror(errno));
    }
    data_ = static_cast<const uint8_t*>(p);
  }
  ::close(fd);
}

MappedFile::~MappedFile() {
  if (data_) ::munmap(const_cast<uint8_t*>(data_), size_);
}

}  // namespace esft
