// Fast reader for HF tokenizer.json files. A 28 MB file is mostly model.vocab (an object of
// token -> id) and model.merges (an array of "a b" strings or ["a", "b"] pairs); building a
// generic JSON tree for those is what makes loading slow, so they are streamed to callbacks as
// string views while everything else becomes a small nlohmann::json tree.
#pragma once
#include <nlohmann/json.hpp>

#include <cstdint>
#include <functional>
#include <string_view>

#include "esft/fs.h"

namespace esft::text {

struct TokenizerJsonCallbacks {
  // One model.vocab entry.
  std::function<void(std::string_view token, int64_t id)> vocab;
  // One model.merges entry; for the legacy "a b" form, `a` holds the whole string and b_present
  // is false.
  std::function<void(std::string_view a, std::string_view b, bool b_present)> merge;
};

// Parses `file`; returns the document with model.vocab and model.merges replaced by null (the
// keys stay, so their presence can be checked). Errors name the file and line.
nlohmann::json read_tokenizer_json(const fs::path& file, const TokenizerJsonCallbacks& cb);

}  // namespace esft::text
