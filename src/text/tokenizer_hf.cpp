// HF tokenizer.json tokenizer: loading and the encode/decode orchestration, following
// tokenizers' TokenizerImpl::encode_single_sequence (added tokens -> normalizer -> added tokens
// matched after normalization -> pre-tokenizer -> BPE) and TokenizerImpl::decode.
#include <unordered_map>
#include <unordered_set>

#include "esft/error.h"
#include "esft/log.h"
#include "esft/tokenizer.h"
#include "tokenizer_bpe.h"
#include "tokenizer_impl.h"
#include "tokenizer_json.h"
#include "tokenizer_pipeline.h"
#include "unicode.h"

namespace esft::text {

namespace {

class HfTokenizer : public Tokenizer {
 public:
  explicit HfTokenizer(const fs::path& file);

  std::vector<int32_t> encode(std::string_view text) const override;
  std::string decode(const std::vector<int32_t>& ids, bool skip_special_tokens) const override;
  std::optional<int32_t> token_to_id(std::string_view token) const override;
  std::string id_to_token(int32_t id) const override;
  size_t vocab_size() const override { return vocab_size_; }
  std::vector<std::string> special_tokens() const override;

 private:
  std::string file_;
  std::unique_ptr<BpeModel> model_;
  std::unique_ptr<Normalizer> normalizer_;
  std::unique_ptr<PreTokenizer> pre_tokenizer_;
  std::unique_ptr<Decoder> decoder_;
  std::vector<AddedToken> added_;                    // file order
  std::unordered_map<int32_t, size_t> added_by_id_;  // id -> index in added_
  std::unordered_map<std::string, int32_t> added_by_content_;
  std::unordered_set<std::string> special_contents_;
  AddedTokenMatcher raw_matcher_, normalized_matcher_;
  size_t vocab_size_ = 0;

  void load_added_tokens(const nlohmann::json& arr);
  // The string an id decodes from (HF simple_id_to_token, then model.id_to_token).
  const std::string* token_string(int32_t id) const;
};

BpeOptions bpe_options(const nlohmann::json& m, const std::string& file) {
  BpeOptions o;
  auto str = [&](const char* k) -> std::optional<std::string> {
    if (!m.contains(k) || m[k].is_null()) return std::nullopt;
    if (!m[k].is_string()) fail("{}: model.{} must be a string", file, k);
    return m[k].get<std::string>();
  };
  auto flag = [&](const char* k) {
    if (!m.contains(k) || m[k].is_null()) return false;
    if (!m[k].is_boolean()) fail("{}: model.{} must be true or false", file, k);
    return m[k].get<bool>();
  };
  o.unk_token = str("unk_token");
  o.continuing_subword_prefix = str("continuing_subword_prefix").value_or("");
  o.end_of_word_suffix = str("end_of_word_suffix").value_or("");
  o.fuse_unk = flag("fuse_unk");
  o.byte_fallback = flag("byte_fallback");
  o.ignore_merges = flag("ignore_merges");
  if (m.contains("dropout") && !m["dropout"].is_null() && m["dropout"].get<double>() != 0.0)
    fail("{}: BPE dropout {} is not supported (encoding would be random)", file, m["dropout"].dump());
  return o;
}

HfTokenizer::HfTokenizer(const fs::path& path) : file_(path.string()) {
  // vocab and merges stream in before the model options may have been seen: buffer them.
  std::string vocab_arena;
  std::vector<std::pair<std::pair<uint64_t, uint32_t>, int64_t>> vocab;  // (offset, len) -> id
  vocab.reserve(1 << 18);
  std::string merge_arena;
  std::vector<std::pair<uint64_t, uint32_t>> merge_a, merge_b;
  std::vector<bool> merge_legacy;
  TokenizerJsonCallbacks cb;
  cb.vocab = [&](std::string_view tok, int64_t id) {
    vocab.push_back({{vocab_arena.size(), uint32_t(tok.size())}, id});
    vocab_arena.append(tok);
  };
  cb.merge = [&](std::string_view a, std::string_view b, bool b_present) {
    merge_a.push_back({merge_arena.size(), uint32_t(a.size())});
    merge_arena.append(a);
    merge_b.push_back({merge_arena.size(), uint32_t(b.size())});
    merge_arena.append(b);
    merge_legacy.push_back(!b_present);
  };
  nlohmann::json doc = read_tokenizer_json(path, cb);

  if (doc.contains("version") && doc["version"] != "1.0")
    fail("{}: unknown tokenizer.json version {}", file_, doc["version"].dump());
  for (const char* k : {"truncation", "padding"})
    if (doc.contains(k) && !doc[k].is_null())
      fail("{}: \"{}\" is set; encoding with {} is not supported (set it to null)", file_, k, k);
  if (!doc.contains("model") || !doc["model"].is_object()) fail("{}: no \"model\" section", file_);
  const nlohmann::json& m = doc["model"];
  std::string model_type = m.contains("type") && m["type"].is_string() ? m["type"].get<std::string>() : "";
  if (model_type.empty()) {
    // HF infers the model from its fields when "type" is missing; BPE is the one with merges.
    if (!m.contains("merges")) fail("{}: model section has no \"type\"", file_);
    model_type = "BPE";
  }
  if (model_type != "BPE") fail("{}: model type '{}' is not supported", file_, model_type);
  if (!m.contains("vocab") || !m.contains("merges")) fail("{}: BPE model without vocab/merges", file_);

  model_ = std::make_unique<BpeModel>(bpe_options(m, file_), file_);
  for (auto& [at, id] : vocab) model_->add_vocab(std::string_view(vocab_arena).substr(at.first, at.second), id);
  for (size_t i = 0; i < merge_a.size(); ++i) {
    std::string_view a = std::string_view(merge_arena).substr(merge_a[i].first, merge_a[i].second);
    if (merge_legacy[i])
      model_->add_legacy_merge(a);
    else
      model_->add_merge(a, std::string_view(merge_arena).substr(merge_b[i].first, merge_b[i].second));
  }
  model_->finish();

  normalizer_ = make_normalizer(doc.value("normalizer", nlohmann::json()), file_);
  pre_tokenizer_ = std::make_unique<PreTokenizer>(doc.value("pre_tokenizer", nlohmann::json()), file_);
  decoder_ = make_decoder(doc.value("decoder", nlohmann::json()), file_);
  // The post-processor only adds tokens when add_special_tokens=True, which encode() is not.
  load_added_tokens(doc.value("added_tokens", nlohmann::json::array()));

  int64_t max_id = model_->max_id();
  for (auto& t : added_) max_id = std::max<int64_t>(max_id, t.id);
  vocab_size_ = size_t(max_id + 1);
}

// HF AddedVocabulary::add_tokens as the deserializer calls it: ids come from the vocabulary
// (added tokens first, then the model) or are handed out after the model's vocabulary size;
// the file's "id" only triggers a warning in HF when it differs.
void HfTokenizer::load_added_tokens(const nlohmann::json& arr) {
  if (!arr.is_array()) fail("{}: \"added_tokens\" must be an array", file_);
  int64_t next_id = int64_t(model_->vocab_entries());
  for (const auto& j : arr) {
    if (!j.is_object() || !j.contains("content") || !j["content"].is_string())
      fail("{}: added token without \"content\": {}", file_, j.dump());
    AddedToken t;
    t.content = j["content"].get<std::string>();
    auto flag = [&](const char* k, bool dflt) { return j.contains(k) && j[k].is_boolean() ? j[k].get<bool>() : dflt; };
    t.single_word = flag("single_word", false);
    t.lstrip = flag("lstrip", false);
    t.rstrip = flag("rstrip", false);
    t.normalized = flag("normalized", true);
    t.special = flag("special", false);
    if (t.content.empty()) continue;
    if (find_invalid_utf8(t.content) != std::string::npos) fail("{}: added token content is not valid UTF-8", file_);
    auto existing = added_by_content_.find(t.content);
    if (existing != added_by_content_.end()) {
      t.id = existing->second;
    } else if (int32_t mid = model_->token_to_id(t.content); mid >= 0) {
      t.id = mid;
    } else {
      t.id = int32_t(next_id++);
    }
    if (j.contains("id") && j["id"].is_number_integer() && j["id"].get<int64_t>() != t.id)
      log_warn(fmt::format("{}: added token '{}' has id {} in the file; like HF tokenizers we use id {}", file_,
                           t.content, j["id"].get<int64_t>(), t.id));
    t.match_form = t.content;
    if (t.normalized && normalizer_) {
      bool origin = true;
      normalizer_->apply(t.match_form, origin);
    }
    added_by_content_[t.content] = t.id;
    if (t.special) special_contents_.insert(t.content);
    auto at = added_by_id_.find(t.id);
    if (at != added_by_id_.end()) {
      added_[at->second] = t;  // same id again: the later definition replaces the earlier
    } else {
      added_by_id_[t.id] = added_.size();
      added_.push_back(t);
    }
  }
  try {
    raw_matcher_.build(added_, false);
    normalized_matcher_.build(added_, true);
  } catch (const Error& e) {
    fail("{}: {}", file_, e.what());
  }
}

std::vector<int32_t> HfTokenizer::encode(std::string_view text) const {
  if (size_t bad = find_invalid_utf8(text); bad != std::string_view::npos)
    fail("tokenizer: input text is not valid UTF-8 (byte {})", bad);
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 4);
  thread_local std::vector<AddedTokenMatcher::Split> raw, norm;
  raw_matcher_.split(text, added_, raw);
  std::string normalized;
  for (const auto& r : raw) {
    if (r.token >= 0) {
      ids.push_back(added_[r.token].id);
      continue;
    }
    if (r.end == r.start) continue;
    std::string_view seg = text.substr(r.start, r.end - r.start);
    bool at_origin = r.start == 0;
    if (normalizer_) {
      normalized.assign(seg);
      normalizer_->apply(normalized, at_origin);
      seg = normalized;
    }
    normalized_matcher_.split(seg, added_, norm);
    for (const auto& n : norm) {
      if (n.token >= 0) {
        ids.push_back(added_[n.token].id);
      } else if (n.end > n.start) {
        pre_tokenizer_->run(seg.substr(n.start, n.end - n.start), at_origin && n.start == 0, *model_, ids);
      }
    }
  }
  return ids;
}

const std::string* HfTokenizer::token_string(int32_t id) const {
  if (auto it = added_by_id_.find(id); it != added_by_id_.end()) {
    const AddedToken& t = added_[it->second];
    return t.normalized ? &t.match_form : &t.content;
  }
  return model_->id_to_token(id);
}

std::string HfTokenizer::decode(const std::vector<int32_t>& ids, bool skip_special_tokens) const {
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (int32_t id : ids) {
    const std::string* s = token_string(id);
    if (!s) continue;  // HF drops ids it does not know
    if (skip_special_tokens && special_contents_.count(*s)) continue;
    tokens.push_back(*s);
  }
  if (!decoder_) {
    std::string out;
    for (size_t i = 0; i < tokens.size(); ++i) {
      if (i) out.push_back(' ');
      out += tokens[i];
    }
    return out;
  }
  decoder_->decode_chain(tokens);
  std::string out;
  for (auto& t : tokens) out += t;
  return out;
}

std::optional<int32_t> HfTokenizer::token_to_id(std::string_view token) const {
  if (auto it = added_by_content_.find(std::string(token)); it != added_by_content_.end()) return it->second;
  int32_t id = model_->token_to_id(token);
  if (id >= 0) return id;
  return std::nullopt;
}

std::string HfTokenizer::id_to_token(int32_t id) const {
  if (auto it = added_by_id_.find(id); it != added_by_id_.end()) return added_[it->second].content;
  if (const std::string* s = model_->id_to_token(id)) return *s;
  fail("{}: token id {} is not in the vocabulary", file_, id);
}

std::vector<std::string> HfTokenizer::special_tokens() const {
  std::vector<std::string> out;
  for (auto& t : added_)
    if (t.special) out.push_back(t.content);
  return out;
}

}  // namespace

std::unique_ptr<Tokenizer> load_hf_tokenizer(const fs::path& file) { return std::make_unique<HfTokenizer>(file); }

}  // namespace esft::text
