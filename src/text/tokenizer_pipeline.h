// The stages of an HF tokenizer.json pipeline around the BPE model, each with HF tokenizers'
// exact semantics: added-token extraction, normalizers, pre-tokenizers and decoders. Every
// builder fails with "<file>: <section> type '<T>' is not supported" for what it does not know.
#pragma once
#include <nlohmann/json.hpp>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include "regex.h"

namespace esft::text {

class BpeModel;

// ---- added tokens ----

struct AddedToken {
  std::string content;
  int32_t id = -1;
  bool single_word = false, lstrip = false, rstrip = false, normalized = true, special = false;
  std::string match_form;  // what is searched for: content, or its normalized form if normalized
};

// HF AddedVocabulary::find_matches: leftmost-longest search over a set of tokens, then the
// single_word / lstrip / rstrip rules.
class AddedTokenMatcher {
 public:
  void build(const std::vector<AddedToken>& tokens, bool normalized_ones);
  bool empty() const { return nodes_.size() <= 1; }
  struct Split {
    size_t start, end;
    int32_t token;  // index into the token list, -1 for plain text
  };
  // Splits `text` into plain segments and added tokens (covering all of text).
  void split(std::string_view text, const std::vector<AddedToken>& tokens, std::vector<Split>& out) const;

 private:
  struct Node {
    std::vector<std::pair<uint8_t, int32_t>> next;  // sorted by byte
    int32_t token = -1;
  };
  std::vector<Node> nodes_ = std::vector<Node>(1);
  bool first_byte_[256] = {};
  bool find(std::string_view text, size_t from, size_t& start, size_t& end, int32_t& token) const;
};

// ---- normalizers ----

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  // Rewrites s. at_origin: whether s's first character maps to offset 0 of the original text
  // (only Metaspace's prepend_scheme "first" cares); normalizers that drop a prefix clear it.
  virtual void apply(std::string& s, bool& at_origin) const = 0;
};
// null JSON -> nullptr
std::unique_ptr<Normalizer> make_normalizer(const nlohmann::json& j, const std::string& file);

// ---- pre-tokenizers ----

// A flattened pre-tokenizer Sequence. Pieces reach `emit` depth-first, which gives HF's order.
class PreTokenizer {
 public:
  PreTokenizer(const nlohmann::json& j, const std::string& file);  // j may be null
  // Calls model.encode for every final piece of text, appending ids.
  void run(std::string_view text, bool at_origin, const BpeModel& model, std::vector<int32_t>& ids) const;
  bool byte_level() const { return byte_level_; }

 private:
  enum class Behavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };
  struct Step {
    enum Kind { kSplit, kDigits, kByteLevel, kMetaspace } kind;
    std::unique_ptr<Regex> regex;  // kSplit; kByteLevel with use_regex
    Behavior behavior = Behavior::kIsolated;
    bool invert = false;
    bool individual_digits = false;   // kDigits
    bool add_prefix_space = false;    // kByteLevel
    std::string replacement;          // kMetaspace
    enum Prepend { kAlways, kFirst, kNever } prepend = kAlways;
    bool split = true;                // kMetaspace
  };
  std::vector<Step> steps_;
  bool byte_level_ = false;
  void add(const nlohmann::json& j, const std::string& file);
  void step(size_t k, std::string_view text, bool at_origin, const BpeModel& model, std::vector<int32_t>& ids) const;
};

// ---- decoders ----

class Decoder {
 public:
  virtual ~Decoder() = default;
  virtual void decode_chain(std::vector<std::string>& tokens) const = 0;
};
// null JSON -> nullptr (tokens are then joined with spaces, as HF does)
std::unique_ptr<Decoder> make_decoder(const nlohmann::json& j, const std::string& file);

// Regex for a literal string (Split/Replace "String" patterns).
std::string escape_regex(std::string_view literal);

}  // namespace esft::text
