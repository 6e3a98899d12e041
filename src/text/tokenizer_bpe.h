// The BPE model of HF tokenizer.json files: vocabulary, ranked merges, and the merge loop with
// HF's exact semantics (lowest rank first, leftmost on ties), unk/byte_fallback handling,
// ignore_merges, continuing_subword_prefix / end_of_word_suffix. Encoded words are memoised in a
// per-thread cache.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace esft::text {

uint64_t hash_bytes(std::string_view s);

// token string -> id, with the strings kept in one arena.
class StringIdMap {
 public:
  void set(std::string_view key, int32_t id);  // inserts or overwrites
  int32_t find(std::string_view key) const;    // -1 when absent
  size_t size() const { return entries_.size(); }
  void reserve(size_t n);
  template <class F>
  void for_each(F f) const {
    for (const Entry& e : entries_) f(std::string_view(arena_.data() + e.off, e.len), e.id);
  }

 private:
  struct Entry {
    uint64_t off;
    uint32_t len;
    int32_t id;
  };
  struct Slot {
    uint32_t hash;   // low bits of the key's hash
    uint32_t entry;  // entry index + 1; 0: empty
  };
  std::string arena_;
  std::vector<Entry> entries_;
  std::vector<Slot> slots_;
  void rehash(size_t n_slots);
};

// (left id, right id) -> (rank, merged id)
class PairMap {
 public:
  struct Value {
    uint32_t rank;
    int32_t id;
  };
  void reserve(size_t n);
  void set(uint32_t a, uint32_t b, Value v);  // inserts or overwrites
  const Value* find(uint32_t a, uint32_t b) const {
    uint64_t key = (uint64_t(a) << 32) | b;
    size_t i = mix(key) & mask_;
    for (;;) {
      const Slot& s = slots_[i];
      if (s.key == key) return &s.value;
      if (s.key == kEmpty) return nullptr;
      i = (i + 1) & mask_;
    }
  }
  size_t size() const { return size_; }

 private:
  static constexpr uint64_t kEmpty = ~uint64_t(0);
  struct Slot {
    uint64_t key = kEmpty;
    Value value{};
  };
  static uint64_t mix(uint64_t k) {
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdULL;
    k ^= k >> 33;
    k *= 0xc4ceb9fe1a85ec53ULL;
    k ^= k >> 33;
    return k;
  }
  std::vector<Slot> slots_ = std::vector<Slot>(16);
  size_t mask_ = 15;
  size_t size_ = 0;
};

struct BpeOptions {
  std::optional<std::string> unk_token;
  std::string continuing_subword_prefix;  // empty: none (as HF treats "" and null alike in effect)
  std::string end_of_word_suffix;
  bool fuse_unk = false;
  bool byte_fallback = false;
  bool ignore_merges = false;
};

class BpeModel {
 public:
  BpeModel(BpeOptions opt, std::string source);  // source: file name for error messages

  // Loading: vocab entries and merges in file order, then finish().
  void add_vocab(std::string_view token, int64_t id);
  void add_merge(std::string_view a, std::string_view b);
  void add_legacy_merge(std::string_view line);  // "a b"
  void finish();

  // Appends the ids of one pre-tokenized piece. byte_level: `piece` holds raw bytes which the
  // ByteLevel pre-tokenizer has (conceptually) mapped to its 256 printable characters.
  void encode(std::string_view piece, bool byte_level, std::vector<int32_t>& out) const;

  int32_t token_to_id(std::string_view token) const { return vocab_.find(token); }
  const std::string* id_to_token(int32_t id) const {
    return id >= 0 && size_t(id) < id_to_token_.size() && has_token_[id] ? &id_to_token_[id] : nullptr;
  }
  size_t vocab_entries() const { return vocab_.size(); }  // HF's get_vocab_size()
  int32_t max_id() const { return int32_t(id_to_token_.size()) - 1; }
  size_t merge_count() const { return merges_.size(); }

 private:
  struct Symbol {
    int32_t id;
    int32_t prev, next;
    uint32_t len;
  };

  void encode_uncached(std::string_view piece, bool byte_level, std::vector<int32_t>& out) const;
  bool initial_byte_symbols(std::string_view piece, std::vector<Symbol>& syms) const;
  void initial_char_symbols(std::string_view word, std::vector<Symbol>& syms) const;
  void merge_all(std::vector<Symbol>& syms) const;

  BpeOptions opt_;
  std::string source_;
  StringIdMap vocab_;
  std::vector<std::string> id_to_token_;
  std::vector<bool> has_token_;
  PairMap merges_;
  std::string pending_merges_;  // "a\0b\0" records until finish()
  size_t pending_count_ = 0;
  int32_t unk_id_ = -1;
  // Byte-level initial symbols: id of byte b's character alone / with prefix / with suffix / both.
  int32_t byte_id_[4][256];
  int32_t byte_fallback_id_[256];
  uint64_t cache_owner_;
};

// The 256 printable characters GPT-2's byte-level scheme maps bytes to.
const std::string& byte_level_char(uint8_t b);
// Inverse mapping: returns -1 for a code point outside the scheme.
int byte_level_byte(char32_t cp);
// Maps raw bytes to their byte-level characters (UTF-8).
void append_byte_level(std::string& out, std::string_view bytes);

}  // namespace esft::text
