// Unicode support for the tokenizers: per-code-point properties (general category, White_Space,
// Alphabetic) as the regex engine needs them, case folding, UTF-8 helpers, and NFC/NFD with the
// exact Unicode versions HF `tokenizers` uses (see scripts/gen_unicode_tables.py).
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace esft::text {

// Same order as CATEGORIES in scripts/gen_unicode_tables.py.
enum GeneralCategory : uint8_t {
  kCn, kLu, kLl, kLt, kLm, kLo, kMn, kMc, kMe, kNd, kNl, kNo, kPc, kPd, kPs,
  kPe, kPi, kPf, kPo, kSm, kSc, kSk, kSo, kZs, kZl, kZp, kCc, kCf, kCs, kCo,
  kNumCategories
};

// Property byte of a code point: bits 0-4 general category, then these flags. The low 7 bits
// are the "class key" the regex engine's character classes are tabulated over.
namespace prop {
constexpr uint8_t kCategoryMask = 0x1F;
constexpr uint8_t kWhiteSpace = 1 << 5;
constexpr uint8_t kAlphabetic = 1 << 6;
constexpr uint8_t kClassKeyMask = 0x7F;
// Not an NFC "safe boundary" (Unicode 9.0 data): ccc != 0, or NFC_Quick_Check is No or Maybe.
constexpr uint8_t kNfcUnstable = 1 << 7;
}  // namespace prop

namespace detail {
struct PropertyTable {
  uint16_t block_of[0x110000 >> 8];  // block index per 256 code points
  std::vector<uint8_t> blocks;       // 256 property bytes per distinct block
};
const PropertyTable& property_table();
}  // namespace detail

inline uint8_t properties(char32_t cp) {
  static const detail::PropertyTable& t = detail::property_table();
  if (cp >= 0x110000) return kCn;
  return t.blocks[size_t(t.block_of[cp >> 8]) * 256 + (cp & 0xFF)];
}
inline GeneralCategory general_category(char32_t cp) {
  return GeneralCategory(properties(cp) & prop::kCategoryMask);
}
inline bool is_white_space(char32_t cp) { return properties(cp) & prop::kWhiteSpace; }
// Rust regex's `\w` (Alphabetic, Mark, Decimal_Number, Connector_Punctuation, Join_Control): what
// HF uses for an added token's single_word check.
bool is_rust_word_char(char32_t cp);

// Simple case folding (cp itself when it has none).
char32_t simple_fold(char32_t cp);
// All (code point, simple folding) pairs where the two differ.
const std::vector<std::pair<char32_t, char32_t>>& simple_fold_pairs();
// Every code point that folds to the same value as cp, cp included.
std::vector<char32_t> case_orbit(char32_t cp);
// The full case folding of cp when it is more than one character (e.g. U+00DF -> "ss"), else empty.
std::u32string multi_char_fold(char32_t cp);
// All code points with a multi-character full case folding.
const std::vector<char32_t>& multi_char_fold_code_points();

// ---- UTF-8 ----
// Decodes one code point of valid UTF-8 at p, advancing p.
inline char32_t next_code_point(const char*& p) {
  auto b = static_cast<unsigned char>(*p);
  if (b < 0x80) {
    ++p;
    return b;
  }
  if (b < 0xE0) {
    char32_t c = ((b & 0x1F) << 6) | (static_cast<unsigned char>(p[1]) & 0x3F);
    p += 2;
    return c;
  }
  if (b < 0xF0) {
    char32_t c = ((b & 0x0F) << 12) | ((static_cast<unsigned char>(p[1]) & 0x3F) << 6) |
                 (static_cast<unsigned char>(p[2]) & 0x3F);
    p += 3;
    return c;
  }
  char32_t c = ((b & 0x07) << 18) | ((static_cast<unsigned char>(p[1]) & 0x3F) << 12) |
               ((static_cast<unsigned char>(p[2]) & 0x3F) << 6) | (static_cast<unsigned char>(p[3]) & 0x3F);
  p += 4;
  return c;
}
void append_utf8(std::string& out, char32_t cp);
// Byte offset of the first invalid UTF-8 sequence, or npos when s is valid.
size_t find_invalid_utf8(std::string_view s);
// Rust's String::from_utf8_lossy: each maximal invalid subsequence becomes one U+FFFD.
std::string utf8_lossy(std::string_view bytes);

// ---- normalization (Unicode 9.0, as the unicode-normalization-alignments crate) ----
std::string nfc(std::string_view s);
std::string nfd(std::string_view s);

}  // namespace esft::text
