// BPE model: loading and the merge loop; see tokenizer_bpe.h.
#include "tokenizer_bpe.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <memory>

#include "esft/error.h"
#include "unicode.h"

namespace esft::text {

uint64_t hash_bytes(std::string_view s) {
  const char* p = s.data();
  size_t n = s.size();
  uint64_t h = 0x9E3779B97F4A7C15ULL ^ (n * 0xC2B2AE3D27D4EB4FULL);
  auto mixin = [&](uint64_t v) {
    v *= 0x87C37B91114253D5ULL;
    v = (v << 31) | (v >> 33);
    v *= 0x4CF5AD432745937FULL;
    h ^= v;
    h = ((h << 27) | (h >> 37)) * 5 + 0x52DCE729;
  };
  while (n >= 8) {
    uint64_t v;
    std::memcpy(&v, p, 8);
    mixin(v);
    p += 8;
    n -= 8;
  }
  if (n) {
    uint64_t v = 0;
    std::memcpy(&v, p, n);
    mixin(v ^ (uint64_t(n) << 56));
  }
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdULL;
  h ^= h >> 33;
  h *= 0xc4ceb9fe1a85ec53ULL;
  h ^= h >> 33;
  return h;
}

// ---- StringIdMap ----

void StringIdMap::reserve(size_t n) {
  entries_.reserve(n);
  size_t want = 16;
  while (want < n * 2) want *= 2;
  if (want > slots_.size()) rehash(want);
}

void StringIdMap::rehash(size_t n_slots) {
  std::vector<Slot> slots(n_slots, Slot{0, 0});
  size_t mask = n_slots - 1;
  for (size_t e = 0; e < entries_.size(); ++e) {
    uint64_t h = hash_bytes(std::string_view(arena_.data() + entries_[e].off, entries_[e].len));
    size_t i = h & mask;
    while (slots[i].entry) i = (i + 1) & mask;
    slots[i] = {uint32_t(h >> 32), uint32_t(e + 1)};
  }
  slots_.swap(slots);
}

void StringIdMap::set(std::string_view key, int32_t id) {
  if ((entries_.size() + 1) * 2 > slots_.size()) rehash(std::max<size_t>(16, slots_.size() * 2));
  uint64_t h = hash_bytes(key);
  size_t mask = slots_.size() - 1;
  size_t i = h & mask;
  while (slots_[i].entry) {
    const Entry& e = entries_[slots_[i].entry - 1];
    if (slots_[i].hash == uint32_t(h >> 32) && std::string_view(arena_.data() + e.off, e.len) == key) {
      entries_[slots_[i].entry - 1].id = id;
      return;
    }
    i = (i + 1) & mask;
  }
  entries_.push_back({arena_.size(), uint32_t(key.size()), id});
  arena_.append(key);
  slots_[i] = {uint32_t(h >> 32), uint32_t(entries_.size())};
}

int32_t StringIdMap::find(std::string_view key) const {
  if (slots_.empty()) return -1;
  uint64_t h = hash_bytes(key);
  size_t mask = slots_.size() - 1;
  size_t i = h & mask;
  while (slots_[i].entry) {
    const Entry& e = entries_[slots_[i].entry - 1];
    if (slots_[i].hash == uint32_t(h >> 32) && e.len == key.size() &&
        std::memcmp(arena_.data() + e.off, key.data(), key.size()) == 0)
      return e.id;
    i = (i + 1) & mask;
  }
  return -1;
}

// ---- PairMap ----

void PairMap::reserve(size_t n) {
  size_t want = 16;
  while (want < n * 2) want *= 2;
  if (want <= slots_.size()) return;
  std::vector<Slot> old;
  old.swap(slots_);
  slots_.assign(want, Slot{});
  mask_ = want - 1;
  size_ = 0;
  for (const Slot& s : old)
    if (s.key != kEmpty) set(uint32_t(s.key >> 32), uint32_t(s.key), s.value);
}

void PairMap::set(uint32_t a, uint32_t b, Value v) {
  if ((size_ + 1) * 2 > slots_.size()) reserve(slots_.size());
  uint64_t key = (uint64_t(a) << 32) | b;
  size_t i = mix(key) & mask_;
  while (slots_[i].key != kEmpty && slots_[i].key != key) i = (i + 1) & mask_;
  if (slots_[i].key == kEmpty) ++size_;
  slots_[i].key = key;
  slots_[i].value = v;
}

// ---- byte-level alphabet ----

namespace {
struct ByteLevelTables {
  std::string chars[256];
  int16_t byte_of[512];  // code points < 512 only
};
const ByteLevelTables& byte_level_tables() {
  static const ByteLevelTables t = [] {
    ByteLevelTables t;
    std::fill(std::begin(t.byte_of), std::end(t.byte_of), int16_t(-1));
    // Printable bytes map to themselves; the others, in order, to 256, 257, ...
    auto printable = [](int b) { return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF); };
    int n = 0;
    for (int b = 0; b < 256; ++b) {
      char32_t cp = printable(b) ? char32_t(b) : char32_t(256 + n++);
      append_utf8(t.chars[b], cp);
      t.byte_of[cp] = int16_t(b);
    }
    return t;
  }();
  return t;
}
}  // namespace

const std::string& byte_level_char(uint8_t b) { return byte_level_tables().chars[b]; }

int byte_level_byte(char32_t cp) { return cp < 512 ? byte_level_tables().byte_of[cp] : -1; }

void append_byte_level(std::string& out, std::string_view bytes) {
  const auto& t = byte_level_tables();
  for (unsigned char b : bytes) out += t.chars[b];
}

// ---- per-thread word cache ----

namespace {

std::atomic<uint64_t> g_next_cache_owner{1};

class WordCache {
 public:
  static constexpr size_t kMaxEntries = 1 << 18;
  static constexpr size_t kMaxKeyLen = 256;

  explicit WordCache(uint64_t owner) : owner_(owner), slots_(1024) {}
  uint64_t owner() const { return owner_; }

  // Appends the cached ids of key to out; false when absent.
  bool get(std::string_view key, uint64_t h, std::vector<int32_t>& out) const {
    size_t mask = slots_.size() - 1;
    for (size_t i = h & mask;; i = (i + 1) & mask) {
      const Slot& s = slots_[i];
      if (!s.hash) return false;
      if (s.hash == (h | 1) && s.key_len == key.size() && std::memcmp(keys_.data() + s.key_off, key.data(), key.size()) == 0) {
        out.insert(out.end(), vals_.begin() + s.val_off, vals_.begin() + s.val_off + s.val_len);
        return true;
      }
    }
  }

  void put(std::string_view key, uint64_t h, const int32_t* ids, size_t n) {
    if (key.size() > kMaxKeyLen) return;
    if (count_ >= kMaxEntries) clear();
    if ((count_ + 1) * 2 > slots_.size()) grow();
    size_t mask = slots_.size() - 1;
    size_t i = h & mask;
    while (slots_[i].hash) i = (i + 1) & mask;
    slots_[i] = {h | 1, uint32_t(keys_.size()), uint32_t(key.size()), uint32_t(vals_.size()), uint32_t(n)};
    keys_.append(key);
    vals_.insert(vals_.end(), ids, ids + n);
    ++count_;
  }

 private:
  struct Slot {
    uint64_t hash;  // 0: empty (stored hashes have the low bit set)
    uint32_t key_off, key_len, val_off, val_len;
  };
  void clear() {
    std::fill(slots_.begin(), slots_.end(), Slot{0, 0, 0, 0, 0});
    keys_.clear();
    vals_.clear();
    count_ = 0;
  }
  void grow() {
    std::vector<Slot> old(slots_.size() * 2, Slot{0, 0, 0, 0, 0});
    old.swap(slots_);
    size_t mask = slots_.size() - 1;
    for (const Slot& s : old) {
      if (!s.hash) continue;
      size_t i = s.hash & mask;
      while (slots_[i].hash) i = (i + 1) & mask;
      slots_[i] = s;
    }
  }

  uint64_t owner_;
  std::vector<Slot> slots_;
  std::string keys_;
  std::vector<int32_t> vals_;
  size_t count_ = 0;
};

WordCache& cache_for(uint64_t owner) {
  thread_local std::vector<std::unique_ptr<WordCache>> caches;
  for (auto& c : caches)
    if (c->owner() == owner) return *c;
  if (caches.size() >= 4) caches.erase(caches.begin());  // caches of tokenizers long gone
  caches.push_back(std::make_unique<WordCache>(owner));
  return *caches.back();
}

}  // namespace

// ---- BpeModel ----

BpeModel::BpeModel(BpeOptions opt, std::string source)
    : opt_(std::move(opt)), source_(std::move(source)), cache_owner_(g_next_cache_owner++) {}

void BpeModel::add_vocab(std::string_view token, int64_t id) {
  if (id < 0 || id > 0x7FFFFFFE) fail("{}: vocab id {} of token '{}' is out of range", source_, id, token);
  vocab_.set(token, int32_t(id));
}

void BpeModel::add_merge(std::string_view a, std::string_view b) {
  pending_merges_.append(a);
  pending_merges_.push_back('\0');
  pending_merges_.append(b);
  pending_merges_.push_back('\0');
  ++pending_count_;
}

void BpeModel::add_legacy_merge(std::string_view line) {
  if (line.substr(0, 8) == "#version") return;  // HF skips these header lines
  size_t sp = line.find(' ');
  if (sp == std::string_view::npos || line.find(' ', sp + 1) != std::string_view::npos)
    fail("{}: merge {} (\"{}\") is not two tokens separated by one space", source_, pending_count_ + 1, line);
  add_merge(line.substr(0, sp), line.substr(sp + 1));
}

void BpeModel::finish() {
  // id -> token (tokens sharing an id: the last one read wins)
  int32_t max_id = -1;
  vocab_.for_each([&](std::string_view, int32_t id) { max_id = std::max(max_id, id); });
  id_to_token_.assign(size_t(max_id + 1), std::string());
  has_token_.assign(size_t(max_id + 1), false);
  vocab_.for_each([&](std::string_view tok, int32_t id) {
    id_to_token_[id] = std::string(tok);
    has_token_[id] = true;
  });

  // Merges: rank = position (later duplicates override earlier ones, like HF's map collect).
  merges_.reserve(pending_count_);
  const char* p = pending_merges_.data();
  std::string merged;
  size_t prefix_len = opt_.continuing_subword_prefix.size();
  for (size_t rank = 0; rank < pending_count_; ++rank) {
    std::string_view a(p);
    p += a.size() + 1;
    std::string_view b(p);
    p += b.size() + 1;
    int32_t ia = vocab_.find(a), ib = vocab_.find(b);
    if (ia < 0) fail("{}: merge {} ('{} {}') uses '{}', which is not in the vocabulary", source_, rank + 1, a, b, a);
    if (ib < 0) fail("{}: merge {} ('{} {}') uses '{}', which is not in the vocabulary", source_, rank + 1, a, b, b);
    if (b.size() < prefix_len) fail("{}: merge {} ('{} {}'): right side is shorter than the continuing_subword_prefix", source_, rank + 1, a, b);
    merged.assign(a);
    merged.append(b.substr(prefix_len));
    int32_t im = vocab_.find(merged);
    if (im < 0) fail("{}: merge {} ('{} {}') produces '{}', which is not in the vocabulary", source_, rank + 1, a, b, merged);
    merges_.set(uint32_t(ia), uint32_t(ib), {uint32_t(rank), im});
  }
  std::string().swap(pending_merges_);

  if (opt_.unk_token) {
    unk_id_ = vocab_.find(*opt_.unk_token);
    // HF only complains when the unknown token is needed; so do we (at encode time).
  }
  for (int b = 0; b < 256; ++b) {
    const std::string& c = byte_level_char(uint8_t(b));
    byte_id_[0][b] = vocab_.find(c);
    byte_id_[1][b] = vocab_.find(opt_.continuing_subword_prefix + c);
    byte_id_[2][b] = vocab_.find(c + opt_.end_of_word_suffix);
    byte_id_[3][b] = vocab_.find(opt_.continuing_subword_prefix + c + opt_.end_of_word_suffix);
    char name[8];
    std::snprintf(name, sizeof name, "<0x%02X>", b);
    byte_fallback_id_[b] = vocab_.find(name);
  }
}

// Initial symbols of a byte-level word: one per byte. False when a byte's character (with the
// prefix/suffix it needs) is missing from the vocabulary; the general path then handles it.
bool BpeModel::initial_byte_symbols(std::string_view piece, std::vector<Symbol>& syms) const {
  syms.resize(piece.size());
  int32_t n = int32_t(piece.size());
  for (int32_t i = 0; i < n; ++i) {
    int variant = (i > 0 ? 1 : 0) | (i == n - 1 ? 2 : 0);
    int32_t id = byte_id_[variant][static_cast<unsigned char>(piece[i])];
    if (id < 0) return false;
    syms[i] = {id, i - 1, i + 1 < n ? i + 1 : -1, 1};
  }
  return true;
}

// HF's BPE::merge_word initial symbols for a word given as characters.
void BpeModel::initial_char_symbols(std::string_view w, std::vector<Symbol>& syms) const {
  syms.clear();
  auto add = [&](int32_t id, uint32_t len) {
    int32_t i = int32_t(syms.size());
    if (i > 0) syms.back().next = i;
    syms.push_back({id, i - 1, -1, len});
  };
  bool have_unk = false;
  int32_t unk_id = -1;
  uint32_t unk_len = 0;
  std::string s;
  const char* p = w.data();
  const char* end = p + w.size();
  while (p < end) {
    const char* start = p;
    next_code_point(p);
    bool is_first = start == w.data(), is_last = p == end;
    s.clear();
    if (!is_first) s += opt_.continuing_subword_prefix;
    s.append(start, p);
    if (is_last) s += opt_.end_of_word_suffix;
    uint32_t byte_len = uint32_t(p - start);
    int32_t id = vocab_.find(s);
    if (id >= 0) {
      if (have_unk) {
        add(unk_id, unk_len);
        have_unk = false;
      }
      add(id, byte_len);
      continue;
    }
    if (opt_.byte_fallback) {
      bool all = true;
      for (unsigned char b : s) all &= byte_fallback_id_[b] >= 0;
      if (all) {
        for (unsigned char b : s) add(byte_fallback_id_[b], 1);
        continue;
      }
    }
    if (opt_.unk_token) {
      if (unk_id_ < 0) fail("{}: the unknown token '{}' is not in the vocabulary", source_, *opt_.unk_token);
      if (have_unk && opt_.fuse_unk) {
        unk_len += byte_len;
      } else {
        if (have_unk) add(unk_id, unk_len);
        have_unk = true;
        unk_id = unk_id_;
        unk_len = byte_len;
      }
    }
    // No unk token: HF drops the character.
  }
  if (have_unk) add(unk_id, unk_len);
}

// Applies merges lowest rank first, leftmost first among equal ranks: the order HF's priority
// queue (rank, position) produces.
void BpeModel::merge_all(std::vector<Symbol>& syms) const {
  size_t n = syms.size();
  if (n < 2) return;
  if (n <= 48) {
    // Short words: scan for the best pair; cheaper than a heap at this size.
    thread_local std::vector<int32_t> ids;
    thread_local std::vector<uint32_t> ranks;
    thread_local std::vector<int32_t> news;
    ids.resize(n);
    for (size_t i = 0; i < n; ++i) ids[i] = syms[i].id;
    ranks.resize(n - 1);
    news.resize(n - 1);
    auto score = [&](size_t i) {
      const PairMap::Value* v = merges_.find(uint32_t(ids[i]), uint32_t(ids[i + 1]));
      ranks[i] = v ? v->rank : UINT32_MAX;
      news[i] = v ? v->id : -1;
    };
    for (size_t i = 0; i + 1 < n; ++i) score(i);
    size_t len = n;
    for (;;) {
      size_t best = 0;
      uint32_t best_rank = UINT32_MAX;
      for (size_t i = 0; i + 1 < len; ++i)
        if (ranks[i] < best_rank) {
          best_rank = ranks[i];
          best = i;
        }
      if (best_rank == UINT32_MAX) break;
      ids[best] = news[best];
      ids.erase(ids.begin() + best + 1);
      ranks.erase(ranks.begin() + best);
      news.erase(news.begin() + best);
      --len;
      if (best > 0) score(best - 1);
      if (best + 1 < len) score(best);
    }
    syms.resize(len);
    for (size_t i = 0; i < len; ++i) syms[i].id = ids[i];
    return;
  }

  // Long words: HF's algorithm, a min-heap of (rank, position) over a linked list of symbols.
  struct Merge {
    uint32_t rank;
    int32_t pos;
    int32_t new_id;
    bool operator>(const Merge& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  std::vector<Merge> heap;
  heap.reserve(n);
  auto push = [&](int32_t pos) {
    const Symbol& l = syms[pos];
    if (l.next < 0) return;
    if (const PairMap::Value* v = merges_.find(uint32_t(l.id), uint32_t(syms[l.next].id))) {
      heap.push_back({v->rank, pos, v->id});
      std::push_heap(heap.begin(), heap.end(), std::greater<Merge>());
    }
  };
  for (size_t i = 0; i + 1 < n; ++i) push(int32_t(i));
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), std::greater<Merge>());
    Merge top = heap.back();
    heap.pop_back();
    Symbol& cur = syms[top.pos];
    if (cur.len == 0 || cur.next < 0) continue;
    Symbol right = syms[cur.next];
    const PairMap::Value* v = merges_.find(uint32_t(cur.id), uint32_t(right.id));
    if (!v || v->id != top.new_id) continue;  // stale entry
    cur.id = top.new_id;
    cur.len += right.len;
    syms[cur.next].len = 0;
    cur.next = right.next;
    if (right.next >= 0) syms[right.next].prev = top.pos;
    if (cur.prev >= 0) push(cur.prev);
    push(top.pos);
  }
  size_t k = 0;
  for (size_t i = 0; i < n; ++i)
    if (syms[i].len) syms[k++] = syms[i];
  syms.resize(k);
}

void BpeModel::encode_uncached(std::string_view piece, bool byte_level, std::vector<int32_t>& out) const {
  thread_local std::vector<Symbol> syms;
  thread_local std::string mapped;
  if (byte_level) {
    if (opt_.ignore_merges) {
      mapped.clear();
      append_byte_level(mapped, piece);
      int32_t id = vocab_.find(mapped);
      if (id >= 0) {
        out.push_back(id);
        return;
      }
    }
    if (!initial_byte_symbols(piece, syms)) {
      mapped.clear();
      append_byte_level(mapped, piece);
      initial_char_symbols(mapped, syms);
    }
  } else {
    if (opt_.ignore_merges) {
      int32_t id = vocab_.find(piece);
      if (id >= 0) {
        out.push_back(id);
        return;
      }
    }
    initial_char_symbols(piece, syms);
  }
  merge_all(syms);
  for (const Symbol& s : syms) out.push_back(s.id);
}

void BpeModel::encode(std::string_view piece, bool byte_level, std::vector<int32_t>& out) const {
  if (piece.empty()) return;
  WordCache& cache = cache_for(cache_owner_);
  uint64_t h = hash_bytes(piece);
  if (cache.get(piece, h, out)) return;
  size_t before = out.size();
  encode_uncached(piece, byte_level, out);
  cache.put(piece, h, out.data() + before, out.size() - before);
}

}  // namespace esft::text
