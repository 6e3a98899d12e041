// Chat formats: a conversation -> the string each model family's chat template renders, cut
// into segments that are trained (assistant output) or masked (everything the model is given),
// then token ids with a loss mask. Torch-free.
//
// Families and their templates (rendered strings equal transformers' apply_chat_template(...,
// tokenize=False) for the family's Jinja template):
//   esft      the ESFT reference's plain format: [BOS] "User: {q}\n\nAssistant:" masked,
//             " {a}" + EOS trained (contents stripped, pieces encoded separately, BOS labelled
//             with its own id, all as utils.py does); it is also DeepSeek-V2's chat format. A
//             system message is rendered as "{s}\n\n" before the first turn.
//   qwen      ChatML (Qwen2 / Qwen2.5 / Qwen3 / their MoE variants), with the Qwen3 <think> rules
//             when the model's template has them, and Qwen2's default system prompt when it has one.
//   deepseek  DeepSeek-V3 (and V2.5): <｜User｜> / <｜Assistant｜> ... <｜end▁of▁sentence｜>.
//   glm4      GLM-4.5: [gMASK]<sop> <|user|>\n... <|assistant|>\n<think>...</think>\n...
//   gpt-oss   OpenAI harmony: <|start|>role<|channel|>...<|message|>...<|end|> / <|return|>.
//   mixtral   Mixtral-Instruct: <s> [INST] {q} [/INST] {a}</s>.
//
// Loss mask (what a model must produce is trained, what it is given is masked):
//   system, user and tool turns, role headers the inference prompt already holds
//   (<|im_start|>assistant\n, <｜Assistant｜>, <|assistant|>, <|start|>assistant, ' [INST] ...'):
//   masked. Assistant content and the token that ends the turn (<|im_end|>, EOS, <|return|>,
//   <|end|>, GLM's next <|user|>/<|observation|>): trained. The newline ChatML puts after
//   <|im_end|> is masked: generation stops at <|im_end|>, so the model never produces it.
//   Qwen3 / GLM <think> blocks of a trained turn are trained (the model generates them).
//
// Roles: system, user, assistant everywhere; tool results (role "tool") in qwen, deepseek and
// glm4, as their templates render them. Assistant tool calls are not supported (an error).
#pragma once
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "esft/data.h"
#include "esft/fs.h"

namespace esft {

class Tokenizer;

struct ChatMessage {
  std::string role;  // system | user | assistant | tool
  std::string content;
  std::optional<std::string> reasoning_content;  // read by the Qwen3 and GLM-4.5 templates
  std::optional<std::string> thinking;           // read by the GPT-OSS template
  bool train = false;                            // loss on this turn
};

struct ChatSegment {
  std::string text;
  bool trained = false;
  bool special = false;  // exactly one control token of the template (e.g. "<|im_end|>")
  bool piece = false;    // a separate tokenizer call in the reference: never merged with neighbours
};

struct RenderedChat {
  std::vector<ChatSegment> segments;
  // true: ids are the concatenation of per-segment encodings (the ESFT reference encodes its
  // pieces separately); false: ids are the encoding of the whole string (what HF's
  // apply_chat_template(tokenize=True) produces), masks placed at the segment boundaries.
  bool segmentwise = false;

  void add(std::string_view text, bool trained);          // merges with a preceding text segment of equal flag
  void add_piece(std::string_view text, bool trained);    // a segment of its own
  void add_special(std::string_view token, bool trained);  // no-op for an empty token
  std::string text() const;
  std::string trained_text() const;  // the trained segments concatenated (for checks and tests)
};

// Everything a chat format needs to know about the model, resolved once from its directory.
struct ChatFormat {
  std::string name = "esft";   // esft | qwen | deepseek | glm4 | gpt-oss | mixtral
  std::string bos_token, eos_token;  // from tokenizer_config.json ("" = none)
  bool add_bos = false;        // the tokenizer adds BOS to plain text (tokenizer_config add_bos_token)
  // qwen
  bool qwen_think = false;          // Qwen3 <think> rules for turns after the last user query
  std::string qwen_default_system;  // Qwen2 / Qwen2.5: system prompt when the conversation has none
  bool qwen_tool_wrap = true;       // Qwen2.5/3: tool results go into a user turn as <tool_response>
                                    // blocks; the plain Qwen2 template gives them a "tool" turn
  // mixtral: the current template puts a space before [INST] and before the answer
  bool mixtral_spaces = true;
  // gpt-oss: the system message's "Current date:" (empty: today, as the template's strftime_now)
  std::string harmony_date;
  std::string harmony_reasoning = "medium";

  std::string describe() const;  // one line, for logs and cache keys
};

// Names accepted by --chat-format.
const std::vector<std::string>& chat_format_names();

// Resolves --chat-format NAME against a model directory (config.json: model_type/architectures;
// tokenizer_config.json: bos/eos tokens, add_bos_token, chat_template). `auto` picks the family
// of the chat template when there is one; else the model type's family when the tokenizer has
// that family's control tokens (<|im_start|>, <｜User｜>, ...); else esft (e.g. a base model
// with its own tokenizer). Options (Qwen3 think rules, a default system prompt, Mixtral's
// spacing) come from the model's template when it is of the chosen family.
// tokenizer_dir, when given, is where tokenizer_config.json is looked for first.
ChatFormat resolve_chat_format(const std::string& name, const fs::path& model_dir,
                               const fs::path& tokenizer_dir = {});

class ChatRenderer {
 public:
  virtual ~ChatRenderer() = default;
  // Errors (unsupported roles, malformed turns) are thrown as esft::Error without a location;
  // the caller prefixes file:line.
  virtual RenderedChat render(const std::vector<ChatMessage>& messages) const = 0;
};

std::unique_ptr<ChatRenderer> make_chat_renderer(const ChatFormat& format);

// Plain language modelling text: [BOS if the tokenizer adds one] text EOS, every token trained.
RenderedChat render_plain_text(const ChatFormat& format, std::string_view text);
// Raw prompt/completion (no chat template): [BOS] prompt masked, completion + EOS trained.
RenderedChat render_prompt_completion(const ChatFormat& format, std::string_view prompt, std::string_view completion);

// Token ids and labels of a rendered conversation. Ids equal encoding the whole string (or the
// segments, when segmentwise). A token that straddles a trained/masked boundary (possible only
// where a boundary is not next to a control token) is trained: it holds text the model emits.
Sample encode_rendered(const RenderedChat& chat, const Tokenizer& tok);

}  // namespace esft
