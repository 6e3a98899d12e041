// Cache of encoded datasets: a binary file per (dataset content, tokenizer files, chat format),
// written atomically, so a second run with the same inputs does not encode again.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "esft/data.h"

namespace esft {

// Everything the encoded samples depend on, as one string (stored in the file and compared on
// read, so a hash collision can never return the wrong samples).
std::string dataset_cache_key(const std::string& content, const DataOptions& opt, const std::string& format);

// cache_dir / "<stem>.<hash of key>.samples"
fs::path dataset_cache_file(const fs::path& cache_dir, const fs::path& jsonl, const std::string& key);

// False when the file is absent, damaged or holds another key.
bool read_sample_cache(const fs::path& file, const std::string& key, std::vector<Sample>* samples, int64_t* skipped);
// Failures are logged, not thrown: the cache only saves time.
void write_sample_cache(const fs::path& file, const std::string& key, const std::vector<Sample>& samples, int64_t skipped);

}  // namespace esft
