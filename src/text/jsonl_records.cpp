#include "jsonl_records.h"

#include <fmt/format.h>

#include "esft/error.h"

namespace esft {

namespace {

using json = nlohmann::json;

std::vector<int32_t> int_list(const json& v, const char* key, bool allow_ignore) {
  if (!v.is_array()) fail("\"{}\" must be a list of integers", key);
  std::vector<int32_t> out;
  out.reserve(v.size());
  for (auto& x : v) {
    if (!x.is_number_integer()) fail("\"{}\" holds {}, not an integer", key, x.dump());
    int64_t i = x.get<int64_t>();
    if (i < 0 && !(allow_ignore && i == kIgnoreIndex)) fail("\"{}\" holds {}, not a token id", key, i);
    if (i > INT32_MAX) fail("\"{}\" holds {}, too large for a token id", key, i);
    out.push_back(int32_t(i));
  }
  return out;
}

Sample parse_tokens(const json& j) {
  Sample s;
  s.input_ids = int_list(j["input_ids"], "input_ids", false);
  if (j.contains("labels") && !j["labels"].is_null()) {
    s.labels = int_list(j["labels"], "labels", true);
    if (s.labels.size() != s.input_ids.size())
      fail("{} labels for {} input_ids (must be equal)", s.labels.size(), s.input_ids.size());
  } else {
    s.labels = s.input_ids;  // plain language modelling: every token trained
  }
  return s;
}

// A string field, or a list of OpenAI content parts whose text parts are concatenated.
std::string text_of(const json& v, const std::string& what) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_array()) {
    std::string s;
    for (auto& part : v) {
      if (part.is_string()) {
        s += part.get<std::string>();
      } else if (part.is_object() && part.value("type", "") == "text" && part.contains("text") && part["text"].is_string()) {
        s += part["text"].get<std::string>();
      } else {
        fail("{} holds a content part that is not text ({}); only text is supported", what, part.dump().substr(0, 80));
      }
    }
    return s;
  }
  fail("{} must be a string, not {}", what, v.is_null() ? "null" : v.type_name());
}

std::string string_field(const json& j, const char* key, const std::string& what) {
  if (!j.contains(key)) fail("{} has no \"{}\"", what, key);
  return text_of(j[key], fmt::format("{}.{}", what, key));
}

// "mask": 1, "loss": false, "weight": 0 exclude a message from the loss.
bool trained_flag(const json& m, const std::string& role, const std::string& what) {
  bool train = role == "assistant";
  bool explicit_true = false;
  if (m.contains("mask") && !m["mask"].is_null()) {
    auto& v = m["mask"];
    if (!(v.is_boolean() || v.is_number())) fail("{}.mask must be 0/1 or a boolean", what);
    if (v.is_boolean() ? v.get<bool>() : v.get<double>() != 0) train = false;
  }
  if (m.contains("loss") && !m["loss"].is_null()) {
    if (!m["loss"].is_boolean()) fail("{}.loss must be true, false or null", what);
    if (m["loss"].get<bool>()) explicit_true = true; else train = false;
  }
  if (m.contains("weight") && !m["weight"].is_null()) {
    if (!m["weight"].is_number()) fail("{}.weight must be 0 or 1", what);
    if (m["weight"].get<double>() == 0) train = false; else explicit_true = true;
  }
  if (explicit_true && role != "assistant") fail("{}: only assistant messages can be trained (role \"{}\")", what, role);
  return train;
}

std::optional<std::string> optional_text(const json& m, const char* key, const std::string& what) {
  if (!m.contains(key) || m[key].is_null()) return std::nullopt;
  return text_of(m[key], fmt::format("{}.{}", what, key));
}

ChatMessage make_message(std::string role, std::string content) {
  ChatMessage m;
  m.train = role == "assistant";
  m.role = std::move(role);
  m.content = std::move(content);
  return m;
}

// OpenAI-style message list ("messages", or "prompt"/"completion" lists).
void parse_messages(const json& list, const char* key, std::vector<ChatMessage>* out) {
  if (!list.is_array()) fail("\"{}\" must be a list of messages", key);
  for (size_t i = 0; i < list.size(); ++i) {
    const auto& m = list[i];
    const std::string what = fmt::format("{}[{}]", key, i);
    if (!m.is_object()) fail("{} must be an object with \"role\" and \"content\"", what);
    if (!m.contains("role") || !m["role"].is_string()) fail("{} needs a string \"role\"", what);
    std::string role = m["role"].get<std::string>();
    if (role == "developer") role = "system";
    if (role != "system" && role != "user" && role != "assistant" && role != "tool")
      fail("{}: unknown role \"{}\" (system, user, assistant, tool)", what, role);
    if (m.contains("tool_calls") && !m["tool_calls"].is_null() && !m["tool_calls"].empty())
      fail("{}: tool calls are not supported", what);
    ChatMessage msg;
    msg.role = role;
    if (!m.contains("content")) fail("{} has no \"content\"", what);
    msg.content = text_of(m["content"], what + ".content");
    msg.reasoning_content = optional_text(m, "reasoning_content", what);
    msg.thinking = optional_text(m, "thinking", what);
    msg.train = trained_flag(m, role, what);
    out->push_back(std::move(msg));
  }
}

void parse_sharegpt(const json& list, std::vector<ChatMessage>* out) {
  if (!list.is_array()) fail("\"conversations\" must be a list of {{\"from\", \"value\"}} turns");
  for (size_t i = 0; i < list.size(); ++i) {
    const auto& m = list[i];
    const std::string what = fmt::format("conversations[{}]", i);
    if (!m.is_object()) fail("{} must be an object with \"from\" and \"value\"", what);
    const char* role_key = m.contains("from") ? "from" : "role";
    const char* text_key = m.contains("value") ? "value" : "content";
    if (!m.contains(role_key) || !m[role_key].is_string()) fail("{} needs a string \"from\"", what);
    std::string from = m[role_key].get<std::string>(), role;
    if (from == "human" || from == "user") role = "user";
    else if (from == "gpt" || from == "assistant" || from == "chatgpt" || from == "model") role = "assistant";
    else if (from == "system") role = "system";
    else if (from == "observation" || from == "tool" || from == "function_response") role = "tool";
    else if (from == "function_call") fail("{}: function calls are not supported", what);
    else fail("{}: unknown speaker \"{}\" (human, gpt, system, observation)", what, from);
    if (!m.contains(text_key)) fail("{} has no \"value\"", what);
    ChatMessage msg = make_message(role, text_of(m[text_key], what + "." + text_key));
    msg.train = trained_flag(m, role, what);
    out->push_back(std::move(msg));
  }
}

// alpaca / query-response "history": [[q, a], ...]
void parse_history(const json& j, std::vector<ChatMessage>* out) {
  if (!j.contains("history") || j["history"].is_null()) return;
  const auto& h = j["history"];
  if (!h.is_array()) fail("\"history\" must be a list of [query, response] pairs");
  for (size_t i = 0; i < h.size(); ++i) {
    if (!h[i].is_array() || h[i].size() != 2) fail("history[{}] must be a [query, response] pair", i);
    out->push_back(make_message("user", text_of(h[i][0], fmt::format("history[{}][0]", i))));
    out->push_back(make_message("assistant", text_of(h[i][1], fmt::format("history[{}][1]", i))));
  }
}

void add_record_system(const json& j, std::vector<ChatMessage>* msgs) {
  if (!j.contains("system") || j["system"].is_null()) return;
  std::string s = text_of(j["system"], "\"system\"");
  if (!msgs->empty() && msgs->front().role == "system") return;  // the conversation's own wins
  msgs->insert(msgs->begin(), make_message("system", s));
}

}  // namespace

Record parse_record(const json& j) {
  if (!j.is_object()) fail("a record must be a JSON object");
  Record r;
  if (j.contains("input_ids")) {
    r.kind = Record::Kind::Tokens;
    r.tokens = parse_tokens(j);
    return r;
  }
  r.kind = Record::Kind::Chat;
  if (j.contains("messages")) {
    parse_messages(j["messages"], "messages", &r.messages);
  } else if (j.contains("conversations")) {
    parse_sharegpt(j["conversations"], &r.messages);
  } else if (j.contains("instruction")) {
    std::string ins = string_field(j, "instruction", "alpaca record");
    std::string in = j.contains("input") && !j["input"].is_null() ? text_of(j["input"], "\"input\"") : "";
    if (!j.contains("output")) fail("alpaca record (\"instruction\") has no \"output\"");
    parse_history(j, &r.messages);
    r.messages.push_back(make_message("user", !ins.empty() && !in.empty() ? ins + "\n" + in : ins + in));
    r.messages.push_back(make_message("assistant", text_of(j["output"], "\"output\"")));
  } else if (j.contains("query")) {
    if (!j.contains("response")) fail("record with \"query\" has no \"response\"");
    parse_history(j, &r.messages);
    r.messages.push_back(make_message("user", text_of(j["query"], "\"query\"")));
    r.messages.push_back(make_message("assistant", text_of(j["response"], "\"response\"")));
  } else if (j.contains("prompt")) {
    if (!j.contains("completion")) fail("record with \"prompt\" has no \"completion\"");
    if (j["prompt"].is_array() && j["completion"].is_array() &&
        (j["prompt"].empty() || j["prompt"][0].is_object())) {  // conversational prompt/completion
      parse_messages(j["prompt"], "prompt", &r.messages);
      for (auto& m : r.messages) m.train = false;
      parse_messages(j["completion"], "completion", &r.messages);
    } else {
      r.kind = Record::Kind::PromptCompletion;
      r.prompt = text_of(j["prompt"], "\"prompt\"");
      r.completion = text_of(j["completion"], "\"completion\"");
      return r;
    }
  } else if (j.contains("text")) {
    r.kind = Record::Kind::Text;
    r.text = text_of(j["text"], "\"text\"");
    return r;
  } else {
    fail("unrecognised record (expected input_ids, messages, conversations, instruction/output, query/response, "
         "prompt/completion or text)");
  }
  add_record_system(j, &r.messages);
  if (r.messages.empty()) fail("the conversation has no messages");
  return r;
}

Record parse_raw_text_record(const json& j) {
  if (!j.is_object()) fail("a record must be a JSON object");
  if (!j.contains("text")) fail("--raw encodes each record's \"text\" field, and this record has none");
  Record r;
  r.kind = Record::Kind::Text;
  r.text = text_of(j["text"], "\"text\"");
  return r;
}

}  // namespace esft
