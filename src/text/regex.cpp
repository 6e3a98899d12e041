// Backtracking regex engine with Oniguruma (Ruby syntax) semantics; see regex.h.
//
// Pipeline: the pattern is parsed into a tree (Parser), character classes are tabulated
// (CharClass), and the tree is compiled into a small instruction program run by a backtracking VM
// over decoded code points. A class is tabulated over the "class key" of a code point (its
// general category, White_Space and Alphabetic bits, see unicode.h) plus exact ranges for the
// code points a pattern names explicitly, so membership is a bitmap test.
#include "regex.h"

#include <algorithm>
#include <array>
#include <cstring>

#include "esft/error.h"
#include "unicode.h"

namespace esft::text {

namespace {

using Keys = std::array<uint64_t, 2>;  // a bit per class key (0..127)
constexpr char32_t kNoCodePoint = 0x110000;  // outside every explicit range

inline bool test_key(const Keys& k, uint8_t key) { return (k[key >> 6] >> (key & 63)) & 1; }
inline uint8_t class_key(char32_t cp) { return properties(cp) & prop::kClassKeyMask; }

template <class Pred>
Keys keys_where(Pred pred) {
  Keys k{0, 0};
  for (int key = 0; key < 128; ++key)
    if (pred(uint8_t(key))) k[key >> 6] |= uint64_t(1) << (key & 63);
  return k;
}

// ---- character sets as written in the pattern ----

struct CharSet {
  // The set is the AND of its terms (&& in a class); each term is a union.
  struct Term {
    std::vector<std::pair<char32_t, char32_t>> ranges;
    Keys keys{0, 0};
    std::vector<CharSet> nested;
  };
  bool negated = false;
  std::vector<Term> terms = std::vector<Term>(1);

  bool contains(char32_t cp, uint8_t key) const {
    bool all = true;
    for (const Term& t : terms) {
      bool in = test_key(t.keys, key);
      for (size_t i = 0; !in && i < t.ranges.size(); ++i) in = cp >= t.ranges[i].first && cp <= t.ranges[i].second;
      for (size_t i = 0; !in && i < t.nested.size(); ++i) in = t.nested[i].contains(cp, key);
      if (!in) {
        all = false;
        break;
      }
    }
    return all != negated;
  }
  void breakpoints(std::vector<char32_t>& out) const {
    for (const Term& t : terms) {
      for (auto& r : t.ranges) {
        out.push_back(r.first);
        out.push_back(r.second + 1);
      }
      for (auto& n : t.nested) n.breakpoints(out);
    }
  }
  bool has_keys() const {
    for (const Term& t : terms) {
      if (t.keys[0] || t.keys[1]) return true;
      for (auto& n : t.nested)
        if (n.has_keys()) return true;
    }
    return false;
  }
};

// ---- tabulated classes ----

struct CharClass {
  uint64_t ascii[2] = {0, 0};
  Keys dflt{0, 0};
  struct Segment {
    char32_t lo, hi;
    Keys keys;
  };
  std::vector<Segment> segs;  // sorted, disjoint: code points whose membership differs from dflt

  bool contains(char32_t cp, uint8_t key) const {
    if (cp < 128) return (ascii[cp >> 6] >> (cp & 63)) & 1;
    const Keys* k = &dflt;
    if (!segs.empty()) {
      size_t lo = 0, hi = segs.size();
      while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (segs[mid].hi < cp)
          lo = mid + 1;
        else
          hi = mid;
      }
      if (lo < segs.size() && segs[lo].lo <= cp) k = &segs[lo].keys;
    }
    return test_key(*k, key);
  }

  template <class Pred>
  static CharClass build(Pred contains, std::vector<char32_t> bp) {
    CharClass c;
    for (char32_t cp = 0; cp < 128; ++cp)
      if (contains(cp, class_key(cp))) c.ascii[cp >> 6] |= uint64_t(1) << (cp & 63);
    c.dflt = keys_where([&](uint8_t key) { return contains(kNoCodePoint, key); });
    bp.push_back(128);
    bp.push_back(kNoCodePoint);
    std::sort(bp.begin(), bp.end());
    bp.erase(std::unique(bp.begin(), bp.end()), bp.end());
    for (size_t i = 0; i + 1 < bp.size(); ++i) {
      char32_t lo = bp[i], hi = bp[i + 1] - 1;
      if (lo < 128 || lo >= kNoCodePoint) continue;
      Keys k = keys_where([&](uint8_t key) { return contains(lo, key); });
      if (k == c.dflt) continue;
      if (!c.segs.empty() && c.segs.back().hi + 1 == lo && c.segs.back().keys == k)
        c.segs.back().hi = hi;
      else
        c.segs.push_back({lo, hi, k});
    }
    return c;
  }
  void breakpoints(std::vector<char32_t>& out) const {
    for (auto& s : segs) {
      out.push_back(s.lo);
      out.push_back(s.hi + 1);
    }
  }
};

// ---- syntax tree ----

struct Node {
  enum Kind { kEmpty, kSet, kConcat, kAlt, kRepeat, kLook, kAtomic, kAssert } kind = kEmpty;
  enum Mode { kGreedy, kLazy, kPossessive } mode = kGreedy;
  int cls = -1;                      // kSet: index of the CharClass
  std::vector<std::unique_ptr<Node>> kids;
  int min = 0, max = -1;             // kRepeat; max -1: unbounded
  bool negative = false;             // kLook
  char assertion = 0;                // kAssert: ^ $ A z Z b B
  char32_t literal = 0;              // kSet made from a literal under (?i), for the multi-fold check
  bool icase_literal = false;

  explicit Node(Kind k) : kind(k) {}
};
using NodePtr = std::unique_ptr<Node>;

bool nullable(const Node& n) {
  switch (n.kind) {
    case Node::kSet: return false;
    case Node::kConcat:
      for (auto& k : n.kids)
        if (!nullable(*k)) return false;
      return true;
    case Node::kAlt:
      for (auto& k : n.kids)
        if (nullable(*k)) return true;
      return false;
    case Node::kRepeat: return n.min == 0 || nullable(*n.kids[0]);
    case Node::kAtomic: return nullable(*n.kids[0]);
    default: return true;  // empty, lookaround, assertion
  }
}

// ---- parser ----

class Parser {
 public:
  Parser(std::string_view utf8, std::vector<CharSet>& sets) : pattern_(utf8), sets_(sets) {
    for (const char* q = utf8.data(); q < utf8.data() + utf8.size();) p_.push_back(next_code_point(q));
  }

  NodePtr parse() {
    NodePtr n = parse_alt(false);
    if (i_ < p_.size()) error("unmatched ')'");
    return n;
  }

 private:
  std::string_view pattern_;
  std::u32string p_;
  size_t i_ = 0;
  std::vector<CharSet>& sets_;

  [[noreturn]] void error(const std::string& what) const {
    fail("regex /{}/: {} (at character {})", pattern_, what, i_);
  }
  bool at_end() const { return i_ >= p_.size(); }
  char32_t peek(size_t k = 0) const { return i_ + k < p_.size() ? p_[i_ + k] : 0; }

  NodePtr set_node(CharSet s) {
    sets_.push_back(std::move(s));
    auto n = std::make_unique<Node>(Node::kSet);
    n->cls = int(sets_.size() - 1);
    return n;
  }

  static CharSet single(char32_t lo, char32_t hi) {
    CharSet s;
    s.terms[0].ranges.push_back({lo, hi});
    return s;
  }

  // Adds the case variants of every explicit range (case-insensitive matching of classes).
  static void add_case_variants(CharSet& s) {
    for (CharSet::Term& t : s.terms) {
      std::vector<std::pair<char32_t, char32_t>> extra;
      for (auto& r : t.ranges) {
        auto in = [&](char32_t c) { return c >= r.first && c <= r.second; };
        for (auto& [cp, fold] : simple_fold_pairs())
          if (in(cp) || in(fold))
            for (char32_t v : case_orbit(fold))
              if (!in(v)) extra.push_back({v, v});
      }
      t.ranges.insert(t.ranges.end(), extra.begin(), extra.end());
      for (auto& n : t.nested) add_case_variants(n);
    }
  }

  NodePtr literal(char32_t c, bool icase) {
    if (!icase) return set_node(single(c, c));
    if (!multi_char_fold(c).empty())
      error(fmt::format("case-insensitive U+{:04X} folds to several characters; not supported", uint32_t(c)));
    CharSet s;
    for (char32_t v : case_orbit(c)) s.terms[0].ranges.push_back({v, v});
    s.terms[0].ranges.push_back({c, c});
    NodePtr n = set_node(std::move(s));
    n->literal = c;
    n->icase_literal = true;
    return n;
  }

  // alternation := concat ('|' concat)*
  NodePtr parse_alt(bool icase) {
    auto alt = std::make_unique<Node>(Node::kAlt);
    alt->kids.push_back(parse_concat(icase));
    while (peek() == '|') {
      ++i_;
      alt->kids.push_back(parse_concat(icase));
    }
    if (alt->kids.size() == 1) return std::move(alt->kids[0]);
    return alt;
  }

  NodePtr parse_concat(bool icase) {
    auto cat = std::make_unique<Node>(Node::kConcat);
    while (!at_end() && peek() != '|' && peek() != ')') {
      // An inline option (?i) applies to the rest of the enclosing group, alternatives included:
      // onig reads a(?i)b|c as a(?i:b|c).
      if (peek() == '(' && peek(1) == '?') {
        size_t save = i_;
        i_ += 2;
        bool on = icase;
        if (parse_flags(on) && peek() == ')') {
          ++i_;
          cat->kids.push_back(parse_alt(on));
          break;
        }
        i_ = save;
      }
      NodePtr atom = parse_atom(icase);
      cat->kids.push_back(parse_quantifiers(std::move(atom)));
    }
    check_multi_fold(*cat);
    if (cat->kids.size() == 1) return std::move(cat->kids[0]);
    if (cat->kids.empty()) return std::make_unique<Node>(Node::kEmpty);
    return cat;
  }

  // Oniguruma folds whole strings: (?i:ss) matches U+00DF. This engine compares one code point at
  // a time, so refuse any literal run that such a folding could match.
  void check_multi_fold(const Node& cat) {
    std::u32string run;
    auto flush = [&] {
      if (run.size() >= 2)
        for (char32_t cp : multi_char_fold_code_points()) {
          std::u32string f = multi_char_fold(cp);
          for (auto& c : f) c = simple_fold(c);
          if (run.find(f) != std::u32string::npos)
            error(fmt::format("case-insensitive literal could match U+{:04X} through multi-character case "
                              "folding; not supported",
                              uint32_t(cp)));
        }
      run.clear();
    };
    for (auto& k : cat.kids) {
      if (k->kind == Node::kSet && k->icase_literal)
        run.push_back(simple_fold(k->literal));
      else
        flush();
    }
    flush();
  }

  // Parses option letters after "(?"; returns false if what follows is not an option group.
  bool parse_flags(bool& icase) {
    bool on = true, any = false;
    while (!at_end()) {
      char32_t c = peek();
      if (c == '-') {
        on = false;
      } else if (c == 'i') {
        icase = on;
      } else if (c == 'm' || c == 'x') {
        error(fmt::format("option (?{}) is not supported", char(c)));
      } else {
        break;
      }
      any = true;
      ++i_;
    }
    return any;
  }

  NodePtr parse_atom(bool icase) {
    char32_t c = peek();
    switch (c) {
      case '(': return parse_group(icase);
      case '[': {
        ++i_;
        CharSet s = parse_class(icase);
        return set_node(std::move(s));
      }
      case '.': {
        ++i_;
        CharSet s = single('\n', '\n');
        s.negated = true;
        return set_node(std::move(s));
      }
      case '^':
      case '$': {
        ++i_;
        auto n = std::make_unique<Node>(Node::kAssert);
        n->assertion = char(c);
        return n;
      }
      case '*':
      case '+':
      case '?': error("target of repeat operator is not specified");
      case '\\': return parse_escape(icase);
      default: ++i_; return literal(c, icase);
    }
  }

  NodePtr parse_group(bool icase) {
    ++i_;  // (
    if (peek() != '?') {
      NodePtr n = parse_alt(icase);
      expect_close();
      return n;
    }
    ++i_;
    char32_t c = peek();
    if (c == ':') {
      ++i_;
      NodePtr n = parse_alt(icase);
      expect_close();
      return n;
    }
    if (c == '=' || c == '!' || c == '>') {
      ++i_;
      auto n = std::make_unique<Node>(c == '>' ? Node::kAtomic : Node::kLook);
      n->negative = c == '!';
      n->kids.push_back(parse_alt(icase));
      expect_close();
      return n;
    }
    if (c == '<' && (peek(1) == '=' || peek(1) == '!')) error("lookbehind is not supported");
    if (c == '<' || c == '\'') {  // named group: matches like a plain group
      char32_t close = c == '<' ? '>' : '\'';
      while (!at_end() && peek() != close) ++i_;
      if (at_end()) error("unterminated group name");
      ++i_;
      NodePtr n = parse_alt(icase);
      expect_close();
      return n;
    }
    if (c == '#') {
      while (!at_end() && peek() != ')') ++i_;
      expect_close();
      return std::make_unique<Node>(Node::kEmpty);
    }
    bool on = icase;
    if (parse_flags(on) && peek() == ':') {
      ++i_;
      NodePtr n = parse_alt(on);
      expect_close();
      return n;
    }
    error("unsupported group syntax");
  }

  void expect_close() {
    if (peek() != ')') error("missing ')'");
    ++i_;
  }

  bool parse_number(int& out) {
    size_t start = i_;
    long v = 0;
    while (peek() >= '0' && peek() <= '9') {
      v = v * 10 + (peek() - '0');
      if (v > 100000) error("repeat count too large");
      ++i_;
    }
    out = int(v);
    return i_ > start;
  }

  // Reads {n}, {n,}, {,m}, {n,m}; leaves i_ unchanged and returns false when '{' is a literal.
  bool parse_interval(int& lo, int& hi) {
    size_t save = i_;
    ++i_;
    bool has_lo = parse_number(lo);
    if (!has_lo) lo = 0;
    if (peek() == '}') {
      if (!has_lo) {
        i_ = save;
        return false;
      }
      ++i_;
      hi = lo;
      return true;
    }
    if (peek() != ',') {
      i_ = save;
      return false;
    }
    ++i_;
    bool has_hi = parse_number(hi);
    if (!has_hi) hi = -1;
    if (peek() != '}' || (!has_lo && !has_hi)) {
      i_ = save;
      return false;
    }
    ++i_;
    if (hi >= 0 && hi < lo) error("upper bound of repeat is below lower bound");
    return true;
  }

  NodePtr parse_quantifiers(NodePtr atom) {
    for (;;) {
      char32_t c = peek();
      int lo, hi;
      bool interval = false;
      if (c == '*') {
        lo = 0, hi = -1;
      } else if (c == '+') {
        lo = 1, hi = -1;
      } else if (c == '?') {
        lo = 0, hi = 1;
      } else if (c == '{' && parse_interval(lo, hi)) {
        interval = true;
      } else {
        return atom;
      }
      if (!interval) ++i_;
      if (atom->kind == Node::kAssert || atom->kind == Node::kLook)
        error("target of repeat operator is invalid");
      auto rep = std::make_unique<Node>(Node::kRepeat);
      rep->min = lo;
      rep->max = hi;
      if (peek() == '?') {
        rep->mode = Node::kLazy;
        ++i_;
      } else if (peek() == '+' && !interval) {  // Ruby syntax: {n,m}+ is a nested repeat
        rep->mode = Node::kPossessive;
        ++i_;
      }
      if ((hi == -1 || hi > 1) && nullable(*atom))
        error("repeated sub-expression can match the empty string; not supported");
      rep->kids.push_back(std::move(atom));
      atom = std::move(rep);
    }
  }

  static int hex_value(char32_t c) {
    if (c >= '0' && c <= '9') return int(c - '0');
    if (c >= 'a' && c <= 'f') return int(c - 'a' + 10);
    if (c >= 'A' && c <= 'F') return int(c - 'A' + 10);
    return -1;
  }

  char32_t parse_hex(int min_digits, int max_digits) {
    char32_t v = 0;
    int n = 0;
    while (n < max_digits && hex_value(peek()) >= 0) {
      v = v * 16 + hex_value(peek());
      ++i_;
      ++n;
    }
    if (n < min_digits) error("invalid hexadecimal escape");
    if (v >= 0x110000 || (v >= 0xD800 && v <= 0xDFFF)) error("invalid code point in escape");
    return v;
  }

  // Escapes that stand for one code point, shared by atoms and classes. Returns false when the
  // escape is something else (a class or assertion) and leaves i_ on its letter.
  bool escaped_code_point(char32_t& out, bool in_class) {
    char32_t c = peek();
    switch (c) {
      case 't': out = '\t'; break;
      case 'n': out = '\n'; break;
      case 'r': out = '\r'; break;
      case 'f': out = '\f'; break;
      case 'v': out = '\v'; break;
      case 'a': out = 7; break;
      case 'e': out = 27; break;
      case 'b':
        if (!in_class) return false;
        out = 8;
        break;
      case 'x':
        ++i_;
        if (peek() == '{') {
          ++i_;
          out = parse_hex(1, 8);
          if (peek() != '}') error("unterminated \\x{...}");
          ++i_;
        } else {
          out = parse_hex(1, 2);
        }
        return true;
      case 'u':
        ++i_;
        out = parse_hex(4, 4);
        return true;
      case '0': {
        ++i_;
        char32_t v = 0;
        for (int n = 0; n < 2 && peek() >= '0' && peek() <= '7'; ++n, ++i_) v = v * 8 + (peek() - '0');
        out = v;
        return true;
      }
      default:
        if ((c >= '1' && c <= '9') || c == 'k' || c == 'g') error("backreferences and subexpression calls are not supported");
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) return false;
        out = c;  // escaped punctuation or other literal
        break;
    }
    ++i_;
    return true;
  }

  NodePtr parse_escape(bool icase) {
    ++i_;  // backslash
    if (at_end()) error("trailing backslash");
    char32_t c = peek();
    if (c == 'A' || c == 'z' || c == 'Z' || c == 'b' || c == 'B') {
      ++i_;
      auto n = std::make_unique<Node>(Node::kAssert);
      n->assertion = char(c);
      return n;
    }
    char32_t cp;
    if (escaped_code_point(cp, false)) return literal(cp, icase);
    CharSet s;
    if (!class_escape(s, icase)) error(fmt::format("unsupported escape \\{}", char(c)));
    return set_node(std::move(s));
  }

  // \d \s \w \h (and negations) and \p{..}: fills s. Returns false if the escape is not one.
  bool class_escape(CharSet& s, bool icase) {
    char32_t c = peek();
    auto gc_of = [](uint8_t key) { return GeneralCategory(key & prop::kCategoryMask); };
    switch (c) {
      case 'd':
      case 'D':
        s.terms[0].keys = keys_where([&](uint8_t k) { return gc_of(k) == kNd; });
        break;
      case 's':
      case 'S':
        s.terms[0].keys = keys_where([](uint8_t k) { return (k & prop::kWhiteSpace) != 0; });
        break;
      case 'w':
      case 'W':
        // Oniguruma's Word: Alphabetic, Mark, Decimal_Number, Connector_Punctuation, plus the
        // Latin-1 digits/fractions its ISO-8859-1 ctype table marks as word characters.
        s.terms[0].keys = keys_where([&](uint8_t k) {
          auto g = gc_of(k);
          return (k & prop::kAlphabetic) || g == kMn || g == kMc || g == kMe || g == kNd || g == kPc;
        });
        s.terms[0].ranges = {{0xB2, 0xB3}, {0xB9, 0xB9}, {0xBC, 0xBE}};
        break;
      case 'h':
      case 'H':
        s.terms[0].ranges = {{'0', '9'}, {'a', 'f'}, {'A', 'F'}};
        break;
      case 'p':
      case 'P': {
        ++i_;
        if (peek() != '{') error("\\p must be followed by {name}");
        ++i_;
        bool neg = c == 'P';
        if (peek() == '^') {
          neg = !neg;
          ++i_;
        }
        std::string name;
        while (!at_end() && peek() != '}') {
          char32_t ch = peek();
          if (ch != ' ' && ch != '_' && ch != '-') name.push_back(char(std::tolower(int(ch & 0x7F))));
          ++i_;
        }
        if (at_end()) error("unterminated \\p{...}");
        ++i_;
        if (icase) error(fmt::format("\\p{{{}}} inside a case-insensitive group is not supported", name));
        s.terms[0].keys = property_keys(name);
        s.negated = neg;
        return true;
      }
      default: return false;
    }
    s.negated = c >= 'A' && c <= 'Z';
    ++i_;
    if (icase && (c == 'w' || c == 'W')) error("\\w inside a case-insensitive group is not supported");
    return true;
  }

  Keys property_keys(const std::string& name) {
    static const std::pair<const char*, const char*> kAliases[] = {
        {"letter", "l"}, {"casedletter", "lc"}, {"l&", "lc"}, {"uppercaseletter", "lu"},
        {"lowercaseletter", "ll"}, {"titlecaseletter", "lt"}, {"modifierletter", "lm"},
        {"otherletter", "lo"}, {"mark", "m"}, {"combiningmark", "m"}, {"nonspacingmark", "mn"},
        {"spacingmark", "mc"}, {"enclosingmark", "me"}, {"number", "n"}, {"decimalnumber", "nd"},
        {"letternumber", "nl"}, {"othernumber", "no"}, {"punctuation", "p"}, {"punct", "p"},
        {"connectorpunctuation", "pc"}, {"dashpunctuation", "pd"}, {"openpunctuation", "ps"},
        {"closepunctuation", "pe"}, {"initialpunctuation", "pi"}, {"finalpunctuation", "pf"},
        {"otherpunctuation", "po"}, {"symbol", "s"}, {"mathsymbol", "sm"}, {"currencysymbol", "sc"},
        {"modifiersymbol", "sk"}, {"othersymbol", "so"}, {"separator", "z"}, {"spaceseparator", "zs"},
        {"lineseparator", "zl"}, {"paragraphseparator", "zp"}, {"other", "c"}, {"control", "cc"},
        {"format", "cf"}, {"surrogate", "cs"}, {"privateuse", "co"}, {"unassigned", "cn"},
        {"whitespace", "space"}, {"alphabetic", "alpha"}};
    std::string n = name;
    for (auto& [from, to] : kAliases)
      if (n == from) n = to;
    static const char* kCodes[] = {"cn", "lu", "ll", "lt", "lm", "lo", "mn", "mc", "me", "nd",
                                   "nl", "no", "pc", "pd", "ps", "pe", "pi", "pf", "po", "sm",
                                   "sc", "sk", "so", "zs", "zl", "zp", "cc", "cf", "cs", "co"};
    auto gc = [](uint8_t key) {
      uint8_t g = key & prop::kCategoryMask;
      return g < kNumCategories ? std::string(kCodes[g]) : std::string("--");  // 30, 31: unused
    };
    if (n == "any") return keys_where([](uint8_t) { return true; });
    if (n == "space") return keys_where([](uint8_t k) { return (k & prop::kWhiteSpace) != 0; });
    if (n == "alpha") return keys_where([](uint8_t k) { return (k & prop::kAlphabetic) != 0; });
    if (n == "lc") return keys_where([&](uint8_t k) { auto g = gc(k); return g == "lu" || g == "ll" || g == "lt"; });
    if (n.size() == 1 && std::strchr("lmnpszc", n[0]))
      return keys_where([&](uint8_t k) { return gc(k)[0] == n[0]; });
    for (const char* code : kCodes)
      if (n == code) return keys_where([&](uint8_t k) { return gc(k) == n; });
    error(fmt::format("unicode property \\p{{{}}} is not supported", name));
  }

  // After '[': items up to the matching ']'.
  CharSet parse_class(bool icase) {
    CharSet s;
    if (peek() == '^') {
      s.negated = true;
      ++i_;
    }
    bool first = true;
    for (;;) {
      if (at_end()) error("premature end of character class");
      char32_t c = peek();
      if (c == ']' && !first) {
        ++i_;
        break;
      }
      first = false;
      if (c == '&' && peek(1) == '&') {
        i_ += 2;
        s.terms.emplace_back();
        continue;
      }
      if (c == '[') {
        if (peek(1) == ':') error("POSIX bracket expressions are not supported");
        ++i_;
        s.terms.back().nested.push_back(parse_class(icase));
        continue;
      }
      char32_t lo;
      if (!class_atom(s, lo, icase)) continue;  // it was a class escape, already added
      // A range lo-hi, unless '-' is last or precedes a class escape.
      if (peek() == '-' && peek(1) != ']' && peek(1) != 0) {
        size_t save = i_;
        ++i_;
        char32_t hi;
        CharSet dummy;
        if (peek() == '[' || (peek() == '&' && peek(1) == '&')) {
          i_ = save;
        } else if (class_atom(dummy, hi, icase)) {
          if (hi < lo) error("empty range in character class");
          s.terms.back().ranges.push_back({lo, hi});
          continue;
        } else {
          error("invalid range in character class");
        }
      }
      s.terms.back().ranges.push_back({lo, lo});
    }
    if (icase) add_case_variants(s);
    return s;
  }

  // One class element: a code point (returns true, sets cp) or a class escape (adds it to s).
  bool class_atom(CharSet& s, char32_t& cp, bool icase) {
    char32_t c = peek();
    if (c != '\\') {
      ++i_;
      cp = c;
      return true;
    }
    ++i_;
    if (at_end()) error("trailing backslash");
    if (escaped_code_point(cp, true)) return true;
    CharSet sub;
    if (!class_escape(sub, icase)) error(fmt::format("unsupported escape \\{} in character class", char(peek())));
    s.terms.back().nested.push_back(std::move(sub));
    return false;
  }
};

// ---- program ----

enum Op : uint8_t { kOpClass, kOpRepeatClass, kOpSplit, kOpJmp, kOpMatch, kOpAssert, kOpLook, kOpAtomic };

struct Inst {
  Op op;
  uint8_t mode = 0;    // kOpRepeatClass: Node::Mode; kOpLook: 1 = negative; kOpAssert: kind
  uint32_t x = 0;      // class index / jump target / preferred branch / body start
  uint32_t y = 0;      // alternative branch / continuation after a sub-program
  uint32_t min = 0, max = 0;
};

constexpr uint32_t kUnbounded = 0xFFFFFFFF;

class Compiler {
 public:
  explicit Compiler(std::vector<Inst>& prog, const std::string& pattern) : prog_(prog), pattern_(pattern) {}

  void emit(const Node& n) {
    if (prog_.size() > 200000) fail("regex /{}/: pattern too large once repeats are expanded", pattern_);
    switch (n.kind) {
      case Node::kEmpty: break;
      case Node::kSet: push({kOpClass, 0, uint32_t(n.cls)}); break;
      case Node::kConcat:
        for (auto& k : n.kids) emit(*k);
        break;
      case Node::kAlt: {
        std::vector<size_t> jumps;
        for (size_t b = 0; b < n.kids.size(); ++b) {
          size_t split = 0;
          bool last = b + 1 == n.kids.size();
          if (!last) split = push({kOpSplit});
          if (!last) prog_[split].x = uint32_t(prog_.size());
          emit(*n.kids[b]);
          if (!last) {
            jumps.push_back(push({kOpJmp}));
            prog_[split].y = uint32_t(prog_.size());
          }
        }
        for (size_t j : jumps) prog_[j].x = uint32_t(prog_.size());
        break;
      }
      case Node::kRepeat: emit_repeat(n); break;
      case Node::kLook:
      case Node::kAtomic: {
        size_t at = push({n.kind == Node::kLook ? kOpLook : kOpAtomic, uint8_t(n.negative ? 1 : 0)});
        prog_[at].x = uint32_t(prog_.size());
        emit(*n.kids[0]);
        push({kOpMatch});
        prog_[at].y = uint32_t(prog_.size());
        break;
      }
      case Node::kAssert: push({kOpAssert, uint8_t(n.assertion)}); break;
    }
  }

 private:
  std::vector<Inst>& prog_;
  const std::string& pattern_;

  size_t push(Inst i) {
    prog_.push_back(i);
    return prog_.size() - 1;
  }

  void emit_repeat(const Node& n) {
    const Node& body = *n.kids[0];
    if (body.kind == Node::kSet) {
      push({kOpRepeatClass, uint8_t(n.mode), uint32_t(body.cls), 0, uint32_t(n.min),
            n.max < 0 ? kUnbounded : uint32_t(n.max)});
      return;
    }
    if (n.mode == Node::kPossessive) {  // x*+ == (?>x*)
      size_t at = push({kOpAtomic});
      prog_[at].x = uint32_t(prog_.size());
      Node greedy(Node::kRepeat);
      greedy.min = n.min;
      greedy.max = n.max;
      emit_loop(greedy, body);
      push({kOpMatch});
      prog_[at].y = uint32_t(prog_.size());
      return;
    }
    emit_loop(n, body);
  }

  void emit_loop(const Node& n, const Node& body) {
    bool lazy = n.mode == Node::kLazy;
    for (int k = 0; k < n.min; ++k) emit(body);
    if (n.max < 0) {
      size_t split = push({kOpSplit});
      size_t body_at = prog_.size();
      emit(body);
      push({kOpJmp, 0, uint32_t(split)});
      size_t end = prog_.size();
      prog_[split].x = uint32_t(lazy ? end : body_at);
      prog_[split].y = uint32_t(lazy ? body_at : end);
      return;
    }
    std::vector<size_t> splits;
    for (int k = n.min; k < n.max; ++k) {
      splits.push_back(push({kOpSplit}));
      prog_[splits.back()].x = uint32_t(prog_.size());  // body (patched below for lazy)
      emit(body);
    }
    size_t end = prog_.size();
    for (size_t s : splits) {
      uint32_t body_at = prog_[s].x;
      prog_[s].x = uint32_t(lazy ? end : body_at);
      prog_[s].y = uint32_t(lazy ? body_at : end);
    }
  }
};

// Collects the classes a match of n can start with; returns true when n can match without
// consuming anything (then what follows n may start the match too). A true result for the
// whole pattern means any position may start a match, so no first-character filter is used.
bool first_classes(const Node& n, std::vector<int>& out) {
  switch (n.kind) {
    case Node::kSet: out.push_back(n.cls); return false;
    case Node::kConcat:
      for (auto& k : n.kids)
        if (!first_classes(*k, out)) return false;
      return true;
    case Node::kAlt: {
      bool any = false;
      for (auto& k : n.kids) any |= first_classes(*k, out);
      return any;
    }
    case Node::kRepeat: {
      bool body = first_classes(*n.kids[0], out);
      return body || n.min == 0;
    }
    case Node::kAtomic: return first_classes(*n.kids[0], out);
    default: return true;  // empty, lookaround, assertions: transparent (a superset is fine)
  }
}

// Per-thread scratch: the decoded text and the backtracking stack.
struct Scratch {
  std::vector<char32_t> cps;
  std::vector<uint8_t> keys;
  std::vector<uint32_t> offs;
  struct Frame {
    uint32_t pc, pos, lo;  // lo: lowest position of a pending class-repeat range
    uint8_t kind;          // 0 plain, 1 greedy range (pos descending to lo), 2 lazy range (pos up to lo)
  };
  std::vector<Frame> stack;
};

}  // namespace

struct Regex::Impl {
  std::string pattern;
  std::vector<CharClass> classes;
  std::vector<Inst> prog;
  bool has_first = false;
  CharClass first;

  int64_t run(Scratch& s, uint32_t pc, uint32_t pos) const;
  bool check_assert(const Scratch& s, char kind, uint32_t pos) const;
  bool is_word(const Scratch& s, uint32_t pos) const;
};

bool Regex::Impl::is_word(const Scratch& s, uint32_t pos) const {
  char32_t c = s.cps[pos];
  if (c == 0xB2 || c == 0xB3 || c == 0xB9 || (c >= 0xBC && c <= 0xBE)) return true;
  uint8_t k = s.keys[pos];
  auto g = GeneralCategory(k & prop::kCategoryMask);
  return (k & prop::kAlphabetic) || g == kMn || g == kMc || g == kMe || g == kNd || g == kPc;
}

bool Regex::Impl::check_assert(const Scratch& s, char kind, uint32_t pos) const {
  uint32_t n = uint32_t(s.cps.size());
  switch (kind) {
    case '^': return pos == 0 || s.cps[pos - 1] == '\n';
    case '$': return pos == n || s.cps[pos] == '\n';
    case 'A': return pos == 0;
    case 'z': return pos == n;
    case 'Z': return pos == n || (pos + 1 == n && s.cps[pos] == '\n');
    case 'b':
    case 'B': {
      bool before = pos > 0 && is_word(s, pos - 1);
      bool after = pos < n && is_word(s, pos);
      return (before != after) == (kind == 'b');
    }
  }
  return false;
}

// Runs the program from pc at pos; returns the end position of the first match in priority
// order, or -1. Sub-programs (lookahead, atomic groups) recurse and end at their kOpMatch.
int64_t Regex::Impl::run(Scratch& s, uint32_t pc, uint32_t pos) const {
  const size_t base = s.stack.size();
  const uint32_t n = uint32_t(s.cps.size());
  const char32_t* cps = s.cps.data();
  const uint8_t* keys = s.keys.data();
  for (;;) {
    const Inst& in = prog[pc];
    bool ok = true;
    switch (in.op) {
      case kOpClass:
        if (pos < n && classes[in.x].contains(cps[pos], keys[pos])) {
          ++pos;
          ++pc;
        } else {
          ok = false;
        }
        break;
      case kOpRepeatClass: {
        const CharClass& cls = classes[in.x];
        uint32_t limit = in.max == kUnbounded ? n - pos : std::min(in.max, n - pos);
        if (in.mode == Node::kLazy) {
          uint32_t k = 0;
          while (k < in.min && k < limit && cls.contains(cps[pos + k], keys[pos + k])) ++k;
          if (k < in.min) {
            ok = false;
            break;
          }
          // Remember how far the class could extend, lazily.
          uint32_t far = pos + k;
          while (far - pos < limit && cls.contains(cps[far], keys[far])) ++far;
          if (far > pos + k) s.stack.push_back({pc + 1, pos + k + 1, far, 2});
          pos += k;
          ++pc;
          break;
        }
        uint32_t k = 0;
        while (k < limit && cls.contains(cps[pos + k], keys[pos + k])) ++k;
        if (k < in.min) {
          ok = false;
          break;
        }
        if (in.mode == Node::kGreedy && k > in.min) s.stack.push_back({pc + 1, pos + k - 1, pos + in.min, 1});
        pos += k;
        ++pc;
        break;
      }
      case kOpSplit:
        s.stack.push_back({in.y, pos, 0, 0});
        pc = in.x;
        break;
      case kOpJmp: pc = in.x; break;
      case kOpMatch: s.stack.resize(base); return pos;
      case kOpAssert:
        if (check_assert(s, char(in.mode), pos))
          ++pc;
        else
          ok = false;
        break;
      case kOpLook: {
        bool matched = run(s, in.x, pos) >= 0;
        if (matched != (in.mode == 1))
          pc = in.y;
        else
          ok = false;
        break;
      }
      case kOpAtomic: {
        int64_t end = run(s, in.x, pos);
        if (end >= 0) {
          pos = uint32_t(end);
          pc = in.y;
        } else {
          ok = false;
        }
        break;
      }
    }
    if (ok) continue;
    // Backtrack.
    for (;;) {
      if (s.stack.size() == base) return -1;
      Scratch::Frame& f = s.stack.back();
      if (f.kind == 0) {
        pc = f.pc;
        pos = f.pos;
        s.stack.pop_back();
      } else if (f.kind == 1) {  // greedy class repeat gives back one code point
        pc = f.pc;
        pos = f.pos;
        if (f.pos == f.lo)
          s.stack.pop_back();
        else
          --f.pos;
      } else {  // lazy class repeat takes one more
        pc = f.pc;
        pos = f.pos;
        if (f.pos == f.lo)
          s.stack.pop_back();
        else
          ++f.pos;
      }
      break;
    }
  }
}

Regex::Regex(std::string_view pattern) : impl_(std::make_unique<Impl>()) {
  impl_->pattern = std::string(pattern);
  if (find_invalid_utf8(pattern) != std::string_view::npos) fail("regex /{}/: pattern is not valid UTF-8", pattern);
  std::vector<CharSet> sets;
  Parser parser(pattern, sets);
  NodePtr tree = parser.parse();
  for (const CharSet& s : sets) {
    std::vector<char32_t> bp;
    s.breakpoints(bp);
    impl_->classes.push_back(CharClass::build([&](char32_t cp, uint8_t key) { return s.contains(cp, key); }, bp));
  }
  Compiler(impl_->prog, impl_->pattern).emit(*tree);
  impl_->prog.push_back({kOpMatch});

  std::vector<int> firsts;
  if (!first_classes(*tree, firsts)) {
    std::sort(firsts.begin(), firsts.end());
    firsts.erase(std::unique(firsts.begin(), firsts.end()), firsts.end());
    std::vector<char32_t> bp;
    for (int c : firsts) impl_->classes[c].breakpoints(bp);
    impl_->first = CharClass::build(
        [&](char32_t cp, uint8_t key) {
          for (int c : firsts) {
            const CharClass& cls = impl_->classes[c];
            // Evaluate through the tabulated class; kNoCodePoint stands for "no explicit range".
            bool in = cp == kNoCodePoint ? test_key(cls.dflt, key) : cls.contains(cp, key);
            if (in) return true;
          }
          return false;
        },
        bp);
    impl_->has_first = true;
  }
}

Regex::~Regex() = default;
Regex::Regex(Regex&&) noexcept = default;
Regex& Regex::operator=(Regex&&) noexcept = default;

const std::string& Regex::pattern() const { return impl_->pattern; }

void Regex::find_all(std::string_view text, std::vector<std::pair<uint32_t, uint32_t>>& out) const {
  thread_local Scratch s;
  s.cps.clear();
  s.keys.clear();
  s.offs.clear();
  for (const char* p = text.data(); p < text.data() + text.size();) {
    s.offs.push_back(uint32_t(p - text.data()));
    char32_t c = next_code_point(p);
    s.cps.push_back(c);
    s.keys.push_back(class_key(c));
  }
  s.offs.push_back(uint32_t(text.size()));
  const Impl& im = *impl_;
  const uint32_t n = uint32_t(s.cps.size());
  uint32_t last_end = 0;
  int64_t last_match_end = -1;
  while (last_end <= n) {
    int64_t start = -1, end = -1;
    for (uint32_t at = last_end; at <= n; ++at) {
      if (im.has_first && (at == n || !im.first.contains(s.cps[at], s.keys[at]))) continue;
      int64_t e = im.run(s, 0, at);
      if (e >= 0) {
        start = at;
        end = e;
        break;
      }
    }
    if (start < 0) break;
    if (start == end && last_match_end == end) {  // no empty match right after the previous one
      ++last_end;
      continue;
    }
    last_end = uint32_t(end);
    last_match_end = end;
    out.push_back({s.offs[start], s.offs[end]});
  }
}

}  // namespace esft::text
