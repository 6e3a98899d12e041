// Hand-written JSON scanner for tokenizer.json; see tokenizer_json.h.
#include "tokenizer_json.h"

#include <algorithm>
#include <charconv>
#include <cstdlib>
#include <cstring>
#include <string>

#include "esft/error.h"
#include "unicode.h"

namespace esft::text {

namespace {

class Scanner {
 public:
  Scanner(const char* begin, const char* end, const fs::path& file) : begin_(begin), p_(begin), end_(end), file_(file) {}

  [[noreturn]] void error(const std::string& what) const {
    size_t line = 1 + std::count(begin_, p_, '\n');
    fail("{}: invalid JSON at line {}: {}", file_.string(), line, what);
  }

  void ws() {
    while (p_ < end_ && (*p_ == ' ' || *p_ == '\n' || *p_ == '\r' || *p_ == '\t')) ++p_;
  }
  char peek() {
    ws();
    if (p_ >= end_) error("unexpected end of file");
    return *p_;
  }
  void expect(char c) {
    if (peek() != c) error(std::string("expected '") + c + "'");
    ++p_;
  }
  bool at_end() {
    ws();
    return p_ >= end_;
  }

  // Reads a string (after skipping whitespace, at its opening quote). The result views either
  // the file itself (no escapes) or `buf`.
  std::string_view string(std::string& buf) {
    expect('"');
    const char* start = p_;
    while (p_ < end_ && *p_ != '"' && *p_ != '\\') {
      if (static_cast<unsigned char>(*p_) < 0x20) error("control character in string");
      ++p_;
    }
    if (p_ >= end_) error("unterminated string");
    if (*p_ == '"') {
      ++p_;
      return std::string_view(start, p_ - 1 - start);
    }
    buf.assign(start, p_);
    while (p_ < end_ && *p_ != '"') {
      char c = *p_++;
      if (c != '\\') {
        if (static_cast<unsigned char>(c) < 0x20) error("control character in string");
        buf.push_back(c);
        continue;
      }
      if (p_ >= end_) error("unterminated string");
      char e = *p_++;
      switch (e) {
        case '"': buf.push_back('"'); break;
        case '\\': buf.push_back('\\'); break;
        case '/': buf.push_back('/'); break;
        case 'b': buf.push_back('\b'); break;
        case 'f': buf.push_back('\f'); break;
        case 'n': buf.push_back('\n'); break;
        case 'r': buf.push_back('\r'); break;
        case 't': buf.push_back('\t'); break;
        case 'u': {
          char32_t cp = hex4();
          if (cp >= 0xD800 && cp <= 0xDBFF) {
            if (end_ - p_ < 6 || p_[0] != '\\' || p_[1] != 'u') error("unpaired surrogate escape");
            p_ += 2;
            char32_t lo = hex4();
            if (lo < 0xDC00 || lo > 0xDFFF) error("invalid surrogate pair escape");
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
            error("unpaired surrogate escape");
          }
          append_utf8(buf, cp);
          break;
        }
        default: error(std::string("invalid escape \\") + e);
      }
    }
    if (p_ >= end_) error("unterminated string");
    ++p_;
    return buf;
  }

  char32_t hex4() {
    if (end_ - p_ < 4) error("truncated \\u escape");
    char32_t v = 0;
    for (int i = 0; i < 4; ++i) {
      char c = *p_++;
      int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
      if (d < 0) error("invalid \\u escape");
      v = v * 16 + d;
    }
    return v;
  }

  int64_t integer() {
    ws();
    int64_t v = 0;
    auto [ptr, ec] = std::from_chars(p_, end_, v);
    if (ec != std::errc() || ptr == p_) error("expected an integer");
    if (ptr < end_ && (*ptr == '.' || *ptr == 'e' || *ptr == 'E')) error("expected an integer");
    p_ = ptr;
    return v;
  }

  nlohmann::json value() {
    char c = peek();
    switch (c) {
      case '{': {
        ++p_;
        nlohmann::json obj = nlohmann::json::object();
        if (peek() == '}') {
          ++p_;
          return obj;
        }
        for (;;) {
          std::string kb;
          std::string key(string(kb));
          expect(':');
          obj[key] = value();
          if (peek() == ',') {
            ++p_;
            continue;
          }
          expect('}');
          return obj;
        }
      }
      case '[': {
        ++p_;
        nlohmann::json arr = nlohmann::json::array();
        if (peek() == ']') {
          ++p_;
          return arr;
        }
        for (;;) {
          arr.push_back(value());
          if (peek() == ',') {
            ++p_;
            continue;
          }
          expect(']');
          return arr;
        }
      }
      case '"': {
        std::string b;
        return std::string(string(b));
      }
      case 't': return literal("true", true);
      case 'f': return literal("false", false);
      case 'n': return literal("null", nullptr);
      default: return number();
    }
  }

  nlohmann::json literal(const char* word, nlohmann::json v) {
    size_t n = std::strlen(word);
    if (size_t(end_ - p_) < n || std::memcmp(p_, word, n) != 0) error("invalid literal");
    p_ += n;
    return v;
  }

  nlohmann::json number() {
    const char* s = p_;
    if (p_ < end_ && *p_ == '-') ++p_;
    bool is_float = false;
    while (p_ < end_ && ((*p_ >= '0' && *p_ <= '9') || *p_ == '.' || *p_ == 'e' || *p_ == 'E' || *p_ == '+' || *p_ == '-')) {
      if (*p_ == '.' || *p_ == 'e' || *p_ == 'E') is_float = true;
      ++p_;
    }
    if (p_ == s) error("unexpected character");
    std::string text(s, p_);
    if (!is_float) {
      if (text[0] == '-') {
        int64_t v;
        auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
        if (ec == std::errc() && ptr == text.data() + text.size()) return v;
      } else {
        uint64_t v;
        auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
        if (ec == std::errc() && ptr == text.data() + text.size()) return v;
      }
    }
    char* endp = nullptr;
    double d = std::strtod(text.c_str(), &endp);
    if (endp != text.c_str() + text.size()) error("invalid number");
    return d;
  }

  // model.vocab: {"token": id, ...}
  void vocab(const TokenizerJsonCallbacks& cb) {
    expect('{');
    if (peek() == '}') {
      ++p_;
      return;
    }
    std::string buf;
    for (;;) {
      std::string_view tok = string(buf);
      expect(':');
      int64_t id = integer();
      if (cb.vocab) cb.vocab(tok, id);
      if (peek() == ',') {
        ++p_;
        continue;
      }
      expect('}');
      return;
    }
  }

  // model.merges: ["a b", ...] or [["a", "b"], ...]
  void merges(const TokenizerJsonCallbacks& cb) {
    expect('[');
    if (peek() == ']') {
      ++p_;
      return;
    }
    std::string ba, bb;
    for (;;) {
      if (peek() == '[') {
        ++p_;
        std::string_view a = string(ba);
        expect(',');
        std::string_view b = string(bb);
        expect(']');
        if (cb.merge) cb.merge(a, b, true);
      } else {
        std::string_view a = string(ba);
        if (cb.merge) cb.merge(a, {}, false);
      }
      if (peek() == ',') {
        ++p_;
        continue;
      }
      expect(']');
      return;
    }
  }

  // The "model" object, with vocab and merges streamed.
  nlohmann::json model(const TokenizerJsonCallbacks& cb) {
    expect('{');
    nlohmann::json obj = nlohmann::json::object();
    if (peek() == '}') {
      ++p_;
      return obj;
    }
    for (;;) {
      std::string kb;
      std::string key(string(kb));
      expect(':');
      if (key == "vocab" && peek() == '{') {
        vocab(cb);
        obj[key] = nullptr;
      } else if (key == "merges" && peek() == '[') {
        merges(cb);
        obj[key] = nullptr;
      } else {
        obj[key] = value();
      }
      if (peek() == ',') {
        ++p_;
        continue;
      }
      expect('}');
      return obj;
    }
  }

  nlohmann::json document(const TokenizerJsonCallbacks& cb) {
    expect('{');
    nlohmann::json obj = nlohmann::json::object();
    if (peek() != '}') {
      for (;;) {
        std::string kb;
        std::string key(string(kb));
        expect(':');
        obj[key] = key == "model" && peek() == '{' ? model(cb) : value();
        if (peek() == ',') {
          ++p_;
          continue;
        }
        break;
      }
    }
    expect('}');
    if (!at_end()) error("trailing content after the top-level object");
    return obj;
  }

 private:
  const char* begin_;
  const char* p_;
  const char* end_;
  const fs::path& file_;
};

}  // namespace

nlohmann::json read_tokenizer_json(const fs::path& file, const TokenizerJsonCallbacks& cb) {
  MappedFile map(file);
  const char* begin = reinterpret_cast<const char*>(map.data());
  const char* end = begin + map.size();
  if (end - begin >= 3 && std::memcmp(begin, "\xEF\xBB\xBF", 3) == 0) begin += 3;  // UTF-8 BOM
  // JSON text is UTF-8 (HF's serde_json refuses anything else); the fast scanner below does not
  // look inside strings, so check the whole file once.
  if (size_t bad = find_invalid_utf8(std::string_view(begin, end - begin)); bad != std::string_view::npos)
    fail("{}: invalid UTF-8 at line {} (byte {})", file.string(), 1 + std::count(begin, begin + bad, '\n'), bad);
  Scanner s(begin, end, file);
  return s.document(cb);
}

}  // namespace esft::text
