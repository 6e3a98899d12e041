// The Python string methods chat templates call (str.strip(), .lstrip('\n'), .split(sep)[i],
// startswith ...), with Python's exact semantics on UTF-8 text.
#pragma once
#include <string>
#include <string_view>

namespace esft::py {

// str.strip() / lstrip() / rstrip() without arguments: Python's Unicode whitespace (str.isspace).
std::string strip(std::string_view s);
std::string lstrip(std::string_view s);
std::string rstrip(std::string_view s);

// str.strip(chars) for a set of ASCII characters, e.g. strip_chars(s, "\n").
std::string strip_chars(std::string_view s, std::string_view chars);
std::string lstrip_chars(std::string_view s, std::string_view chars);
std::string rstrip_chars(std::string_view s, std::string_view chars);

// s.split(sep)[0] and s.split(sep)[-1] (sep non-empty).
std::string split_first(std::string_view s, std::string_view sep);
std::string split_last(std::string_view s, std::string_view sep);

inline bool contains(std::string_view s, std::string_view x) { return s.find(x) != std::string_view::npos; }
inline bool startswith(std::string_view s, std::string_view x) { return s.substr(0, x.size()) == x; }
inline bool endswith(std::string_view s, std::string_view x) {
  return s.size() >= x.size() && s.substr(s.size() - x.size()) == x;
}

}  // namespace esft::py
