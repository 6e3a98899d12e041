// Chat formats: rendered strings equal transformers' apply_chat_template for the Jinja templates
// shipped with the real tokenizers (Qwen3, DeepSeek-V3), hand-checked strings for the others,
// loss masks (system/user masked, assistant trained with its end token, "mask": 1 excluded),
// boundary placement when a token straddles a mask boundary, and --chat-format auto.
#include <gtest/gtest.h>

#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>

#include "byte_tokenizer.h"
#include "esft/chat.h"
#include "esft/data.h"
#include "esft/error.h"
#include "esft/tokenizer.h"
#include "test_util.h"

using namespace esft;
using json = nlohmann::json;

namespace {

const std::vector<std::string> kSpecials = {
    "<|im_start|>", "<|im_end|>", "<think>", "</think>", "<|endoftext|>", "<tool_response>", "</tool_response>",
    "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜User｜>", "<｜Assistant｜>", "<｜tool▁outputs▁begin｜>",
    "<｜tool▁outputs▁end｜>", "<｜tool▁output▁begin｜>", "<｜tool▁output▁end｜>", "[gMASK]", "<sop>", "<|user|>",
    "<|assistant|>", "<|system|>", "<|observation|>", "<|start|>", "<|end|>", "<|message|>", "<|channel|>",
    "<|return|>", "<s>", "</s>"};

std::shared_ptr<const Tokenizer> byte_tokenizer(bool merge_nn = false) {
  return std::make_shared<test::ByteTokenizer>(kSpecials, merge_nn);
}

using test::read_jsonl;

struct Runs {
  std::vector<std::string> trained, masked_before;  // each trained run and the masked text before it
};

// Maximal runs of trained tokens, decoded, with the masked text that precedes each.
Runs trained_runs(const Sample& s, const Tokenizer& tok) {
  Runs r;
  std::vector<int32_t> masked, run;
  for (size_t i = 0; i < s.input_ids.size();) {
    if (s.labels[i] == kIgnoreIndex) {
      masked.push_back(s.input_ids[i++]);
      continue;
    }
    run.clear();
    for (; i < s.input_ids.size() && s.labels[i] != kIgnoreIndex; ++i) {
      EXPECT_EQ(s.labels[i], s.input_ids[i]);
      run.push_back(s.input_ids[i]);
    }
    r.trained.push_back(tok.decode(run));
    r.masked_before.push_back(tok.decode(masked));
    masked.clear();
  }
  return r;
}

bool ends_with(const std::string& s, const std::string& x) {
  return s.size() >= x.size() && s.compare(s.size() - x.size(), x.size(), x) == 0;
}

// One trained run per trained assistant turn, opened by an assistant header and closed by the
// end token; nothing else trained. (With a real tokenizer the header's last "\n" may share a
// token with the content: then the run starts with that token.)
void check_mask_runs(const json& conv, const Sample& s, const Tokenizer& tok, const std::string& end_token,
                     const std::vector<std::string>& headers, const std::string& what) {
  int trained_turns = 0;
  for (auto& m : conv["messages"]) trained_turns += m["role"] == "assistant" && !m.contains("mask");
  auto runs = trained_runs(s, tok);
  EXPECT_EQ(int(runs.trained.size()), trained_turns) << what << ": " << conv.dump();
  for (size_t k = 0; k < runs.trained.size(); ++k) {
    EXPECT_TRUE(ends_with(runs.trained[k], end_token)) << what << " run " << json(runs.trained[k]).dump();
    bool after_header = false;
    for (auto& h : headers) after_header |= ends_with(runs.masked_before[k], h);
    EXPECT_TRUE(after_header) << what << " run " << k << " follows " << json(runs.masked_before[k]).dump();
  }
}

// The loss mask of one encoded conversation: (conversation, sample, tokenizer, real tokenizer?, what).
using MaskCheck = std::function<void(const json&, const Sample&, const Tokenizer&, bool, const std::string&)>;

// check_mask_runs with the family's end token and assistant headers.
MaskCheck runs_after_headers(const std::string& end_token, const std::vector<std::string>& headers) {
  return [=](const json& conv, const Sample& s, const Tokenizer& tok, bool real, const std::string& what) {
    auto loose = headers;
    if (real)
      for (auto& h : headers)
        if (ends_with(h, "\n")) loose.push_back(h.substr(0, h.size() - 1));
    check_mask_runs(conv, s, tok, end_token, loose, what);
  };
}

// Renders N random conversations with the real Jinja template (python) and with esft: equal
// strings (byte tokenizer, so the string is visible in the ids) and equal ids with the real
// tokenizer (= HF tokenizers encoding the Jinja string). template_file replaces the tokenizer's.
void check_jinja_parity(const fs::path& tok_dir, int n, int seed, const MaskCheck& check_masks,
                        const fs::path& template_file = {}) {
  auto dir = test::temp_dir("chat-parity-" + tok_dir.filename().string());
  test::run_python("chat_template_parity.py", tok_dir.string() + " " + dir.string() + " " + std::to_string(n) + " " +
                                                  std::to_string(seed) + " " + template_file.string());
  auto convs = read_jsonl(dir / "convs.jsonl"), expected = read_jsonl(dir / "expected.jsonl");
  ASSERT_EQ(convs.size(), size_t(n));
  ASSERT_EQ(expected.size(), size_t(n));

  DataOptions opt;
  opt.model_dir = tok_dir;  // auto: the family from tokenizer_config.json
  opt.tokenizer = byte_tokenizer();
  opt.show_progress = false;
  auto recs = encode_records(dir / "convs.jsonl", opt);
  ASSERT_EQ(recs.size(), size_t(n));
  int mismatches = 0;
  for (int i = 0; i < n; ++i) {
    const std::string want = expected[i]["text"];
    if (recs[i].text != want && mismatches++ < 5)
      ADD_FAILURE() << "conversation " << i << ": " << convs[i].dump() << "\n jinja: " << json(want).dump()
                    << "\n esft:  " << json(recs[i].text).dump();
    EXPECT_EQ(opt.tokenizer->decode(recs[i].sample.input_ids), recs[i].text) << "ids cover the whole string";
    check_masks(convs[i], recs[i].sample, *opt.tokenizer, false, "conversation " + std::to_string(i));
  }
  EXPECT_EQ(mismatches, 0);

  opt.tokenizer = nullptr;  // the real one, from the directory
  auto real = encode_records(dir / "convs.jsonl", opt);
  auto tok = Tokenizer::from_model_dir(tok_dir);
  ASSERT_EQ(real.size(), size_t(n));
  for (int i = 0; i < n; ++i) {
    EXPECT_EQ(json(real[i].sample.input_ids), expected[i]["ids"]) << "conversation " << i << ": " << convs[i].dump();
    check_masks(convs[i], real[i].sample, *tok, true, "real tokenizer, conversation " + std::to_string(i));
  }
}

TEST(Chat, Qwen3MatchesJinjaTemplate) {
  check_jinja_parity(test::shared_dir() / "tokenizers/qwen3", 300, 1,
                     runs_after_headers("<|im_end|>", {"<|im_start|>assistant\n"}));
}

TEST(Chat, DeepseekV3MatchesJinjaTemplate) {
  check_jinja_parity(test::shared_dir() / "tokenizers/deepseek-v3", 300, 2,
                     runs_after_headers("<｜end▁of▁sentence｜>", {"<｜Assistant｜>", "<｜tool▁outputs▁end｜>"}));
}

// Qwen2(-MoE) chat models: the Qwen2 template with its default system prompt, written with real
// newlines inside the string literals (as shared/chat_templates/qwen2.jinja is) or with `\n`
// escapes (as other copies are); both must render as apply_chat_template does.
TEST(Chat, Qwen2TemplateBothSpellingsMatchJinja) {
  const auto real_newlines = read_file(test::shared_dir() / "chat_templates/qwen2.jinja");
  std::string escaped;
  for (char c : real_newlines) escaped += c == '\n' ? std::string("\\n") : std::string(1, c);
  ASSERT_NE(real_newlines, escaped);
  for (auto [name, tmpl] : {std::pair{"qwen2-real-newlines", real_newlines}, {"qwen2-escaped", escaped}}) {
    auto dir = test::temp_dir(name);
    fs::copy_file(test::shared_dir() / "tokenizers/qwen3/tokenizer.json", dir / "tokenizer.json");
    auto cfg = json::parse(read_file(test::shared_dir() / "tokenizers/qwen3/tokenizer_config.json"));
    cfg["chat_template"] = tmpl;
    write_file_atomic(dir / "tokenizer_config.json", cfg.dump());
    write_file_atomic(dir / "config.json", R"({"model_type": "qwen2_moe", "architectures": ["Qwen2MoeForCausalLM"]})");
    EXPECT_EQ(resolve_chat_format("auto", dir).qwen_default_system, "You are a helpful assistant.") << name;
    check_jinja_parity(dir, 150, 4, runs_after_headers("<|im_end|>", {"<|im_start|>assistant\n"}));
  }
}

// Harmony against GPT-OSS's chat template (shared/chat_templates/gpt-oss.jinja). The loss trains
// each assistant turn as the model generates it after the "<|start|>assistant" prompt: its final
// channel "<|channel|>final<|message|>{content}<|end|>", <|return|> ending the last message,
// which (as the template renders it in training) first carries its analysis channel
// "<|channel|>analysis<|message|>{thinking}<|end|><|start|>assistant". Nothing else is trained.
TEST(Chat, GptOssMatchesJinjaTemplateAndTrainsTheFinalChannel) {
  auto harmony_runs = [](const json& conv, const Sample& s, const Tokenizer& tok, bool, const std::string& what) {
    std::vector<std::string> want;
    const auto& msgs = conv["messages"];
    for (size_t i = 0; i < msgs.size(); ++i) {
      const auto& m = msgs[i];
      if (m["role"] != "assistant" || m.contains("mask")) continue;
      const bool last = i + 1 == msgs.size();
      std::string run;
      if (last && m.contains("thinking"))
        run = "<|channel|>analysis<|message|>" + m["thinking"].get<std::string>() + "<|end|><|start|>assistant";
      run += "<|channel|>final<|message|>" + m["content"].get<std::string>() + (last ? "<|return|>" : "<|end|>");
      want.push_back(run);
    }
    auto runs = trained_runs(s, tok);
    EXPECT_EQ(runs.trained, want) << what << ": " << conv.dump();
    for (auto& before : runs.masked_before) EXPECT_TRUE(ends_with(before, "<|start|>assistant")) << what;
  };
  check_jinja_parity(test::shared_dir() / "tokenizers/gpt-oss", 300, 3, harmony_runs,
                     test::shared_dir() / "chat_templates" / "gpt-oss.jinja");
}

// GPT-OSS's tokenizer files carry no Jinja template (the test above takes it from
// shared/chat_templates): here the ids of many rendered conversations, tool turns skipped,
// equal HF tokenizers encoding the whole string.
TEST(Chat, GptOssIdsEqualWholeStringEncoding) {
  auto dir = test::temp_dir("chat-gpt-oss");
  auto tok_dir = test::shared_dir() / "tokenizers" / "gpt-oss";
  test::run_python("chat_template_parity.py", (test::shared_dir() / "tokenizers/deepseek-v3").string() + " " +
                                                  dir.string() + " 150 3");
  DataOptions opt;
  opt.model_dir = tok_dir;
  opt.skip_bad_lines = true;  // conversations with tool turns: not in the harmony template
  opt.show_progress = false;
  auto recs = encode_records(dir / "convs.jsonl", opt);
  ASSERT_GT(recs.size(), 100u);
  {
    std::ofstream out(dir / "texts.jsonl");
    for (auto& r : recs) out << json{{"text", r.text}}.dump() << "\n";
  }
  test::run_python("data_reference.py", "encode " + (tok_dir / "tokenizer.json").string() + " " +
                                            (dir / "texts.jsonl").string() + " " + (dir / "ids.jsonl").string());
  auto ids = read_jsonl(dir / "ids.jsonl");
  ASSERT_EQ(ids.size(), recs.size());
  auto convs = read_jsonl(dir / "convs.jsonl");
  auto tok = Tokenizer::from_model_dir(tok_dir);
  for (size_t i = 0; i < recs.size(); ++i) {
    EXPECT_EQ(json(recs[i].sample.input_ids), ids[i]["ids"]) << json(recs[i].text).dump();
    EXPECT_EQ(recs[i].text.rfind("<|start|>system<|message|>You are ChatGPT", 0), 0u);
    const auto& conv = convs[recs[i].line - 1];
    const bool ends_with_answer = conv["messages"].back()["role"] == "assistant";
    if (ends_with_answer && !conv["messages"].back().contains("mask"))
      EXPECT_TRUE(ends_with(trained_runs(recs[i].sample, *tok).trained.back(), "<|return|>"));
  }
}

// ---- hand-checked renderings and masks --------------------------------------------------------

ChatMessage msg(const std::string& role, const std::string& content, bool train = true) {
  ChatMessage m;
  m.role = role;
  m.content = content;
  m.train = role == "assistant" && train;
  return m;
}

RenderedChat render(const ChatFormat& f, const std::vector<ChatMessage>& msgs) { return make_chat_renderer(f)->render(msgs); }

ChatFormat format(const std::string& name, const std::string& bos = "", const std::string& eos = "") {
  ChatFormat f;
  f.name = name;
  f.bos_token = bos;
  f.eos_token = eos;
  return f;
}

TEST(Chat, QwenMasks) {
  auto f = resolve_chat_format("auto", test::shared_dir() / "tokenizers" / "qwen3");
  ASSERT_EQ(f.name, "qwen");
  EXPECT_TRUE(f.qwen_think);
  auto r = render(f, {msg("system", "S"), msg("user", "hi"), msg("assistant", "hello")});
  EXPECT_EQ(r.text(),
            "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
            "hello<|im_end|>\n");
  EXPECT_EQ(r.trained_text(), "<think>\n\n</think>\n\nhello<|im_end|>") << "header and the newline after <|im_end|> masked";

  // "mask": 1 on the first answer; the earlier turn loses its think block (before the last query)
  r = render(f, {msg("user", "a"), msg("assistant", "<think>x</think>b", false), msg("user", "c"), msg("assistant", "d")});
  EXPECT_EQ(r.text(), "<|im_start|>user\na<|im_end|>\n<|im_start|>assistant\nb<|im_end|>\n<|im_start|>user\nc<|im_end|>\n"
                      "<|im_start|>assistant\n<think>\n\n</think>\n\nd<|im_end|>\n");
  EXPECT_EQ(r.trained_text(), "<think>\n\n</think>\n\nd<|im_end|>");

  // Qwen2.5-style: default system prompt, no think rules
  ChatFormat q25 = format("qwen");
  q25.qwen_default_system = "You are Qwen.";
  r = render(q25, {msg("user", "hi"), msg("assistant", "<think>x</think>y")});
  EXPECT_EQ(r.text(), "<|im_start|>system\nYou are Qwen.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
                      "<think>x</think>y<|im_end|>\n");
  EXPECT_EQ(r.trained_text(), "<think>x</think>y<|im_end|>");
}

TEST(Chat, DeepseekMasks) {
  auto f = resolve_chat_format("auto", test::shared_dir() / "tokenizers" / "deepseek-v3");
  ASSERT_EQ(f.name, "deepseek");
  auto r = render(f, {msg("system", "S1"), msg("user", "q"), msg("system", "S2"), msg("assistant", "a")});
  EXPECT_EQ(r.text(), "<｜begin▁of▁sentence｜>S1\n\nS2<｜User｜>q<｜Assistant｜>a<｜end▁of▁sentence｜>");
  EXPECT_EQ(r.trained_text(), "a<｜end▁of▁sentence｜>");
}

TEST(Chat, EsftReferenceFormat) {
  auto f = format("esft", "<s>", "</s>");
  auto r = render(f, {msg("user", "  q1 \n"), msg("assistant", "\n a1 "), msg("user", "q2"), msg("assistant", "a2", false)});
  EXPECT_EQ(r.text(), "<s>User: q1\n\nAssistant: a1</s>User: q2\n\nAssistant: a2</s>");
  EXPECT_EQ(r.trained_text(), "<s> a1</s>") << "BOS keeps its label, as the reference's target = [bos]";
  // The reference encodes each piece on its own: [bos] + enc(user) + enc(" a") + [eos] ...
  test::ByteTokenizer tok(kSpecials, true);
  auto s = encode_rendered(r, tok);
  std::vector<int32_t> want = {*tok.token_to_id("<s>")};
  for (auto piece : {"User: q1\n\nAssistant:", " a1"})
    for (auto id : tok.encode(piece)) want.push_back(id);
  want.push_back(*tok.token_to_id("</s>"));
  EXPECT_EQ(std::vector<int32_t>(s.input_ids.begin(), s.input_ids.begin() + want.size()), want);
  EXPECT_EQ(s.labels[0], want[0]);
  EXPECT_EQ(s.labels[1], kIgnoreIndex) << "prompt masked";
  EXPECT_EQ(s.labels[want.size() - 1], *tok.token_to_id("</s>")) << "EOS trained";
}

TEST(Chat, Glm45) {
  auto f = format("glm4", "", "<|endoftext|>");
  auto r = render(f, {msg("system", "S"), msg("user", "q"), msg("assistant", "<think>r</think>\n a "), msg("user", "q2"),
                      msg("assistant", "<think>\nr2\n</think>a2")});
  EXPECT_EQ(r.text(), "[gMASK]<sop><|system|>\nS<|user|>\nq<|assistant|>\n<think></think>\na<|user|>\nq2<|assistant|>\n"
                      "<think>r2</think>\na2<|endoftext|>");
  // the model ends a turn by emitting the next <|user|> (or EOS at the end)
  EXPECT_EQ(r.trained_text(), "\n<think></think>\na<|user|>\n<think>r2</think>\na2<|endoftext|>");
  r = render(f, {msg("user", "q"), msg("assistant", "   ", false)});
  EXPECT_EQ(r.text(), "[gMASK]<sop><|user|>\nq<|assistant|>\n<think></think><|endoftext|>");
  EXPECT_EQ(r.trained_text(), "");
}

TEST(Chat, GptOssHarmony) {
  auto f = format("gpt-oss", "<|startoftext|>", "<|return|>");
  f.harmony_date = "2025-01-02";
  auto a2 = msg("assistant", "a2");
  a2.thinking = "t";
  auto a1 = msg("assistant", "a1");
  a1.thinking = "dropped: only the last message keeps its analysis";
  auto r = render(f, {msg("system", "S"), msg("user", "q"), a1, msg("user", "q2"), a2});
  const std::string sys =
      "<|start|>system<|message|>You are ChatGPT, a large language model trained by OpenAI.\nKnowledge cutoff: 2024-06\n"
      "Current date: 2025-01-02\n\nReasoning: medium\n\n# Valid channels: analysis, commentary, final. Channel must be "
      "included for every message.<|end|>";
  EXPECT_EQ(r.text(), sys + "<|start|>developer<|message|># Instructions\n\nS\n\n<|end|><|start|>user<|message|>q<|end|>"
                            "<|start|>assistant<|channel|>final<|message|>a1<|end|><|start|>user<|message|>q2<|end|>"
                            "<|start|>assistant<|channel|>analysis<|message|>t<|end|>"
                            "<|start|>assistant<|channel|>final<|message|>a2<|return|>");
  EXPECT_EQ(r.trained_text(), "<|channel|>final<|message|>a1<|end|><|channel|>analysis<|message|>t<|end|>"
                              "<|start|>assistant<|channel|>final<|message|>a2<|return|>");
  EXPECT_THROW(render(f, {msg("user", "q"), msg("assistant", "<|channel|>final<|message|>x")}), Error);
  // no system message, no developer block
  r = render(f, {msg("user", "q"), msg("assistant", "a")});
  EXPECT_EQ(r.text(), sys + "<|start|>user<|message|>q<|end|><|start|>assistant<|channel|>final<|message|>a<|return|>");
}

TEST(Chat, Mixtral) {
  auto f = format("mixtral", "<s>", "</s>");
  auto r = render(f, {msg("system", "S"), msg("user", "q"), msg("assistant", "a"), msg("user", "q2"), msg("assistant", "a2")});
  EXPECT_EQ(r.text(), "<s> [INST] S\n\nq [/INST] a</s> [INST] q2 [/INST] a2</s>");
  EXPECT_EQ(r.trained_text(), " a</s> a2</s>");
  f.mixtral_spaces = false;  // the first v0.1 template
  EXPECT_EQ(render(f, {msg("user", "q"), msg("assistant", "a")}).text(), "<s>[INST] q [/INST]a</s>");
  EXPECT_THROW(render(f, {msg("user", "q"), msg("user", "q")}), Error);
  EXPECT_THROW(render(f, {msg("assistant", "a")}), Error);
}

TEST(Chat, UnsupportedRoleNamesTheMessage) {
  try {
    render(format("mixtral", "<s>", "</s>"), {msg("user", "q"), msg("tool", "t")});
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("message 1"), std::string::npos) << e.what();
  }
}

// ---- encoding: boundaries that are not next to a control token -------------------------------

TEST(Chat, StraddlingTokenGoesToTheTrainedSide) {
  test::ByteTokenizer tok(kSpecials, /*merge "\n\n"*/ true);
  RenderedChat r;
  r.add_special("<|im_start|>", false);
  r.add("assistant\n", false);
  r.add("\nHello", true);
  r.add_special("<|im_end|>", true);
  r.add("x\n", false);
  r.add("\nbye", true);
  auto s = encode_rendered(r, tok);
  EXPECT_EQ(s.input_ids, tok.encode(r.text())) << "ids are the whole string's";
  std::string trained;
  for (size_t i = 0; i < s.input_ids.size(); ++i)
    if (s.labels[i] != kIgnoreIndex) trained += tok.id_to_token(s.input_ids[i]);
  EXPECT_EQ(trained, "\n\nHello<|im_end|>\n\nbye") << "the merged \\n\\n tokens hold trained text";

  // trained text followed by masked text, straddling: still trained
  RenderedChat r2;
  r2.add("ab\n", true);
  r2.add("\ncd", false);
  auto s2 = encode_rendered(r2, tok);
  EXPECT_EQ(s2.input_ids, tok.encode("ab\n\ncd"));
  EXPECT_EQ(s2.labels, (std::vector<int32_t>{'a', 'b', 999, kIgnoreIndex, kIgnoreIndex}));
}

// ---- --chat-format auto ---------------------------------------------------------------------

TEST(Chat, AutoFormatFromModelDirectory) {
  auto root = test::temp_dir("chat-auto");
  auto model = [&](const std::string& name, const std::string& model_type, const json& tok_config) {
    auto d = root / name;
    fs::create_directories(d);
    write_file_atomic(d / "config.json", json{{"model_type", model_type}}.dump());
    if (!tok_config.is_null()) write_file_atomic(d / "tokenizer_config.json", tok_config.dump());
    return d;
  };
  // model type + a tokenizer that has the family's control tokens
  auto with = [](const char* token) {
    return json{{"added_tokens_decoder", {{"7", {{"content", token}, {"special", true}}}}}};
  };
  EXPECT_EQ(resolve_chat_format("auto", model("q", "qwen3_moe", with("<|im_start|>"))).name, "qwen");
  EXPECT_EQ(resolve_chat_format("auto", model("q2", "qwen2_moe", with("<|im_start|>"))).name, "qwen");
  EXPECT_EQ(resolve_chat_format("auto", model("g", "glm4_moe", with("<|assistant|>"))).name, "glm4");
  EXPECT_EQ(resolve_chat_format("auto", model("o", "gpt_oss", with("<|channel|>"))).name, "gpt-oss");
  EXPECT_EQ(resolve_chat_format("auto", model("m", "mixtral", nullptr)).name, "mixtral");
  EXPECT_EQ(resolve_chat_format("auto", model("d3", "deepseek_v3", with("<｜User｜>"))).name, "deepseek");
  EXPECT_EQ(resolve_chat_format("auto", model("olmoe", "olmoe", nullptr)).name, "esft") << "unknown family: reference format";
  // a base model with a custom tokenizer without ChatML tokens (the bundled tiny example)
  EXPECT_EQ(resolve_chat_format("auto", test::source_dir() / "tests/data/tiny-qwen3-moe").name, "esft");
  EXPECT_EQ(resolve_chat_format("auto", model("q-base", "qwen3_moe", json{{"eos_token", "</s>"}})).name, "esft");
  // DeepSeek-V2(-Lite) chat template is the ESFT format; V2.5's is V3's
  json v2 = {{"bos_token", "<｜begin▁of▁sentence｜>"},
             {"eos_token", "<｜end▁of▁sentence｜>"},
             {"chat_template", "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}{{ 'User: ' + "
                               "message['content'] + '\\n\\n' }}{% endif %}{% endfor %}"}};
  auto e = resolve_chat_format("auto", model("d2", "deepseek_v2", v2));
  EXPECT_EQ(e.name, "esft");
  EXPECT_EQ(e.bos_token, "<｜begin▁of▁sentence｜>");
  json v25 = {{"chat_template", "{{ bos_token }}{{'<｜User｜>' + message['content']}}"}};
  EXPECT_EQ(resolve_chat_format("auto", model("d25", "deepseek_v2", v25)).name, "deepseek");
  // Qwen2.5's default system prompt and no think rules
  json q25 = {{"eos_token", "<|im_end|>"},
              {"chat_template", "{%- if messages[0]['role'] == 'system' %}{{- '<|im_start|>system\\n' + messages[0]['content'] "
                                "+ '<|im_end|>\\n' }}{%- else %}{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba "
                                "Cloud. You are a helpful assistant.<|im_end|>\\n' }}{%- endif %}"}};
  auto q = resolve_chat_format("auto", model("q25", "qwen2", q25));
  EXPECT_EQ(q.qwen_default_system, "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.");
  EXPECT_FALSE(q.qwen_think);
  // No config.json: the tokenizer's template or control tokens
  EXPECT_EQ(resolve_chat_format("auto", test::shared_dir() / "tokenizers" / "gpt-oss").name, "gpt-oss");
  // Explicit names and aliases
  EXPECT_EQ(resolve_chat_format("chatml", {}).name, "qwen");
  EXPECT_EQ(resolve_chat_format("harmony", {}).name, "gpt-oss");
  EXPECT_EQ(resolve_chat_format("esft", model("q3", "qwen3_moe", nullptr)).name, "esft");
  EXPECT_THROW(resolve_chat_format("llama3", {}), Error);
}

}  // namespace
