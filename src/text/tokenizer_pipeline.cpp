// Pipeline stages of HF tokenizer.json files; see tokenizer_pipeline.h. Each stage follows the
// corresponding HF tokenizers (Rust) component; comments note where its behaviour is subtle.
#include "tokenizer_pipeline.h"

#include <algorithm>

#include "esft/error.h"
#include "tokenizer_bpe.h"
#include "unicode.h"

namespace esft::text {

namespace {

std::string type_of(const nlohmann::json& j, const std::string& file, const char* section) {
  if (!j.is_object() || !j.contains("type") || !j["type"].is_string())
    fail("{}: {} entry without a \"type\": {}", file, section, j.dump().substr(0, 200));
  return j["type"].get<std::string>();
}

template <class T>
T get_or(const nlohmann::json& j, const char* key, T dflt) {
  if (!j.contains(key) || j[key].is_null()) return dflt;
  return j[key].get<T>();
}

// Split/Replace pattern objects: {"String": "..."} or {"Regex": "..."}.
std::unique_ptr<Regex> make_pattern(const nlohmann::json& p, const std::string& file, const char* where) {
  if (p.is_object() && p.contains("Regex") && p["Regex"].is_string()) {
    try {
      return std::make_unique<Regex>(p["Regex"].get<std::string>());
    } catch (const Error& e) {
      fail("{}: {} pattern: {}", file, where, e.what());
    }
  }
  if (p.is_object() && p.contains("String") && p["String"].is_string())
    return std::make_unique<Regex>(escape_regex(p["String"].get<std::string>()));
  fail("{}: {} pattern must be {{\"String\": ...}} or {{\"Regex\": ...}}, got {}", file, where, p.dump());
}

// Matches of a regex as HF's Pattern::find_matches: (start, end, is_match) covering all of text.
struct Span {
  uint32_t start, end;
  bool match;
};

void spans_from_matches(std::string_view text, const std::vector<std::pair<uint32_t, uint32_t>>& m, std::vector<Span>& out) {
  out.clear();
  if (text.empty()) {
    out.push_back({0, 0, false});
    return;
  }
  uint32_t prev = 0;
  for (auto [s, e] : m) {
    if (prev != s) out.push_back({prev, s, false});
    out.push_back({s, e, true});
    prev = e;
  }
  if (prev != text.size()) out.push_back({prev, uint32_t(text.size()), false});
}

char32_t last_code_point(std::string_view s) {
  size_t i = s.size();
  do {
    --i;
  } while (i > 0 && (static_cast<unsigned char>(s[i]) & 0xC0) == 0x80);
  const char* p = s.data() + i;
  return next_code_point(p);
}

}  // namespace

std::string escape_regex(std::string_view literal) {
  std::string out;
  for (const char* p = literal.data(); p < literal.data() + literal.size();) {
    char32_t c = next_code_point(p);
    out += fmt::format("\\x{{{:X}}}", uint32_t(c));
  }
  return out;
}

// ---- added tokens ----

void AddedTokenMatcher::build(const std::vector<AddedToken>& tokens, bool normalized_ones) {
  nodes_.assign(1, Node{});
  std::fill(std::begin(first_byte_), std::end(first_byte_), false);
  for (size_t t = 0; t < tokens.size(); ++t) {
    const AddedToken& tok = tokens[t];
    if (tok.normalized != normalized_ones || tok.match_form.empty()) continue;
    int32_t node = 0;
    for (unsigned char b : tok.match_form) {
      auto& next = nodes_[node].next;
      auto it = std::lower_bound(next.begin(), next.end(), std::make_pair(uint8_t(b), INT32_MIN));
      if (it != next.end() && it->first == b) {
        node = it->second;
      } else {
        int32_t fresh = int32_t(nodes_.size());
        next.insert(it, {uint8_t(b), fresh});
        nodes_.emplace_back();
        node = fresh;
      }
    }
    if (nodes_[node].token >= 0)
      fail("added tokens '{}' and '{}' are matched by the same text '{}'", tokens[nodes_[node].token].content,
           tok.content, tok.match_form);
    nodes_[node].token = int32_t(t);
    first_byte_[static_cast<unsigned char>(tok.match_form[0])] = true;
  }
}

// Leftmost start, then longest token starting there.
bool AddedTokenMatcher::find(std::string_view text, size_t from, size_t& start, size_t& end, int32_t& token) const {
  const unsigned char* s = reinterpret_cast<const unsigned char*>(text.data());
  for (size_t i = from; i < text.size(); ++i) {
    if (!first_byte_[s[i]]) continue;
    int32_t node = 0, best = -1;
    size_t best_end = 0;
    for (size_t k = i; k < text.size(); ++k) {
      const auto& next = nodes_[node].next;
      auto it = std::lower_bound(next.begin(), next.end(), std::make_pair(uint8_t(s[k]), INT32_MIN));
      if (it == next.end() || it->first != s[k]) break;
      node = it->second;
      if (nodes_[node].token >= 0) {
        best = nodes_[node].token;
        best_end = k + 1;
      }
    }
    if (best >= 0) {
      start = i;
      end = best_end;
      token = best;
      return true;
    }
  }
  return false;
}

void AddedTokenMatcher::split(std::string_view text, const std::vector<AddedToken>& tokens, std::vector<Split>& out) const {
  out.clear();
  if (empty()) {
    out.push_back({0, text.size(), -1});
    return;
  }
  size_t start_offset = 0, pos = 0, s, e;
  int32_t tok;
  while (find(text, pos, s, e, tok)) {
    pos = e;  // the search resumes after this match even when it is discarded below
    const AddedToken& t = tokens[tok];
    if (t.single_word) {
      bool start_space = s == 0 || !is_rust_word_char(last_code_point(text.substr(0, s)));
      bool stop_space = e == text.size();
      if (!stop_space) {
        const char* p = text.data() + e;
        stop_space = !is_rust_word_char(next_code_point(p));
      }
      if (!start_space || !stop_space) continue;
    }
    if (t.lstrip) {
      size_t ns = s;
      while (ns > 0 && is_white_space(last_code_point(text.substr(0, ns)))) {
        do {
          --ns;
        } while (ns > 0 && (static_cast<unsigned char>(text[ns]) & 0xC0) == 0x80);
      }
      s = std::max(ns, start_offset);
    }
    if (t.rstrip) {
      const char* p = text.data() + e;
      const char* end = text.data() + text.size();
      while (p < end) {
        const char* q = p;
        if (!is_white_space(next_code_point(q))) break;
        p = q;
      }
      e = size_t(p - text.data());
    }
    if (start_offset < s) out.push_back({start_offset, s, -1});
    out.push_back({s, e, tok});
    start_offset = e;
  }
  if (start_offset != text.size()) out.push_back({start_offset, text.size(), -1});
}

// ---- normalizers ----

namespace {

class NfcNormalizer : public Normalizer {
 public:
  void apply(std::string& s, bool&) const override { s = nfc(s); }
};
class NfdNormalizer : public Normalizer {
 public:
  void apply(std::string& s, bool&) const override { s = nfd(s); }
};
class SequenceNormalizer : public Normalizer {
 public:
  std::vector<std::unique_ptr<Normalizer>> parts;
  void apply(std::string& s, bool& at_origin) const override {
    for (auto& p : parts) p->apply(s, at_origin);
  }
};
class PrependNormalizer : public Normalizer {
 public:
  std::string prepend;
  void apply(std::string& s, bool&) const override {
    if (!s.empty()) s.insert(0, prepend);
  }
};
class ReplaceNormalizer : public Normalizer {
 public:
  std::unique_ptr<Regex> pattern;
  std::string content;
  void apply(std::string& s, bool& at_origin) const override {
    std::vector<std::pair<uint32_t, uint32_t>> m;
    pattern->find_all(s, m);
    if (m.empty()) return;
    std::string out;
    uint32_t prev = 0;
    for (auto [a, b] : m) {
      out.append(s, prev, a - prev);
      out += content;
      prev = b;
    }
    out.append(s, prev, std::string::npos);
    if (content.empty() && m[0].first == 0 && m[0].second > 0) at_origin = false;
    s.swap(out);
  }
};
class StripNormalizer : public Normalizer {
 public:
  bool left = false, right = false;
  void apply(std::string& s, bool& at_origin) const override {
    size_t a = 0, b = s.size();
    if (left) {
      const char* p = s.data();
      while (p < s.data() + s.size()) {
        const char* q = p;
        if (!is_white_space(next_code_point(q))) break;
        p = q;
      }
      a = size_t(p - s.data());
      if (a > 0) at_origin = false;
    }
    if (right) {
      while (b > a && is_white_space(last_code_point(std::string_view(s).substr(0, b)))) {
        do {
          --b;
        } while (b > a && (static_cast<unsigned char>(s[b]) & 0xC0) == 0x80);
      }
    }
    s = s.substr(a, b - a);
  }
};

}  // namespace

std::unique_ptr<Normalizer> make_normalizer(const nlohmann::json& j, const std::string& file) {
  if (j.is_null()) return nullptr;
  std::string type = type_of(j, file, "normalizer");
  if (type == "NFC") return std::make_unique<NfcNormalizer>();
  if (type == "NFD") return std::make_unique<NfdNormalizer>();
  if (type == "Sequence") {
    auto seq = std::make_unique<SequenceNormalizer>();
    if (!j.contains("normalizers") || !j["normalizers"].is_array()) fail("{}: normalizer Sequence without \"normalizers\"", file);
    for (auto& n : j["normalizers"])
      if (auto p = make_normalizer(n, file)) seq->parts.push_back(std::move(p));
    return seq;
  }
  if (type == "Prepend") {
    auto p = std::make_unique<PrependNormalizer>();
    p->prepend = j.at("prepend").get<std::string>();
    return p;
  }
  if (type == "Replace") {
    auto r = std::make_unique<ReplaceNormalizer>();
    r->pattern = make_pattern(j.at("pattern"), file, "Replace normalizer");
    r->content = j.at("content").get<std::string>();
    return r;
  }
  if (type == "Strip") {
    auto s = std::make_unique<StripNormalizer>();
    s->left = get_or(j, "strip_left", false);
    s->right = get_or(j, "strip_right", false);
    return s;
  }
  fail("{}: normalizer type '{}' is not supported", file, type);
}

// ---- pre-tokenizers ----

PreTokenizer::PreTokenizer(const nlohmann::json& j, const std::string& file) {
  if (!j.is_null()) add(j, file);
  for (size_t k = 0; k < steps_.size(); ++k) {
    if (steps_[k].kind != Step::kByteLevel) continue;
    if (k + 1 != steps_.size())
      fail("{}: a ByteLevel pre-tokenizer followed by other pre-tokenizers is not supported", file);
    byte_level_ = true;
  }
}

void PreTokenizer::add(const nlohmann::json& j, const std::string& file) {
  std::string type = type_of(j, file, "pre_tokenizer");
  Step s;
  if (type == "Sequence") {
    if (!j.contains("pretokenizers") || !j["pretokenizers"].is_array()) fail("{}: pre_tokenizer Sequence without \"pretokenizers\"", file);
    for (auto& p : j["pretokenizers"]) add(p, file);
    return;
  }
  if (type == "Split") {
    s.kind = Step::kSplit;
    s.regex = make_pattern(j.at("pattern"), file, "Split pre-tokenizer");
    std::string b = j.at("behavior").get<std::string>();
    if (b == "Removed") s.behavior = Behavior::kRemoved;
    else if (b == "Isolated") s.behavior = Behavior::kIsolated;
    else if (b == "MergedWithPrevious") s.behavior = Behavior::kMergedWithPrevious;
    else if (b == "MergedWithNext") s.behavior = Behavior::kMergedWithNext;
    else if (b == "Contiguous") s.behavior = Behavior::kContiguous;
    else fail("{}: Split behavior '{}' is not supported", file, b);
    s.invert = get_or(j, "invert", false);
  } else if (type == "ByteLevel") {
    s.kind = Step::kByteLevel;
    s.add_prefix_space = get_or(j, "add_prefix_space", true);
    if (get_or(j, "use_regex", true))
      s.regex = std::make_unique<Regex>(R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)");
  } else if (type == "Digits") {
    s.kind = Step::kDigits;
    s.individual_digits = get_or(j, "individual_digits", false);
  } else if (type == "Metaspace") {
    s.kind = Step::kMetaspace;
    s.replacement = j.at("replacement").get<std::string>();
    const char* p = s.replacement.data();
    if (s.replacement.empty() || (next_code_point(p), p != s.replacement.data() + s.replacement.size()))
      fail("{}: Metaspace replacement must be one character", file);
    std::string scheme = get_or<std::string>(j, "prepend_scheme", "always");
    if (scheme == "always") s.prepend = Step::kAlways;
    else if (scheme == "first") s.prepend = Step::kFirst;
    else if (scheme == "never") s.prepend = Step::kNever;
    else fail("{}: Metaspace prepend_scheme '{}' is not supported", file, scheme);
    if (j.contains("add_prefix_space") && j["add_prefix_space"].is_boolean() && !j["add_prefix_space"].get<bool>()) {
      if (s.prepend != Step::kNever) fail("{}: Metaspace add_prefix_space does not match declared prepend_scheme", file);
    }
    s.split = get_or(j, "split", true);
  } else {
    fail("{}: pre_tokenizer type '{}' is not supported", file, type);
  }
  steps_.push_back(std::move(s));
}

void PreTokenizer::run(std::string_view text, bool at_origin, const BpeModel& model, std::vector<int32_t>& ids) const {
  step(0, text, at_origin, model, ids);
}

namespace {

// HF NormalizedString::split: turns spans into the kept pieces for a behavior.
template <class Behavior>
void apply_behavior(std::vector<Span>& spans, Behavior b, bool invert, std::vector<Span>& out) {
  if (invert)
    for (auto& s : spans) s.match = !s.match;
  out.clear();
  switch (int(b)) {
    case 0:  // Removed
      for (auto& s : spans)
        if (!s.match) out.push_back(s);
      return;
    case 1:  // Isolated
      out = spans;
      return;
    case 2: {  // MergedWithPrevious
      bool prev = false;
      for (auto& s : spans) {
        if (s.match && !prev && !out.empty())
          out.back().end = s.end;
        else
          out.push_back(s);
        prev = s.match;
      }
      return;
    }
    case 3: {  // MergedWithNext
      bool prev = false;
      for (size_t i = spans.size(); i-- > 0;) {
        const Span& s = spans[i];
        if (s.match && !prev && !out.empty())
          out.back().start = s.start;
        else
          out.push_back(s);
        prev = s.match;
      }
      std::reverse(out.begin(), out.end());
      return;
    }
    case 4: {  // Contiguous
      bool prev = false;
      for (auto& s : spans) {
        if (s.match == prev && !out.empty())
          out.back().end = s.end;
        else
          out.push_back(s);
        prev = s.match;
      }
      return;
    }
  }
}

bool is_numeric(char32_t c) {
  auto g = general_category(c);
  return g == kNd || g == kNl || g == kNo;
}

}  // namespace

void PreTokenizer::step(size_t k, std::string_view text, bool at_origin, const BpeModel& model, std::vector<int32_t>& ids) const {
  if (text.empty()) return;
  if (k == steps_.size()) {
    model.encode(text, byte_level_, ids);
    return;
  }
  // Scratch per depth: pieces of level k stay valid while deeper levels run.
  struct Level {
    std::vector<std::pair<uint32_t, uint32_t>> matches;
    std::vector<Span> spans, pieces;
    std::string buf;
  };
  thread_local std::vector<std::unique_ptr<Level>> levels;
  while (levels.size() <= k) levels.push_back(std::make_unique<Level>());
  Level& L = *levels[k];
  const Step& s = steps_[k];
  std::string_view t = text;
  Behavior behavior = s.behavior;
  bool invert = s.invert;
  L.matches.clear();

  switch (s.kind) {
    case Step::kSplit: s.regex->find_all(t, L.matches); break;
    case Step::kDigits: {
      for (const char* p = t.data(); p < t.data() + t.size();) {
        const char* q = p;
        if (is_numeric(next_code_point(q))) L.matches.push_back({uint32_t(p - t.data()), uint32_t(q - t.data())});
        p = q;
      }
      behavior = s.individual_digits ? Behavior::kIsolated : Behavior::kContiguous;
      invert = false;
      break;
    }
    case Step::kByteLevel: {
      if (s.add_prefix_space && t[0] != ' ') {
        L.buf.assign(" ");
        L.buf.append(t);
        t = L.buf;
      }
      if (!s.regex) {
        step(k + 1, t, at_origin, model, ids);
        return;
      }
      s.regex->find_all(t, L.matches);
      behavior = Behavior::kIsolated;
      invert = false;
      break;
    }
    case Step::kMetaspace: {
      L.buf.clear();
      for (char c : t) {
        if (c == ' ')
          L.buf += s.replacement;
        else
          L.buf.push_back(c);
      }
      bool starts = L.buf.compare(0, s.replacement.size(), s.replacement) == 0;
      if (!starts && (s.prepend == Step::kAlways || (s.prepend == Step::kFirst && at_origin))) L.buf.insert(0, s.replacement);
      t = L.buf;
      if (!s.split) {
        step(k + 1, t, at_origin, model, ids);
        return;
      }
      // Every replacement character is a match; MergedWithNext glues it to what follows.
      for (size_t pos = t.find(s.replacement); pos != std::string_view::npos; pos = t.find(s.replacement, pos + s.replacement.size()))
        L.matches.push_back({uint32_t(pos), uint32_t(pos + s.replacement.size())});
      behavior = Behavior::kMergedWithNext;
      invert = false;
      break;
    }
  }
  spans_from_matches(t, L.matches, L.spans);
  apply_behavior(L.spans, behavior, invert, L.pieces);
  for (size_t i = 0; i < L.pieces.size(); ++i) {
    const Span& p = L.pieces[i];
    if (p.end > p.start) step(k + 1, t.substr(p.start, p.end - p.start), at_origin && p.start == 0, model, ids);
  }
}

// ---- decoders ----

namespace {

class ByteLevelDecoder : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::string bytes;
    for (const std::string& t : tokens) {
      // A token made only of byte-level characters becomes those bytes; any other token keeps
      // its own UTF-8 bytes.
      size_t mark = bytes.size();
      bool all = true;
      for (const char* p = t.data(); p < t.data() + t.size();) {
        int b = byte_level_byte(next_code_point(p));
        if (b < 0) {
          all = false;
          break;
        }
        bytes.push_back(char(b));
      }
      if (!all) {
        bytes.resize(mark);
        bytes += t;
      }
    }
    tokens.assign(1, utf8_lossy(bytes));
  }
};

class SequenceDecoder : public Decoder {
 public:
  std::vector<std::unique_ptr<Decoder>> parts;
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (auto& p : parts) p->decode_chain(tokens);
  }
};

class ReplaceDecoder : public Decoder {
 public:
  std::unique_ptr<Regex> pattern;
  std::string content;
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::vector<std::pair<uint32_t, uint32_t>> m;
    for (std::string& t : tokens) {
      m.clear();
      pattern->find_all(t, m);
      if (m.empty()) continue;
      std::string out;
      uint32_t prev = 0;
      for (auto [a, b] : m) {
        out.append(t, prev, a - prev);
        out += content;
        prev = b;
      }
      out.append(t, prev, std::string::npos);
      t.swap(out);
    }
  }
};

class ByteFallbackDecoder : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::vector<std::string> out;
    std::string pending;
    auto flush = [&] {
      if (pending.empty()) return;
      if (find_invalid_utf8(pending) == std::string::npos)
        out.push_back(pending);
      else
        for (size_t i = 0; i < pending.size(); ++i) out.push_back("\xEF\xBF\xBD");
      pending.clear();
    };
    for (std::string& t : tokens) {
      int byte = -1;
      if (t.size() == 6 && t.compare(0, 3, "<0x") == 0 && t[5] == '>') byte = parse_hex_byte(t.substr(3, 2));
      if (byte >= 0) {
        pending.push_back(char(byte));
      } else {
        flush();
        out.push_back(std::move(t));
      }
    }
    flush();
    tokens.swap(out);
  }

 private:
  // Rust's u8::from_str_radix(s, 16): an optional '+' then hex digits.
  static int parse_hex_byte(const std::string& s) {
    size_t i = s[0] == '+' ? 1 : 0;
    if (i == s.size()) return -1;
    int v = 0;
    for (; i < s.size(); ++i) {
      char c = s[i];
      int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
      if (d < 0) return -1;
      v = v * 16 + d;
    }
    return v;
  }
};

class FuseDecoder : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::string all;
    for (auto& t : tokens) all += t;
    tokens.assign(1, std::move(all));
  }
};

class StripDecoder : public Decoder {
 public:
  char32_t content = ' ';
  size_t start = 0, stop = 0;
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (std::string& t : tokens) {
      std::u32string cps;
      for (const char* p = t.data(); p < t.data() + t.size();) cps.push_back(next_code_point(p));
      size_t a = 0;
      for (size_t i = 0; i < start && i < cps.size() && cps[i] == content; ++i) a = i + 1;
      size_t b = cps.size();
      for (size_t i = 0; i < stop && i < cps.size(); ++i) {
        size_t idx = cps.size() - i - 1;
        if (cps[idx] != content) break;
        b = idx;
      }
      std::string out;
      for (size_t i = a; i < b; ++i) append_utf8(out, cps[i]);
      t.swap(out);
    }
  }
};

class MetaspaceDecoder : public Decoder {
 public:
  char32_t replacement = 0x2581;
  bool prepend_never = false;
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (size_t i = 0; i < tokens.size(); ++i) {
      std::string out;
      for (const char* p = tokens[i].data(); p < tokens[i].data() + tokens[i].size();) {
        char32_t c = next_code_point(p);
        if (c == replacement) {
          if (i == 0 && !prepend_never) continue;
          out.push_back(' ');
        } else {
          append_utf8(out, c);
        }
      }
      tokens[i].swap(out);
    }
  }
};

char32_t single_char(const nlohmann::json& j, const char* key, const std::string& file, const char* what) {
  std::string s = j.at(key).get<std::string>();
  const char* p = s.data();
  char32_t c = s.empty() ? 0 : next_code_point(p);
  if (s.empty() || p != s.data() + s.size()) fail("{}: {} \"{}\" must be one character", file, what, key);
  return c;
}

}  // namespace

std::unique_ptr<Decoder> make_decoder(const nlohmann::json& j, const std::string& file) {
  if (j.is_null()) return nullptr;
  std::string type = type_of(j, file, "decoder");
  if (type == "ByteLevel") return std::make_unique<ByteLevelDecoder>();
  if (type == "Sequence") {
    auto seq = std::make_unique<SequenceDecoder>();
    if (!j.contains("decoders") || !j["decoders"].is_array()) fail("{}: decoder Sequence without \"decoders\"", file);
    for (auto& d : j["decoders"])
      if (auto p = make_decoder(d, file)) seq->parts.push_back(std::move(p));
    return seq;
  }
  if (type == "Replace") {
    auto r = std::make_unique<ReplaceDecoder>();
    r->pattern = make_pattern(j.at("pattern"), file, "Replace decoder");
    r->content = j.at("content").get<std::string>();
    return r;
  }
  if (type == "ByteFallback") return std::make_unique<ByteFallbackDecoder>();
  if (type == "Fuse") return std::make_unique<FuseDecoder>();
  if (type == "Strip") {
    auto s = std::make_unique<StripDecoder>();
    s->content = single_char(j, "content", file, "Strip decoder");
    s->start = get_or<size_t>(j, "start", 0);
    s->stop = get_or<size_t>(j, "stop", 0);
    return s;
  }
  if (type == "Metaspace") {
    auto m = std::make_unique<MetaspaceDecoder>();
    m->replacement = single_char(j, "replacement", file, "Metaspace decoder");
    std::string scheme = get_or<std::string>(j, "prepend_scheme", "always");
    bool add_prefix = get_or(j, "add_prefix_space", true);
    m->prepend_never = scheme == "never" || !add_prefix;
    return m;
  }
  fail("{}: decoder type '{}' is not supported", file, type);
}

}  // namespace esft::text
