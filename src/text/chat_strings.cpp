#include "chat_strings.h"

#include <cstdint>

namespace esft::py {

namespace {

// Python's str.isspace() code points.
bool is_space(uint32_t c) {
  return (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x20) || c == 0x85 || c == 0xa0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 || c == 0x202f || c == 0x205f || c == 0x3000;
}

// Decodes the code point starting at byte i (the text is valid UTF-8: it came through the JSON
// parser); returns its byte length.
size_t decode_at(std::string_view s, size_t i, uint32_t* cp) {
  unsigned char b = s[i];
  size_t n = b < 0x80 ? 1 : b < 0xe0 ? 2 : b < 0xf0 ? 3 : 4;
  if (i + n > s.size()) n = 1;
  uint32_t c = n == 1 ? b : n == 2 ? (b & 0x1f) : n == 3 ? (b & 0x0f) : (b & 0x07);
  for (size_t k = 1; k < n; ++k) c = (c << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3f);
  *cp = c;
  return n;
}

// Start of the code point that ends at byte `end` (exclusive).
size_t start_before(std::string_view s, size_t end) {
  size_t i = end - 1;
  while (i > 0 && (static_cast<unsigned char>(s[i]) & 0xc0) == 0x80) --i;
  return i;
}

size_t left_space_end(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    uint32_t c;
    size_t n = decode_at(s, i, &c);
    if (!is_space(c)) break;
    i += n;
  }
  return i;
}

size_t right_space_begin(std::string_view s, size_t floor) {
  size_t end = s.size();
  while (end > floor) {
    size_t b = start_before(s, end);
    uint32_t c;
    decode_at(s, b, &c);
    if (!is_space(c)) break;
    end = b;
  }
  return end;
}

}  // namespace

std::string strip(std::string_view s) {
  size_t b = left_space_end(s);
  return std::string(s.substr(b, right_space_begin(s, b) - b));
}
std::string lstrip(std::string_view s) { return std::string(s.substr(left_space_end(s))); }
std::string rstrip(std::string_view s) { return std::string(s.substr(0, right_space_begin(s, 0))); }

std::string lstrip_chars(std::string_view s, std::string_view chars) {
  size_t b = s.find_first_not_of(chars);
  return b == std::string_view::npos ? std::string() : std::string(s.substr(b));
}
std::string rstrip_chars(std::string_view s, std::string_view chars) {
  size_t e = s.find_last_not_of(chars);
  return e == std::string_view::npos ? std::string() : std::string(s.substr(0, e + 1));
}
std::string strip_chars(std::string_view s, std::string_view chars) { return lstrip_chars(rstrip_chars(s, chars), chars); }

std::string split_first(std::string_view s, std::string_view sep) {
  size_t p = s.find(sep);
  return std::string(p == std::string_view::npos ? s : s.substr(0, p));
}
std::string split_last(std::string_view s, std::string_view sep) {
  // Left to right, non-overlapping, as str.split does (rfind differs for self-overlapping seps).
  size_t start = 0;
  for (size_t p = s.find(sep); p != std::string_view::npos; p = s.find(sep, start)) start = p + sep.size();
  return std::string(s.substr(start));
}

}  // namespace esft::py
