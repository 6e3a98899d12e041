// Tokenizer factory (tokenizer.json or tokenizer.model), tokenizer_config.json reading, and the
// threaded encode_batch.
#include "esft/tokenizer.h"

#include <nlohmann/json.hpp>

#include <atomic>
#include <thread>

#include "esft/error.h"
#include "esft/log.h"
#include "tokenizer_impl.h"

namespace esft {

namespace {

nlohmann::json read_json_file(const fs::path& p) {
  try {
    return nlohmann::json::parse(read_file(p));
  } catch (const nlohmann::json::exception& e) {
    fail("{}: invalid JSON: {}", p.string(), e.what());
  }
}

// A token entry of tokenizer_config.json / special_tokens_map.json: "text", null, or an
// AddedToken object {"content": "text", ...}.
std::optional<std::string> token_text(const nlohmann::json& j, const fs::path& file, const char* key) {
  if (!j.contains(key) || j[key].is_null()) return std::nullopt;
  const nlohmann::json& v = j[key];
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string()) return v["content"].get<std::string>();
  fail("{}: \"{}\" must be a string, null or an object with \"content\"", file.string(), key);
}

void set_special(Tokenizer& tok, const std::string& text, std::string& token, std::optional<int32_t>& id,
                 const fs::path& file, const char* key) {
  token = text;
  id = tok.token_to_id(text);
  // transformers would append such a token to the vocabulary; we only report it.
  if (!id) log_warn(fmt::format("{}: {} '{}' is not a token of the tokenizer", file.string(), key, text));
}

void read_config(Tokenizer& tok, const fs::path& dir) {
  fs::path cfg_path = dir / "tokenizer_config.json", map_path = dir / "special_tokens_map.json";
  nlohmann::json cfg = fs::exists(cfg_path) ? read_json_file(cfg_path) : nlohmann::json::object();
  nlohmann::json map = fs::exists(map_path) ? read_json_file(map_path) : nlohmann::json::object();
  struct Slot {
    const char* key;
    std::string& token;
    std::optional<int32_t>& id;
  } slots[] = {{"bos_token", tok.bos_token, tok.bos_id}, {"eos_token", tok.eos_token, tok.eos_id},
               {"pad_token", tok.pad_token, tok.pad_id}};
  for (auto& s : slots) {
    if (auto t = token_text(cfg, cfg_path, s.key))
      set_special(tok, *t, s.token, s.id, cfg_path, s.key);
    else if (auto m = token_text(map, map_path, s.key))
      set_special(tok, *m, s.token, s.id, map_path, s.key);
  }
  if (cfg.contains("add_bos_token") && cfg["add_bos_token"].is_boolean()) tok.add_bos_token = cfg["add_bos_token"].get<bool>();
  if (cfg.contains("add_eos_token") && cfg["add_eos_token"].is_boolean()) tok.add_eos_token = cfg["add_eos_token"].get<bool>();

  // chat_template: a string, or a list of {"name", "template"} of which "default" is the one
  // apply_chat_template uses; newer checkpoints keep it in chat_template.jinja instead.
  if (cfg.contains("chat_template") && !cfg["chat_template"].is_null()) {
    const nlohmann::json& ct = cfg["chat_template"];
    if (ct.is_string()) {
      tok.chat_template = ct.get<std::string>();
    } else if (ct.is_array()) {
      for (const auto& t : ct)
        if (t.is_object() && t.value("name", "") == "default" && t.contains("template"))
          tok.chat_template = t["template"].get<std::string>();
      if (tok.chat_template.empty())
        fail("{}: chat_template is a list without a \"default\" entry", cfg_path.string());
    } else {
      fail("{}: chat_template must be a string or a list", cfg_path.string());
    }
  } else if (fs::exists(dir / "chat_template.jinja")) {
    tok.chat_template = read_file(dir / "chat_template.jinja");
  }
}

// Runs f; a JSON type or lookup error (or another library's exception) deep inside the readers
// becomes an error naming the file, like every other bad input.
template <class F>
auto naming_file(const fs::path& file, F&& f) {
  try {
    return f();
  } catch (const Error&) {
    throw;
  } catch (const std::bad_alloc&) {
    throw;
  } catch (const std::exception& e) {
    fail("{}: not a valid tokenizer file: {}", file.string(), e.what());
  }
}

std::unique_ptr<Tokenizer> load_tokenizer_file(const fs::path& file) {
  if (file.extension() == ".json") return naming_file(file, [&] { return text::load_hf_tokenizer(file); });
  if (file.extension() == ".model") return naming_file(file, [&] { return text::load_spm_tokenizer(file); });
  fail("{}: unknown tokenizer file type (expected tokenizer.json or a SentencePiece tokenizer.model)", file.string());
}

}  // namespace

std::unique_ptr<Tokenizer> Tokenizer::from_file(const fs::path& file) {
  if (!fs::is_regular_file(file)) fail("tokenizer file {} does not exist", file.string());
  return load_tokenizer_file(file);
}

std::unique_ptr<Tokenizer> Tokenizer::from_model_dir(const fs::path& dir) {
  std::unique_ptr<Tokenizer> tok;
  if (fs::exists(dir / "tokenizer.json"))
    tok = load_tokenizer_file(dir / "tokenizer.json");
  else if (fs::exists(dir / "tokenizer.model"))
    tok = load_tokenizer_file(dir / "tokenizer.model");
  else
    fail("{}: no tokenizer.json or tokenizer.model", dir.string());
  naming_file(dir / "tokenizer_config.json", [&] {
    read_config(*tok, dir);
    return 0;
  });
  return tok;
}

std::vector<std::vector<int32_t>> Tokenizer::encode_batch(const std::vector<std::string>& texts, int threads) const {
  std::vector<std::vector<int32_t>> out(texts.size());
  if (threads <= 0) threads = int(std::max(1u, std::thread::hardware_concurrency()));
  threads = int(std::min<size_t>(size_t(threads), texts.size()));
  if (threads <= 1) {
    for (size_t i = 0; i < texts.size(); ++i) out[i] = encode(texts[i]);
    return out;
  }
  std::atomic<size_t> next{0};
  std::exception_ptr error;
  std::atomic<bool> failed{false};
  auto work = [&] {
    try {
      for (size_t i; !failed && (i = next.fetch_add(1)) < texts.size();) out[i] = encode(texts[i]);
    } catch (...) {
      if (!failed.exchange(true)) error = std::current_exception();
    }
  };
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) pool.emplace_back(work);
  for (auto& t : pool) t.join();
  if (error) std::rethrow_exception(error);
  return out;
}

}  // namespace esft
