// Lookup structures built once from the generated tables in unicode_tables.cpp, UTF-8 helpers
// and canonical normalization.
#include "unicode.h"

#include <algorithm>
#include <map>
#include <memory>
#include <unordered_map>

#include "unicode_tables.h"

namespace esft::text {

namespace {

constexpr uint32_t kMaxCp = 0x110000;

// Hangul syllable constants (Unicode 3.12, conjoining jamo behavior).
constexpr char32_t kSBase = 0xAC00, kLBase = 0x1100, kVBase = 0x1161, kTBase = 0x11A7;
constexpr int kLCount = 19, kVCount = 21, kTCount = 28, kNCount = kVCount * kTCount, kSCount = kLCount * kNCount;

struct NormData {
  std::unordered_map<char32_t, uint8_t> ccc;
  std::unordered_map<char32_t, std::pair<char32_t, char32_t>> decomp;  // second 0: singleton
  std::unordered_map<uint64_t, char32_t> compose;                     // (first << 21 | second)
};

const NormData& norm_data() {
  static const NormData d = [] {
    NormData n;
    for (size_t i = 0; i < tables::kCombiningClassSize; ++i) {
      const auto& r = tables::kCombiningClass[i];
      for (uint32_t c = r.lo; c <= r.hi; ++c) n.ccc[c] = uint8_t(r.value);
    }
    std::vector<uint32_t> excl(tables::kCompositionExclusion, tables::kCompositionExclusion + tables::kCompositionExclusionSize);
    std::sort(excl.begin(), excl.end());
    for (size_t i = 0; i < tables::kDecompositionSize; ++i) {
      const auto& d = tables::kDecomposition[i];
      n.decomp[d.cp] = {d.first, d.second};
      if (d.second && !std::binary_search(excl.begin(), excl.end(), d.cp))
        n.compose[(uint64_t(d.first) << 21) | d.second] = d.cp;
    }
    return n;
  }();
  return d;
}

uint8_t ccc_of(const NormData& n, char32_t c) {
  if (c < 0x300) return 0;
  auto it = n.ccc.find(c);
  return it == n.ccc.end() ? 0 : it->second;
}

}  // namespace

const detail::PropertyTable& detail::property_table() {
  static const std::unique_ptr<PropertyTable> table = [] {
    std::vector<uint8_t> flat(kMaxCp, kCn);
    for (size_t i = 0; i < tables::kCategorySize; ++i) {
      const auto& r = tables::kCategory[i];
      std::fill(flat.begin() + r.lo, flat.begin() + r.hi + 1, uint8_t(r.value));
    }
    auto set_flag = [&](const tables::Range* rs, size_t n, uint8_t flag) {
      for (size_t i = 0; i < n; ++i)
        for (uint32_t c = rs[i].lo; c <= rs[i].hi; ++c) flat[c] |= flag;
    };
    set_flag(tables::kWhiteSpace, tables::kWhiteSpaceSize, prop::kWhiteSpace);
    set_flag(tables::kAlphabetic, tables::kAlphabeticSize, prop::kAlphabetic);
    // NFC boundaries: ccc != 0, composition-excluded decomposables (QC=No), and code points that
    // may combine with a preceding one (QC=Maybe: second halves of compositions, Hangul V and T).
    const NormData& n = norm_data();
    for (auto& [c, v] : n.ccc) flat[c] |= prop::kNfcUnstable;
    for (size_t i = 0; i < tables::kCompositionExclusionSize; ++i) flat[tables::kCompositionExclusion[i]] |= prop::kNfcUnstable;
    for (auto& [key, c] : n.compose) flat[key & 0x1FFFFF] |= prop::kNfcUnstable;
    for (char32_t c = kVBase; c < kVBase + kVCount; ++c) flat[c] |= prop::kNfcUnstable;
    for (char32_t c = kTBase + 1; c < kTBase + kTCount; ++c) flat[c] |= prop::kNfcUnstable;

    auto t = std::make_unique<PropertyTable>();
    std::map<std::vector<uint8_t>, uint16_t> seen;
    for (uint32_t b = 0; b < (kMaxCp >> 8); ++b) {
      std::vector<uint8_t> block(flat.begin() + b * 256, flat.begin() + (b + 1) * 256);
      auto [it, fresh] = seen.emplace(block, uint16_t(seen.size()));
      if (fresh) t->blocks.insert(t->blocks.end(), block.begin(), block.end());
      t->block_of[b] = it->second;
    }
    return t;
  }();
  return *table;
}

bool is_rust_word_char(char32_t cp) {
  uint8_t p = properties(cp);
  auto gc = GeneralCategory(p & prop::kCategoryMask);
  return (p & prop::kAlphabetic) || gc == kMn || gc == kMc || gc == kMe || gc == kNd || gc == kPc ||
         cp == 0x200C || cp == 0x200D;
}

namespace {
struct FoldData {
  std::unordered_map<char32_t, char32_t> fold;
  std::unordered_map<char32_t, std::vector<char32_t>> orbit;  // fold target -> all folding to it
  std::unordered_map<char32_t, std::u32string> multi;
  std::vector<char32_t> multi_cps;
  std::vector<std::pair<char32_t, char32_t>> pairs;
};
const FoldData& fold_data() {
  static const FoldData d = [] {
    FoldData f;
    for (size_t i = 0; i < tables::kSimpleFoldSize; ++i) {
      f.fold[tables::kSimpleFold[i].cp] = tables::kSimpleFold[i].fold;
      f.orbit[tables::kSimpleFold[i].fold].push_back(tables::kSimpleFold[i].cp);
      f.pairs.push_back({tables::kSimpleFold[i].cp, tables::kSimpleFold[i].fold});
    }
    for (size_t i = 0; i < tables::kMultiFoldSize; ++i) {
      std::u32string s;
      for (uint32_t c : tables::kMultiFold[i].to)
        if (c) s.push_back(c);
      f.multi[tables::kMultiFold[i].cp] = s;
      f.multi_cps.push_back(tables::kMultiFold[i].cp);
    }
    return f;
  }();
  return d;
}
}  // namespace

char32_t simple_fold(char32_t cp) {
  const auto& f = fold_data().fold;
  auto it = f.find(cp);
  return it == f.end() ? cp : it->second;
}

const std::vector<std::pair<char32_t, char32_t>>& simple_fold_pairs() { return fold_data().pairs; }

std::vector<char32_t> case_orbit(char32_t cp) {
  char32_t target = simple_fold(cp);
  std::vector<char32_t> out{target};
  const auto& o = fold_data().orbit;
  if (auto it = o.find(target); it != o.end())
    for (char32_t c : it->second)
      if (c != target) out.push_back(c);
  std::sort(out.begin(), out.end());
  return out;
}

std::u32string multi_char_fold(char32_t cp) {
  const auto& m = fold_data().multi;
  auto it = m.find(cp);
  return it == m.end() ? std::u32string() : it->second;
}

const std::vector<char32_t>& multi_char_fold_code_points() { return fold_data().multi_cps; }

// ---- UTF-8 ----

void append_utf8(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out.push_back(char(cp));
  } else if (cp < 0x800) {
    out.push_back(char(0xC0 | (cp >> 6)));
    out.push_back(char(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(char(0xE0 | (cp >> 12)));
    out.push_back(char(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(char(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(char(0xF0 | (cp >> 18)));
    out.push_back(char(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(char(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(char(0x80 | (cp & 0x3F)));
  }
}

namespace {
// Length of the valid UTF-8 sequence at s[i], or -(length of the maximal invalid prefix) (at
// least 1) as Unicode's "maximal subpart" practice and Rust's from_utf8_lossy define it.
int utf8_sequence(std::string_view s, size_t i) {
  auto at = [&](size_t k) -> int { return i + k < s.size() ? static_cast<unsigned char>(s[i + k]) : -1; };
  int b = at(0);
  if (b < 0x80) return 1;
  int need;
  int lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  if (b >= 0xC2 && b <= 0xDF) {
    need = 1;
  } else if (b >= 0xE0 && b <= 0xEF) {
    need = 2;
    if (b == 0xE0) lo = 0xA0;
    if (b == 0xED) hi = 0x9F;
  } else if (b >= 0xF0 && b <= 0xF4) {
    need = 3;
    if (b == 0xF0) lo = 0x90;
    if (b == 0xF4) hi = 0x8F;
  } else {
    return -1;
  }
  for (int k = 1; k <= need; ++k) {
    int c = at(k);
    int l = k == 1 ? lo : 0x80, h = k == 1 ? hi : 0xBF;
    if (c < l || c > h) return -k;
  }
  return need + 1;
}
}  // namespace

size_t find_invalid_utf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    if (static_cast<unsigned char>(s[i]) < 0x80) {
      ++i;
      continue;
    }
    int n = utf8_sequence(s, i);
    if (n < 0) return i;
    i += n;
  }
  return std::string_view::npos;
}

std::string utf8_lossy(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    int n = static_cast<unsigned char>(s[i]) < 0x80 ? 1 : utf8_sequence(s, i);
    if (n > 0) {
      out.append(s.data() + i, n);
      i += n;
    } else {
      out += "\xEF\xBF\xBD";
      i += -n;
    }
  }
  return out;
}

// ---- normalization ----

namespace {

void decompose(const NormData& n, char32_t c, std::u32string& out) {
  if (c >= kSBase && c < kSBase + kSCount) {
    int s = int(c - kSBase);
    out.push_back(kLBase + s / kNCount);
    out.push_back(kVBase + (s % kNCount) / kTCount);
    if (s % kTCount) out.push_back(kTBase + s % kTCount);
    return;
  }
  auto it = c < 0xC0 ? n.decomp.end() : n.decomp.find(c);
  if (it == n.decomp.end()) {
    out.push_back(c);
    return;
  }
  decompose(n, it->second.first, out);
  if (it->second.second) decompose(n, it->second.second, out);
}

// Canonical ordering: stable sort of each run of non-starters by combining class.
void reorder(const NormData& n, std::u32string& s) {
  size_t i = 0;
  while (i < s.size()) {
    if (!ccc_of(n, s[i])) {
      ++i;
      continue;
    }
    size_t j = i;
    while (j < s.size() && ccc_of(n, s[j])) ++j;
    std::stable_sort(s.begin() + i, s.begin() + j,
                     [&](char32_t a, char32_t b) { return ccc_of(n, a) < ccc_of(n, b); });
    i = j;
  }
}

bool compose_pair(const NormData& n, char32_t a, char32_t b, char32_t& out) {
  if (a >= kLBase && a < kLBase + kLCount && b >= kVBase && b < kVBase + kVCount) {
    out = kSBase + ((a - kLBase) * kVCount + (b - kVBase)) * kTCount;
    return true;
  }
  if (a >= kSBase && a < kSBase + kSCount && (a - kSBase) % kTCount == 0 && b > kTBase && b < kTBase + kTCount) {
    out = a + (b - kTBase);
    return true;
  }
  auto it = n.compose.find((uint64_t(a) << 21) | b);
  if (it == n.compose.end()) return false;
  out = it->second;
  return true;
}

// Canonical composition of a decomposed, reordered sequence.
void compose(const NormData& n, std::u32string& s) {
  std::u32string out;
  out.reserve(s.size());
  long starter = -1;
  int last_ccc = -1;  // ccc of the last char kept since the starter; -1: none
  for (char32_t c : s) {
    int cc = ccc_of(n, c);
    if (starter >= 0 && (last_ccc == -1 || last_ccc < cc)) {
      char32_t composed;
      if (compose_pair(n, out[starter], c, composed)) {
        out[starter] = composed;
        continue;
      }
    }
    if (cc == 0) {
      starter = long(out.size());
      last_ccc = -1;
    } else {
      last_ccc = cc;
    }
    out.push_back(c);
  }
  s.swap(out);
}

// Normalizes s chunk by chunk: a chunk starts at a stable starter (NFC_QC=Yes, ccc 0) and holds
// the unstable code points after it; chunks of a single stable code point are copied untouched,
// which keeps plain text (and most precomposed text) on a fast path.
std::string normalize(std::string_view s, bool composed) {
  const NormData& n = norm_data();
  std::string out;
  out.reserve(s.size() + s.size() / 8);
  const char* p = s.data();
  const char* end = p + s.size();
  std::u32string buf;
  while (p < end) {
    const char* chunk = p;
    char32_t c = next_code_point(p);
    bool unstable = properties(c) & prop::kNfcUnstable;
    // NFD must also expand stable decomposables (e.g. U+00E9).
    bool decomposable = !composed && ((c >= 0xC0 && n.decomp.count(c)) || (c >= kSBase && c < kSBase + kSCount));
    const char* q = p;
    while (q < end) {
      const char* r = q;
      char32_t d = next_code_point(r);
      if (!(properties(d) & prop::kNfcUnstable)) break;
      q = r;
    }
    if (!unstable && !decomposable && q == p) {
      out.append(chunk, p);
      continue;
    }
    buf.clear();
    for (const char* r = chunk; r < q;) decompose(n, next_code_point(r), buf);
    reorder(n, buf);
    if (composed) compose(n, buf);
    for (char32_t d : buf) append_utf8(out, d);
    p = q;
  }
  return out;
}

}  // namespace

std::string nfc(std::string_view s) { return normalize(s, true); }
std::string nfd(std::string_view s) { return normalize(s, false); }

}  // namespace esft::text
