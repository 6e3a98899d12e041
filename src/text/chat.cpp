// Chat format resolution (--chat-format against a model directory) and the encoding of rendered
// conversations into ids + labels. The per-family renderers are in chat_templates.cpp.
#include "esft/chat.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <ctime>
#include <nlohmann/json.hpp>

#include "esft/error.h"
#include "esft/tokenizer.h"

namespace esft {

// ---- RenderedChat ---------------------------------------------------------------------------

void RenderedChat::add(std::string_view text, bool trained) {
  if (text.empty()) return;
  if (!segments.empty() && !segments.back().special && !segments.back().piece && segments.back().trained == trained)
    segments.back().text += text;
  else
    segments.push_back({std::string(text), trained, false, false});
}

void RenderedChat::add_piece(std::string_view text, bool trained) {
  if (!text.empty()) segments.push_back({std::string(text), trained, false, true});
}

void RenderedChat::add_special(std::string_view token, bool trained) {
  if (!token.empty()) segments.push_back({std::string(token), trained, true, false});
}

std::string RenderedChat::text() const {
  std::string s;
  for (auto& g : segments) s += g.text;
  return s;
}

std::string RenderedChat::trained_text() const {
  std::string s;
  for (auto& g : segments)
    if (g.trained) s += g.text;
  return s;
}

// ---- format resolution ------------------------------------------------------------------------

std::string ChatFormat::describe() const {
  std::string s = fmt::format("{} bos={} eos={}", name, nlohmann::json(bos_token).dump(), nlohmann::json(eos_token).dump());
  if (name == "qwen")
    s += fmt::format(" think={} default_system={} tool_wrap={}", qwen_think, nlohmann::json(qwen_default_system).dump(),
                     qwen_tool_wrap);
  if (name == "mixtral") s += fmt::format(" spaces={}", mixtral_spaces);
  if (name == "gpt-oss") s += fmt::format(" date={} reasoning={}", harmony_date, harmony_reasoning);
  if (add_bos) s += " add_bos";
  return s;
}

const std::vector<std::string>& chat_format_names() {
  static const std::vector<std::string> names = {"auto", "esft", "qwen", "deepseek", "glm4", "gpt-oss", "mixtral"};
  return names;
}

namespace {

std::string lower(std::string s) {
  for (auto& c : s) c = char(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::string canonical_name(const std::string& name) {
  std::string n = lower(name);
  for (auto& c : n)
    if (c == '_') c = '-';
  if (n == "chatml" || n == "qwen2" || n == "qwen3") return "qwen";
  if (n == "harmony" || n == "gptoss") return "gpt-oss";
  if (n == "glm" || n == "glm4-moe" || n == "glm-4.5" || n == "glm45") return "glm4";
  if (n == "deepseek-v3" || n == "deepseek3") return "deepseek";
  if (n == "mistral") return "mixtral";
  if (n == "plain" || n == "reference" || n == "deepseek-v2") return "esft";
  return n;
}

// tokenizer_config.json stores tokens as a string, null, or an AddedToken object {"content": ...}.
std::string token_string(const nlohmann::json& j) {
  if (j.is_string()) return j.get<std::string>();
  if (j.is_object() && j.contains("content") && j["content"].is_string()) return j["content"].get<std::string>();
  return "";
}

nlohmann::json read_json_or_null(const fs::path& p) {
  if (p.empty() || !fs::is_regular_file(p)) return nullptr;
  try {
    return nlohmann::json::parse(read_file(p));
  } catch (const nlohmann::json::exception& e) {
    fail("{}: not valid JSON ({})", p.string(), e.what());
  }
}

struct ModelTextInfo {
  std::string model_type, architecture, chat_template, bos, eos;
  std::string added_tokens;  // tokenizer_config.json added_tokens_decoder contents, one per line
  fs::path tokenizer_json;
  bool has_tokenizer_config = false, add_bos = false;
};

ModelTextInfo read_model_text_info(const fs::path& model_dir, const fs::path& tokenizer_dir) {
  ModelTextInfo info;
  std::vector<fs::path> dirs;
  if (!tokenizer_dir.empty()) dirs.push_back(tokenizer_dir);
  if (!model_dir.empty()) dirs.push_back(model_dir);
  for (auto& d : dirs)
    if (info.tokenizer_json.empty() && fs::is_regular_file(d / "tokenizer.json")) info.tokenizer_json = d / "tokenizer.json";
  for (auto& d : dirs) {
    auto tc = read_json_or_null(d / "tokenizer_config.json");
    if (tc.is_null()) continue;
    info.has_tokenizer_config = true;
    if (tc.contains("bos_token")) info.bos = token_string(tc["bos_token"]);
    if (tc.contains("eos_token")) info.eos = token_string(tc["eos_token"]);
    if (tc.contains("add_bos_token") && tc["add_bos_token"].is_boolean()) info.add_bos = tc["add_bos_token"].get<bool>();
    if (tc.contains("added_tokens_decoder") && tc["added_tokens_decoder"].is_object())
      for (auto& [id, t] : tc["added_tokens_decoder"].items()) info.added_tokens += token_string(t) + "\n";
    if (tc.contains("chat_template")) {
      auto& ct = tc["chat_template"];
      if (ct.is_string()) info.chat_template = ct.get<std::string>();
      if (ct.is_array())  // [{"name": "default", "template": ...}, ...]
        for (auto& t : ct)
          if (t.is_object() && t.value("name", "") == "default" && t.contains("template") && t["template"].is_string())
            info.chat_template = t["template"].get<std::string>();
    }
    if (info.chat_template.empty() && fs::is_regular_file(d / "chat_template.jinja"))
      info.chat_template = read_file(d / "chat_template.jinja");
    break;
  }
  for (auto& d : {model_dir, tokenizer_dir}) {
    auto cfg = read_json_or_null(d.empty() ? fs::path() : d / "config.json");
    if (cfg.is_null()) continue;
    if (cfg.contains("model_type") && cfg["model_type"].is_string()) info.model_type = lower(cfg["model_type"].get<std::string>());
    if (cfg.contains("architectures") && cfg["architectures"].is_array() && !cfg["architectures"].empty() &&
        cfg["architectures"][0].is_string())
      info.architecture = lower(cfg["architectures"][0].get<std::string>());
    break;
  }
  return info;
}

std::string family_from_template(const std::string& t) {
  if (t.find("<|im_start|>") != std::string::npos) return "qwen";
  if (t.find("<｜User｜>") != std::string::npos) return "deepseek";
  if (t.find("[gMASK]") != std::string::npos) return "glm4";
  if (t.find("<|channel|>") != std::string::npos) return "gpt-oss";
  if (t.find("[INST]") != std::string::npos) return "mixtral";
  if (t.find("'User: '") != std::string::npos) return "esft";  // DeepSeek-V2 chat = the ESFT format
  return "";
}

// The tokenizer's own control tokens name the family when there is neither config.json nor template.
std::string family_from_added_tokens(const std::string& tokens) {
  auto has = [&](const char* t) { return tokens.find(std::string(t) + "\n") != std::string::npos; };
  if (has("<|im_start|>")) return "qwen";
  if (has("<｜User｜>")) return "deepseek";
  if (has("[gMASK]")) return "glm4";
  if (has("<|channel|>")) return "gpt-oss";
  return "";
}

// Does the tokenizer have the family's control tokens? (A base model with a custom tokenizer,
// like the bundled tiny example, has none: it gets the reference format.)
bool tokenizer_has_controls(const ModelTextInfo& info, const std::string& family) {
  const char* token = family == "qwen" ? "<|im_start|>" : family == "deepseek" ? "<｜User｜>"
                    : family == "glm4" ? "<|assistant|>" : family == "gpt-oss" ? "<|channel|>" : nullptr;
  if (!token) return true;  // esft and mixtral write their markers as plain text
  if (info.added_tokens.find(std::string(token) + "\n") != std::string::npos) return true;
  if (info.tokenizer_json.empty()) return false;
  return read_file(info.tokenizer_json).find("\"" + std::string(token) + "\"") != std::string::npos;
}

std::string family_from_model(const ModelTextInfo& info) {
  const std::string& mt = !info.model_type.empty() ? info.model_type : info.architecture;
  auto starts = [&](const char* p) { return mt.rfind(p, 0) == 0; };
  if (starts("qwen")) return "qwen";
  if (starts("deepseek_v3") || starts("deepseekv3")) return "deepseek";
  if (starts("deepseek_v2") || starts("deepseekv2"))  // V2-Chat: "User: ...", V2.5: <｜User｜>
    return info.chat_template.find("<｜User｜>") != std::string::npos ? "deepseek" : "esft";
  if (starts("glm4") || starts("glm")) return "glm4";
  if (starts("gpt_oss") || starts("gptoss")) return "gpt-oss";
  if (starts("mixtral") || starts("mistral")) return "mixtral";
  return "";
}

// Qwen2/2.5 templates write a default system prompt as a string literal:
// '<|im_start|>system\nYou are ...<|im_end|>\n', the newlines spelt as `\n` escapes in some
// template files and as real newline characters inside the literal in others.
std::string qwen_default_system(const std::string& t) {
  for (const std::string head : {"<|im_start|>system\\n", "<|im_start|>system\n"}) {
    for (size_t p = t.find(head); p != std::string::npos; p = t.find(head, p + 1)) {
      size_t b = p + head.size(), e = t.find("<|im_end|>", b);
      if (e == std::string::npos) continue;
      std::string lit = t.substr(b, e - b);
      if (lit.empty() || lit.find_first_of("'\"{}") != std::string::npos) continue;  // not a literal
      std::string out;
      for (size_t i = 0; i < lit.size(); ++i) {
        if (lit[i] == '\\' && i + 1 < lit.size()) {
          char c = lit[++i];
          out += c == 'n' ? '\n' : c == 't' ? '\t' : c;
        } else {
          out += lit[i];
        }
      }
      return out;
    }
  }
  return "";
}

std::string today() {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  localtime_r(&t, &tm);
  char buf[16];
  std::strftime(buf, sizeof buf, "%Y-%m-%d", &tm);
  return buf;
}

}  // namespace

ChatFormat resolve_chat_format(const std::string& name, const fs::path& model_dir, const fs::path& tokenizer_dir) {
  std::string family = canonical_name(name);
  const auto& names = chat_format_names();
  if (std::find(names.begin(), names.end(), family) == names.end())
    fail("--chat-format must be one of auto, esft, qwen (chatml), deepseek, glm4, gpt-oss (harmony), mixtral; not \"{}\"",
         name);
  auto info = read_model_text_info(model_dir, tokenizer_dir);
  if (family == "auto") {
    // The chat template is what the model was tuned with; without one, the model type's format
    // if the tokenizer has its control tokens; else the ESFT reference's plain format.
    family = family_from_template(info.chat_template);
    if (family.empty()) {
      family = family_from_model(info);
      if (!family.empty() && !tokenizer_has_controls(info, family)) family = "esft";
    }
    if (family.empty()) family = family_from_added_tokens(info.added_tokens);
    if (family.empty()) family = "esft";
  }
  ChatFormat f;
  f.name = family;
  f.bos_token = info.bos;
  f.eos_token = info.eos;
  f.add_bos = info.add_bos;
  if (!info.has_tokenizer_config) {  // the family's usual tokens
    if (family == "deepseek") f.bos_token = "<｜begin▁of▁sentence｜>", f.eos_token = "<｜end▁of▁sentence｜>", f.add_bos = true;
    if (family == "mixtral") f.bos_token = "<s>", f.eos_token = "</s>", f.add_bos = true;
    if (family == "glm4") f.eos_token = "<|endoftext|>";
    if (family == "gpt-oss") f.eos_token = "<|return|>";
    if (family == "qwen") f.eos_token = "<|im_end|>";
  }
  const bool template_matches = family_from_template(info.chat_template) == family;
  if (family == "qwen" && template_matches) {
    f.qwen_think = info.chat_template.find("<think>") != std::string::npos;
    f.qwen_default_system = qwen_default_system(info.chat_template);
    f.qwen_tool_wrap = info.chat_template.find("<tool_response>") != std::string::npos;
  }
  if (family == "mixtral" && template_matches) f.mixtral_spaces = info.chat_template.find("' [INST] '") != std::string::npos;
  if (family == "gpt-oss") f.harmony_date = today();
  return f;
}

// ---- plain text and raw prompt/completion -----------------------------------------------------

RenderedChat render_plain_text(const ChatFormat& f, std::string_view text) {
  RenderedChat r;
  r.segmentwise = true;  // [bos] + encode(text) + [eos], as the reference builds plain samples
  if (f.add_bos) r.add_special(f.bos_token, true);
  r.add(text, true);
  r.add_special(f.eos_token, true);
  return r;
}

RenderedChat render_prompt_completion(const ChatFormat& f, std::string_view prompt, std::string_view completion) {
  RenderedChat r;
  if (f.add_bos) r.add_special(f.bos_token, false);
  r.add(prompt, false);
  r.add(completion, true);
  r.add_special(f.eos_token, true);
  return r;
}

// ---- encoding ----------------------------------------------------------------------------------

namespace {

void append_segment(const ChatSegment& g, const Tokenizer& tok, std::vector<int32_t>* ids) {
  if (g.special)
    if (auto id = tok.token_to_id(g.text)) {
      ids->push_back(*id);
      return;
    }
  auto v = tok.encode(g.text);
  ids->insert(ids->end(), v.begin(), v.end());
}

}  // namespace

Sample encode_rendered(const RenderedChat& chat, const Tokenizer& tok) {
  // Per-segment encoding: ids and labels align to segments by construction.
  Sample seg;
  for (auto& g : chat.segments) {
    size_t before = seg.input_ids.size();
    append_segment(g, tok, &seg.input_ids);
    for (size_t i = before; i < seg.input_ids.size(); ++i)
      seg.labels.push_back(g.trained ? seg.input_ids[i] : kIgnoreIndex);
  }
  if (chat.segmentwise) return seg;

  // Whole-string encoding is the reference for templates. Per-segment ids equal it whenever every
  // boundary sits next to a control token (the tokenizer splits on those first); otherwise place
  // each trained/masked boundary where the whole-string ids stop matching the prefix's encoding.
  const std::string whole = chat.text();
  Sample s;
  s.input_ids = tok.encode(whole);
  if (s.input_ids == seg.input_ids) return seg;

  s.labels.assign(s.input_ids.size(), kIgnoreIndex);
  size_t offset = 0, cut = 0;  // char offset of the segment; first token not yet labelled
  bool region_trained = chat.segments.empty() ? false : chat.segments[0].trained;
  for (size_t k = 0; k <= chat.segments.size(); ++k) {
    const bool at_end = k == chat.segments.size();
    if (!at_end && chat.segments[k].trained == region_trained) {
      offset += chat.segments[k].text.size();
      continue;
    }
    size_t next_cut = s.input_ids.size();
    if (!at_end) {
      auto prefix = tok.encode(std::string_view(whole).substr(0, offset));
      size_t lcp = 0;
      while (lcp < prefix.size() && lcp < s.input_ids.size() && prefix[lcp] == s.input_ids[lcp]) ++lcp;
      next_cut = lcp;
      if (lcp < prefix.size() && region_trained) next_cut = lcp + 1;  // straddling token: trained
      next_cut = std::clamp(next_cut, cut, s.input_ids.size());
    }
    if (region_trained)
      for (size_t i = cut; i < next_cut; ++i) s.labels[i] = s.input_ids[i];
    cut = next_cut;
    if (at_end) break;
    region_trained = chat.segments[k].trained;
    offset += chat.segments[k].text.size();
  }
  return s;
}

}  // namespace esft
