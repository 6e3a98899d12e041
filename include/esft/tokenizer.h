// Tokenizers: HF tokenizer.json (byte-level BPE) and SentencePiece tokenizer.model, behind one
// interface. encode() matches HF `Tokenizer.encode(text, add_special_tokens=False).ids`:
// added/special tokens written inside the text are recognised, no BOS/EOS is added.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "esft/fs.h"

namespace esft {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // dir holds tokenizer.json (preferred) or tokenizer.model, and optionally
  // tokenizer_config.json (bos/eos/pad tokens, chat_template) and special_tokens_map.json.
  static std::unique_ptr<Tokenizer> from_model_dir(const fs::path& dir);
  // A single tokenizer.json or tokenizer.model file.
  static std::unique_ptr<Tokenizer> from_file(const fs::path& file);

  virtual std::vector<int32_t> encode(std::string_view text) const = 0;
  virtual std::string decode(const std::vector<int32_t>& ids, bool skip_special_tokens = false) const = 0;
  virtual std::optional<int32_t> token_to_id(std::string_view token) const = 0;
  virtual std::string id_to_token(int32_t id) const = 0;
  virtual size_t vocab_size() const = 0;  // including added tokens

  // encode() of every text, spread over `threads` threads (0: all hardware threads). The
  // result is identical to calling encode() one by one.
  std::vector<std::vector<int32_t>> encode_batch(const std::vector<std::string>& texts, int threads = 0) const;
  // Contents of the special tokens (those decode(..., skip_special_tokens=true) drops).
  virtual std::vector<std::string> special_tokens() const { return {}; }

  // From tokenizer_config.json when present.
  std::optional<int32_t> bos_id, eos_id, pad_id;
  std::string bos_token, eos_token, pad_token;
  std::string chat_template;  // raw Jinja text, empty if none
  // add_bos_token / add_eos_token of tokenizer_config.json (e.g. true for DeepSeek-V3's BOS):
  // what HF adds around a sequence with add_special_tokens=True. encode() never adds them.
  bool add_bos_token = false, add_eos_token = false;
};

}  // namespace esft
