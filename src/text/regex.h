// A small backtracking regex engine with the match semantics of Oniguruma (Ruby syntax), the
// engine HF `tokenizers` uses for Split pre-tokenizer patterns: leftmost match, alternatives tried
// in order, greedy/lazy/possessive quantifiers with backtracking. It supports what tokenizer.json
// patterns use: literals and escapes, classes with \p{..} general categories, \s \d \w \h, nested
// classes and &&, groups (capturing ones do not capture), (?i) / (?i:..) case-insensitivity,
// lookahead (?=..) (?!..), atomic groups (?>..), quantifiers ? * + {n,m} and their lazy/possessive
// forms, anchors ^ $ \A \z \Z \b \B. Anything else fails at construction, naming the construct.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace esft::text {

class Regex {
 public:
  // `pattern` is UTF-8. Throws esft::Error for syntax errors and unsupported constructs.
  explicit Regex(std::string_view pattern);
  ~Regex();
  Regex(Regex&&) noexcept;
  Regex& operator=(Regex&&) noexcept;

  // Every match of onig's find_iter over `text` (valid UTF-8), as [start, end) byte offsets,
  // appended to `out`. Like onig, an empty match right where the previous match ended is skipped.
  void find_all(std::string_view text, std::vector<std::pair<uint32_t, uint32_t>>& out) const;

  const std::string& pattern() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace esft::text
