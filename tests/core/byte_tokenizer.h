// A transparent test tokenizer: every byte is one token (id = byte value), the given special
// strings are single tokens (ids 1000, 1001, ...) wherever they appear, and, optionally, "\n\n"
// is one token (id 999) so that a masked "\n" followed by a trained "\n" straddles a boundary.
// decode() gives back the text, so label spans can be checked as strings.
#pragma once
#include <string>
#include <vector>

#include "esft/tokenizer.h"

namespace esft::test {

class ByteTokenizer : public Tokenizer {
 public:
  explicit ByteTokenizer(std::vector<std::string> specials, bool merge_double_newline = false)
      : specials_(std::move(specials)), merge_nn_(merge_double_newline) {}

  std::vector<int32_t> encode(std::string_view text) const override {
    std::vector<int32_t> ids;
    for (size_t i = 0; i < text.size();) {
      int best = -1;
      size_t best_len = 0;
      for (size_t k = 0; k < specials_.size(); ++k)
        if (specials_[k].size() > best_len && text.substr(i, specials_[k].size()) == specials_[k])
          best = int(k), best_len = specials_[k].size();
      if (best >= 0) {
        ids.push_back(1000 + best);
        i += best_len;
      } else if (merge_nn_ && text.substr(i, 2) == "\n\n") {
        ids.push_back(999);
        i += 2;
      } else {
        ids.push_back(static_cast<unsigned char>(text[i++]));
      }
    }
    return ids;
  }
  std::string decode(const std::vector<int32_t>& ids, bool skip_special_tokens = false) const override {
    std::string s;
    for (auto id : ids) s += id_to_token(id);
    return s;
  }
  std::optional<int32_t> token_to_id(std::string_view token) const override {
    for (size_t k = 0; k < specials_.size(); ++k)
      if (specials_[k] == token) return int32_t(1000 + k);
    return std::nullopt;
  }
  std::string id_to_token(int32_t id) const override {
    if (id >= 1000) return specials_.at(id - 1000);
    if (id == 999) return "\n\n";
    return std::string(1, char(id));
  }
  size_t vocab_size() const override { return 1000 + specials_.size(); }

 private:
  std::vector<std::string> specials_;
  bool merge_nn_;
};

}  // namespace esft::test
