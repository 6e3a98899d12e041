// One renderer per family. Each follows its Jinja template line by line (see the notes at each
// class), so the rendered string equals transformers' apply_chat_template(..., tokenize=False);
// the segments add what the template does not say: which pieces are trained.
#include <fmt/format.h>

#include "chat_strings.h"
#include "esft/chat.h"
#include "esft/error.h"

namespace esft {

namespace {

void check_roles(const std::vector<ChatMessage>& msgs, std::initializer_list<const char*> allowed, const char* family) {
  if (msgs.empty()) fail("a conversation needs at least one message");
  for (size_t i = 0; i < msgs.size(); ++i) {
    bool ok = false;
    for (auto a : allowed) ok |= msgs[i].role == a;
    if (!ok) {
      std::string list;
      for (auto a : allowed) list += std::string(list.empty() ? "" : ", ") + a;
      fail("message {}: role \"{}\" is not supported by the {} chat format ({})", i, msgs[i].role, family, list);
    }
  }
}

// ---- esft: the reference's utils.get_formatted_input_and_target ------------------------------
// [bos] "User: " + q.strip() + "\n\nAssistant:" (masked) " " + a.strip() (+ eos) (trained),
// each piece encoded on its own. BOS keeps its own id as label (the reference's target starts
// with [bos]; it is never predicted within its sample, but causal packing trains it after the
// previous sample's EOS, as the reference does). System messages (not in the reference) render
// as DeepSeek-V2's chat template does: "{s}\n\n".
class EsftRenderer : public ChatRenderer {
 public:
  explicit EsftRenderer(ChatFormat f) : f_(std::move(f)) {}
  RenderedChat render(const std::vector<ChatMessage>& msgs) const override {
    check_roles(msgs, {"system", "user", "assistant"}, "esft");
    RenderedChat r;
    r.segmentwise = true;
    r.add_special(f_.bos_token, true);
    for (auto& m : msgs) {
      if (m.role == "system")
        r.add_piece(py::strip(m.content) + "\n\n", false);
      else if (m.role == "user")
        r.add_piece("User: " + py::strip(m.content) + "\n\nAssistant:", false);
      else
        r.add_piece(" " + py::strip(m.content), m.train), r.add_special(f_.eos_token, m.train);
    }
    return r;
  }

 private:
  ChatFormat f_;
};

// ---- qwen: ChatML (Qwen2 / Qwen2.5 / Qwen3 templates) ----------------------------------------
// system first: <|im_start|>system\n{s}<|im_end|>\n (Qwen2/2.5 put a default system prompt when
// there is none); user/system turns (and tool turns in the plain Qwen2 template):
// <|im_start|>{role}\n{c}<|im_end|>\n, tool results otherwise wrapped into a user turn; assistant:
// <|im_start|>assistant\n{c}<|im_end|>\n. Qwen3 (qwen_think): reasoning is taken from
// reasoning_content or from "<think>...</think>" in the content, and assistant turns after the
// last real user query get "<think>\n{r}\n</think>\n\n" (the last turn always, earlier ones when
// r is non-empty); earlier turns keep only the content after </think>.
class QwenRenderer : public ChatRenderer {
 public:
  explicit QwenRenderer(ChatFormat f) : f_(std::move(f)) {}
  RenderedChat render(const std::vector<ChatMessage>& msgs) const override {
    check_roles(msgs, {"system", "user", "assistant", "tool"}, "qwen");
    RenderedChat r;
    auto turn = [&](const std::string& role, const std::string& content) {
      r.add_special("<|im_start|>", false);
      r.add(role + "\n" + content, false);
      r.add_special("<|im_end|>", false);
      r.add("\n", false);
    };
    if (msgs[0].role == "system")
      turn("system", msgs[0].content);
    else if (!f_.qwen_default_system.empty())
      turn("system", f_.qwen_default_system);

    // Index of the last user message that is not a wrapped tool response (Qwen3's last_query_index).
    const int n = int(msgs.size());
    int last_query = n - 1;
    for (int i = n - 1; i >= 0; --i) {
      const auto& c = msgs[i].content;
      if (msgs[i].role == "user" && !(py::startswith(c, "<tool_response>") && py::endswith(c, "</tool_response>"))) {
        last_query = i;
        break;
      }
    }

    for (int i = 0; i < n; ++i) {
      const auto& m = msgs[i];
      if (m.role == "user" || (m.role == "system" && i > 0) || (m.role == "tool" && !f_.qwen_tool_wrap)) {
        turn(m.role, m.content);
      } else if (m.role == "assistant") {
        std::string content = m.content, reasoning;
        if (f_.qwen_think) {
          if (m.reasoning_content) {
            reasoning = *m.reasoning_content;
          } else if (py::contains(m.content, "</think>")) {
            content = py::lstrip_chars(py::split_last(m.content, "</think>"), "\n");
            reasoning = py::lstrip_chars(py::split_last(py::rstrip_chars(py::split_first(m.content, "</think>"), "\n"), "<think>"), "\n");
          }
        }
        r.add_special("<|im_start|>", false);
        r.add("assistant\n", false);
        if (f_.qwen_think && i > last_query && (i == n - 1 || !reasoning.empty())) {
          r.add_special("<think>", m.train);
          r.add("\n" + py::strip_chars(reasoning, "\n") + "\n", m.train);
          r.add_special("</think>", m.train);
          r.add("\n\n" + py::lstrip_chars(content, "\n"), m.train);
        } else {
          r.add(content, m.train);
        }
        r.add_special("<|im_end|>", m.train);
        r.add("\n", false);
      } else if (m.role == "tool") {
        if (i == 0 || msgs[i - 1].role != "tool") {
          r.add_special("<|im_start|>", false);
          r.add("user", false);
        }
        r.add("\n<tool_response>\n" + m.content + "\n</tool_response>", false);
        if (i == n - 1 || msgs[i + 1].role != "tool") {
          r.add_special("<|im_end|>", false);
          r.add("\n", false);
        }
      }
    }
    return r;
  }

 private:
  ChatFormat f_;
};

// ---- deepseek: DeepSeek-V3 ------------------------------------------------------------------
// {bos}{all system contents joined by "\n\n"}, then per turn: <｜User｜>{q};
// <｜Assistant｜>{a}<｜end▁of▁sentence｜> (after tool outputs: <｜tool▁outputs▁end｜>{a}<｜end▁of▁sentence｜>);
// tool: <｜tool▁outputs▁begin｜><｜tool▁output▁begin｜>{o}<｜tool▁output▁end｜> the first time in the
// conversation, "\n<｜tool▁output▁begin｜>{o}<｜tool▁output▁end｜>" afterwards; trailing tool
// outputs are closed by <｜tool▁outputs▁end｜>.
class DeepseekRenderer : public ChatRenderer {
 public:
  explicit DeepseekRenderer(ChatFormat f) : f_(std::move(f)) {}
  RenderedChat render(const std::vector<ChatMessage>& msgs) const override {
    check_roles(msgs, {"system", "user", "assistant", "tool"}, "deepseek");
    RenderedChat r;
    std::string system;
    bool first_system = true;
    for (auto& m : msgs)
      if (m.role == "system") system += (first_system ? "" : "\n\n") + m.content, first_system = false;
    r.add_special(f_.bos_token, false);
    r.add(system, false);
    bool is_tool = false, output_first = true;
    for (auto& m : msgs) {
      if (m.role == "user") {
        is_tool = false;
        r.add_special("<｜User｜>", false);
        r.add(m.content, false);
      } else if (m.role == "assistant") {
        r.add_special(is_tool ? "<｜tool▁outputs▁end｜>" : "<｜Assistant｜>", false);
        is_tool = false;
        r.add(m.content, m.train);
        r.add_special("<｜end▁of▁sentence｜>", m.train);
      } else if (m.role == "tool") {
        is_tool = true;
        if (output_first) {
          r.add_special("<｜tool▁outputs▁begin｜>", false);
          output_first = false;
        } else {
          r.add("\n", false);
        }
        r.add_special("<｜tool▁output▁begin｜>", false);
        r.add(m.content, false);
        r.add_special("<｜tool▁output▁end｜>", false);
      }
    }
    if (is_tool) r.add_special("<｜tool▁outputs▁end｜>", false);
    return r;
  }

 private:
  ChatFormat f_;
};

// ---- glm4: GLM-4.5 --------------------------------------------------------------------------
// [gMASK]<sop>, then user: <|user|>\n{q}; system: <|system|>\n{s}; assistant: <|assistant|> then
// "\n<think>{r.strip()}</think>" for turns after the last user message that have reasoning, else
// "\n<think></think>", then "\n{c.strip()}" when c.strip() is non-empty; tool:
// <|observation|> (once per run of tool messages) + "\n<tool_response>\n{o}\n</tool_response>".
// The template has no end-of-turn token: the model stops by emitting the next <|user|> or
// <|observation|>, so that token is trained after a trained assistant turn, and a conversation
// that ends with an assistant turn gets the EOS (<|endoftext|>) appended, trained.
class GlmRenderer : public ChatRenderer {
 public:
  explicit GlmRenderer(ChatFormat f) : f_(std::move(f)) {}
  RenderedChat render(const std::vector<ChatMessage>& msgs) const override {
    check_roles(msgs, {"system", "user", "assistant", "tool"}, "glm4");
    RenderedChat r;
    r.add_special("[gMASK]", false);
    r.add_special("<sop>", false);
    int last_user = -1;
    for (size_t i = 0; i < msgs.size(); ++i)
      if (msgs[i].role == "user") last_user = int(i);
    bool prev_trained_assistant = false;  // the next turn's opening token ends that assistant turn
    for (size_t i = 0; i < msgs.size(); ++i) {
      const auto& m = msgs[i];
      const bool end_of_turn = prev_trained_assistant;
      prev_trained_assistant = false;
      if (m.role == "user") {
        r.add_special("<|user|>", end_of_turn);
        r.add("\n" + m.content, false);
      } else if (m.role == "system") {
        r.add_special("<|system|>", false);
        r.add("\n" + m.content, false);
      } else if (m.role == "assistant") {
        std::string content = m.content, reasoning;
        if (m.reasoning_content) {
          reasoning = *m.reasoning_content;
        } else if (py::contains(content, "</think>")) {
          reasoning = py::lstrip_chars(py::split_last(py::rstrip_chars(py::split_first(content, "</think>"), "\n"), "<think>"), "\n");
          content = py::lstrip_chars(py::split_last(content, "</think>"), "\n");
        }
        r.add_special("<|assistant|>", false);
        r.add("\n", m.train);
        r.add_special("<think>", m.train);
        if (int(i) > last_user && !reasoning.empty()) r.add(py::strip(reasoning), m.train);
        r.add_special("</think>", m.train);
        std::string c = py::strip(content);
        if (!c.empty()) r.add("\n" + c, m.train);
        prev_trained_assistant = m.train;
      } else {  // tool
        if (i == 0 || msgs[i - 1].role != "tool") r.add_special("<|observation|>", end_of_turn);
        r.add("\n", false);
        r.add_special("<tool_response>", false);
        r.add("\n" + m.content + "\n", false);
        r.add_special("</tool_response>", false);
      }
    }
    if (prev_trained_assistant || (!msgs.empty() && msgs.back().role == "assistant"))
      r.add_special(f_.eos_token, prev_trained_assistant);
    return r;
  }

 private:
  ChatFormat f_;
};

// ---- gpt-oss: OpenAI harmony (the GPT-OSS chat template) -------------------------------------
// <|start|>system<|message|>{model identity, knowledge cutoff, date, reasoning effort, channels}<|end|>
// a first system/developer message -> <|start|>developer<|message|># Instructions\n\n{s}\n\n<|end|>
// (later system messages are not rendered, as in the template); user:
// <|start|>user<|message|>{q}<|end|>; assistant: <|start|>assistant<|channel|>final<|message|>{a}<|end|>,
// the last message (when it is an assistant's) ends in <|return|> instead and is preceded by its
// analysis message <|start|>assistant<|channel|>analysis<|message|>{thinking}<|end|> when the
// message has a "thinking" field. The model is prompted with "<|start|>assistant" and generates
// the rest, including the header of the final message after its analysis message.
class HarmonyRenderer : public ChatRenderer {
 public:
  explicit HarmonyRenderer(ChatFormat f) : f_(std::move(f)) {}
  RenderedChat render(const std::vector<ChatMessage>& msgs) const override {
    check_roles(msgs, {"system", "user", "assistant"}, "gpt-oss");
    RenderedChat r;
    auto message = [&](const std::string& header, const std::string& body, const char* end, bool trained_from_channel,
                       bool trained_start) {
      // header: "system" or "assistant<|channel|>final": split at control tokens.
      static const std::string kChannel = "<|channel|>";
      r.add_special("<|start|>", trained_start);
      size_t ch = header.find(kChannel);
      r.add(header.substr(0, ch), trained_start);
      if (ch != std::string::npos) {
        r.add_special(kChannel, trained_from_channel);
        r.add(header.substr(ch + kChannel.size()), trained_from_channel);
      }
      r.add_special("<|message|>", trained_from_channel);
      r.add(body, trained_from_channel);
      r.add_special(end, trained_from_channel);
    };
    std::string sys = "You are ChatGPT, a large language model trained by OpenAI.\nKnowledge cutoff: 2024-06\nCurrent date: " +
                      f_.harmony_date + "\n\nReasoning: " + f_.harmony_reasoning +
                      "\n\n# Valid channels: analysis, commentary, final. Channel must be included for every message.";
    message("system", sys, "<|end|>", false, false);
    size_t first = 0;
    if (msgs[0].role == "system") {
      first = 1;
      if (!msgs[0].content.empty()) message("developer", "# Instructions\n\n" + msgs[0].content + "\n\n", "<|end|>", false, false);
    }
    for (size_t i = first; i < msgs.size(); ++i) {
      const auto& m = msgs[i];
      if (m.role == "user") {
        message("user", m.content, "<|end|>", false, false);
      } else if (m.role == "assistant") {
        for (auto* field : {&m.content, m.thinking ? &*m.thinking : nullptr})
          if (field && (py::contains(*field, "<|channel|>analysis<|message|>") || py::contains(*field, "<|channel|>final<|message|>")))
            fail("message {}: an assistant message holds <|channel|> tags; put the analysis text in \"thinking\" and the "
                 "final answer in \"content\"",
                 i);
        const bool last = i + 1 == msgs.size();
        bool after_analysis = false;
        if (last && m.thinking) {
          message("assistant<|channel|>analysis", *m.thinking, "<|end|>", m.train, false);
          after_analysis = true;
        }
        message("assistant<|channel|>final", m.content, last ? "<|return|>" : "<|end|>", m.train, after_analysis && m.train);
      }
      // system messages after the first are not rendered by the template
    }
    return r;
  }

 private:
  ChatFormat f_;
};

// ---- mixtral: Mixtral-8x7B-Instruct ---------------------------------------------------------
// {bos} then alternating turns starting with a user turn (after an optional first system
// message): ' [INST] ' + [s + '\n\n' on the first] + q + ' [/INST]', and ' ' + a + eos.
// The first v0.1 template (mixtral_spaces = false) had '[INST] ' and no space before the answer.
class MixtralRenderer : public ChatRenderer {
 public:
  explicit MixtralRenderer(ChatFormat f) : f_(std::move(f)) {}
  RenderedChat render(const std::vector<ChatMessage>& msgs) const override {
    check_roles(msgs, {"system", "user", "assistant"}, "mixtral");
    RenderedChat r;
    size_t first = 0;
    const std::string* system = nullptr;
    if (msgs[0].role == "system") system = &msgs[0].content, first = 1;
    r.add_special(f_.bos_token, false);
    const std::string sp = f_.mixtral_spaces ? " " : "";
    for (size_t i = first; i < msgs.size(); ++i) {
      const auto& m = msgs[i];
      const bool expect_user = (i - first) % 2 == 0;
      if ((m.role == "user") != expect_user || m.role == "system")
        fail("message {}: the mixtral format needs roles alternating user/assistant/user/... after an optional first "
             "system message",
             i);
      if (m.role == "user") {
        std::string q = (i == first && system) ? *system + "\n\n" + m.content : m.content;
        r.add(sp + "[INST] " + q + " [/INST]", false);
      } else {
        r.add(sp + m.content, m.train);
        r.add_special(f_.eos_token, m.train);
      }
    }
    return r;
  }

 private:
  ChatFormat f_;
};

}  // namespace

std::unique_ptr<ChatRenderer> make_chat_renderer(const ChatFormat& f) {
  if (f.name == "esft") return std::make_unique<EsftRenderer>(f);
  if (f.name == "qwen") return std::make_unique<QwenRenderer>(f);
  if (f.name == "deepseek") return std::make_unique<DeepseekRenderer>(f);
  if (f.name == "glm4") return std::make_unique<GlmRenderer>(f);
  if (f.name == "gpt-oss") return std::make_unique<HarmonyRenderer>(f);
  if (f.name == "mixtral") return std::make_unique<MixtralRenderer>(f);
  fail("unknown chat format \"{}\"", f.name);
}

}  // namespace esft
