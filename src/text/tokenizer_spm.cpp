// SentencePiece tokenizer.model files (the Mixtral / Llama family) through the sentencepiece
// library. To behave like HF's converted tokenizers, control symbols and the unknown piece
// (<s>, </s>, <unk>) written in the text are recognised as tokens: the text is split on them
// (leftmost, longest) and each remaining segment is encoded by SentencePiece on its own, which
// is also how HF prepends "▁" to every segment.
#include <sentencepiece_processor.h>

#include <algorithm>

#include "esft/error.h"
#include "esft/tokenizer.h"
#include "tokenizer_impl.h"
#include "unicode.h"

namespace esft::text {

namespace {

class SpmTokenizer : public Tokenizer {
 public:
  explicit SpmTokenizer(const fs::path& file) : file_(file.string()) {
    auto st = sp_.Load(file_);
    if (!st.ok()) fail("{}: cannot load SentencePiece model: {}", file_, st.ToString());
    for (int id = 0; id < sp_.GetPieceSize(); ++id)
      if (sp_.IsControl(id) || sp_.IsUnknown(id)) specials_.push_back({sp_.IdToPiece(id), id});
    // Longest first, so that a scan picks the longest special at a position.
    std::sort(specials_.begin(), specials_.end(), [](auto& a, auto& b) { return a.first.size() > b.first.size(); });
    for (auto& s : specials_)
      if (!s.first.empty()) first_byte_[static_cast<unsigned char>(s.first[0])] = true;
    // The model's own bos/eos/pad; tokenizer_config.json may override them.
    auto set = [&](int id, std::optional<int32_t>& slot, std::string& text) {
      if (id >= 0 && id < sp_.GetPieceSize()) {
        slot = id;
        text = sp_.IdToPiece(id);
      }
    };
    set(sp_.bos_id(), bos_id, bos_token);
    set(sp_.eos_id(), eos_id, eos_token);
    set(sp_.pad_id(), pad_id, pad_token);
  }

  std::vector<int32_t> encode(std::string_view text) const override {
    if (size_t bad = find_invalid_utf8(text); bad != std::string_view::npos)
      fail("tokenizer: input text is not valid UTF-8 (byte {})", bad);
    std::vector<int32_t> ids;
    std::vector<int> piece_ids;
    size_t seg = 0;
    auto flush = [&](size_t end) {
      if (end <= seg) return;
      piece_ids.clear();
      auto st = sp_.Encode(text.substr(seg, end - seg), &piece_ids);
      if (!st.ok()) fail("{}: SentencePiece encode failed: {}", file_, st.ToString());
      ids.insert(ids.end(), piece_ids.begin(), piece_ids.end());
    };
    for (size_t i = 0; i < text.size();) {
      int id = -1;
      size_t len = 0;
      if (first_byte_[static_cast<unsigned char>(text[i])]) {
        for (auto& [piece, pid] : specials_)
          if (!piece.empty() && text.compare(i, piece.size(), piece) == 0) {
            id = pid;
            len = piece.size();
            break;
          }
      }
      if (id < 0) {
        ++i;
        continue;
      }
      flush(i);
      ids.push_back(id);
      i += len;
      seg = i;
    }
    flush(text.size());
    return ids;
  }

  std::string decode(const std::vector<int32_t>& ids, bool skip_special_tokens) const override {
    // Runs of ordinary ids go through SentencePiece; special ids print as their piece (or are
    // dropped). SentencePiece drops the leading space of a run; only the very first run should.
    std::string out;
    std::vector<int> run;
    bool first_run = true;
    auto flush = [&] {
      if (run.empty()) return;
      std::string s;
      auto st = sp_.Decode(run, &s);
      if (!st.ok()) fail("{}: SentencePiece decode failed: {}", file_, st.ToString());
      if (!first_run && sp_.IdToPiece(run[0]).rfind("\xE2\x96\x81", 0) == 0) out.push_back(' ');
      out += s;
      run.clear();
      first_run = false;
    };
    for (int32_t id : ids) {
      if (id < 0 || id >= sp_.GetPieceSize()) continue;
      if (sp_.IsControl(id) || sp_.IsUnknown(id)) {
        flush();
        if (!skip_special_tokens) {
          out += sp_.IdToPiece(id);
          first_run = false;
        }
        continue;
      }
      run.push_back(id);
    }
    flush();
    return out;
  }

  std::optional<int32_t> token_to_id(std::string_view token) const override {
    int id = sp_.PieceToId(token);
    // PieceToId answers unk_id for unknown pieces: only trust it when the piece really is <unk>.
    if (id == sp_.unk_id() && sp_.IdToPiece(id) != token) return std::nullopt;
    return id;
  }
  std::string id_to_token(int32_t id) const override {
    if (id < 0 || id >= sp_.GetPieceSize()) fail("{}: token id {} is not in the vocabulary", file_, id);
    return sp_.IdToPiece(id);
  }
  size_t vocab_size() const override { return size_t(sp_.GetPieceSize()); }
  std::vector<std::string> special_tokens() const override {
    std::vector<std::string> out;
    for (auto& s : specials_) out.push_back(s.first);
    return out;
  }

 private:
  std::string file_;
  sentencepiece::SentencePieceProcessor sp_;
  std::vector<std::pair<std::string, int>> specials_;
  bool first_byte_[256] = {};
};

}  // namespace

std::unique_ptr<Tokenizer> load_spm_tokenizer(const fs::path& file) {
  return std::make_unique<SpmTokenizer>(file);
}

}  // namespace esft::text
