// One jsonl record -> what it holds, detected per line:
//   {"input_ids": [...], "labels": [...]}            pre-tokenized (labels optional: all trained)
//   {"messages": [{"role", "content"}, ...]}          OpenAI roles (ESFT, ms-swift)
//   {"conversations": [{"from", "value"}, ...]}       ShareGPT (human / gpt / system / observation)
//   {"instruction", "input", "output"}                alpaca (query = instruction + "\n" + input)
//   {"query", "response"}                             ms-swift query/response
//   {"prompt", "completion"}                          raw text (no template) or lists of messages
//   {"text"}                                          plain language modelling
// Chat records may carry "system" (a system prompt when the conversation has none) and "history"
// ([[q, a], ...] before the turn, alpaca / query-response). A message is excluded from the loss
// with "mask": 1, "loss": false or "weight": 0.
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "esft/chat.h"
#include "esft/data.h"

namespace esft {

struct Record {
  enum class Kind { Tokens, Chat, PromptCompletion, Text };
  Kind kind = Kind::Tokens;
  Sample tokens;                      // Tokens
  std::vector<ChatMessage> messages;  // Chat
  std::string prompt, completion;     // PromptCompletion
  std::string text;                   // Text
};

// Errors say what is wrong with the record (no location: the caller prefixes file:line).
Record parse_record(const nlohmann::json& j);

// --raw: the record's "text" field only.
Record parse_raw_text_record(const nlohmann::json& j);

}  // namespace esft
