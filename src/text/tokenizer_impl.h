// Loaders behind Tokenizer::from_file (internal to src/text).
#pragma once
#include <memory>

#include "esft/fs.h"
#include "esft/tokenizer.h"

namespace esft::text {

std::unique_ptr<Tokenizer> load_hf_tokenizer(const fs::path& tokenizer_json);
std::unique_ptr<Tokenizer> load_spm_tokenizer(const fs::path& tokenizer_model);

}  // namespace esft::text
