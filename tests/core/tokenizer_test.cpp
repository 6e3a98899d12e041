// Tokenizers against the HF `tokenizers` package: ids for a ~1 MB adversarial corpus with the
// real Qwen3, GPT-OSS and DeepSeek-V3 tokenizer.json files, decode and round trips, synthetic
// tokenizer.json files for the components those files do not use, NFC, the regex engine,
// tokenizer_config.json, load-time errors for unsupported components, and SentencePiece.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <mutex>

#include "esft/error.h"
#include "esft/tokenizer.h"
#include "test_util.h"
#include "../../src/text/regex.h"
#include "../../src/text/unicode.h"

using namespace esft;

namespace {

// ---- reference files (formats: tests/python/tokenizer_reference.py) ----

std::vector<std::string> read_strings(const fs::path& p) {
  std::string data = read_file(p);
  size_t at = 0;
  auto u32 = [&] {
    uint32_t v;
    if (at + 4 > data.size()) throw Error(p.string() + ": truncated");
    std::memcpy(&v, data.data() + at, 4);
    at += 4;
    return v;
  };
  std::vector<std::string> out(u32());
  for (auto& s : out) {
    uint32_t n = u32();
    s = data.substr(at, n);
    at += n;
  }
  return out;
}

std::vector<std::vector<int32_t>> read_id_lists(const fs::path& p) {
  std::string data = read_file(p);
  size_t at = 0;
  auto u32 = [&] {
    uint32_t v;
    std::memcpy(&v, data.data() + at, 4);
    at += 4;
    return v;
  };
  std::vector<std::vector<int32_t>> out(u32());
  for (auto& ids : out) {
    ids.resize(u32());
    std::memcpy(ids.data(), data.data() + at, ids.size() * 4);
    at += ids.size() * 4;
  }
  return out;
}

// Printable rendering of text for failure messages.
std::string show(std::string_view s, size_t max = 160) {
  std::string out;
  for (const char* p = s.data(); p < s.data() + s.size() && out.size() < max;) {
    char32_t c = text::next_code_point(p);
    if (c == '\n')
      out += "\\n";
    else if (c == '\r')
      out += "\\r";
    else if (c == '\t')
      out += "\\t";
    else if (c < 0x20 || (c >= 0x7F && c < 0xA0) || text::general_category(c) == text::kCn ||
             text::general_category(c) == text::kCf || text::general_category(c) == text::kCo ||
             text::general_category(c) == text::kMn || text::is_white_space(c))
      out += fmt::format("\\u{{{:X}}}", uint32_t(c));
    else
      text::append_utf8(out, c);
  }
  return out;
}

std::string show_ids(const std::vector<int32_t>& ids, size_t from, size_t n) {
  std::string s;
  for (size_t i = from; i < std::min(ids.size(), from + n); ++i) s += (i > from ? " " : "") + std::to_string(ids[i]);
  return "[" + s + "]";
}

// Compares ids document by document; reports the first few documents that differ, with the
// first differing position, the ids around it and the text those ids stand for.
void expect_same_ids(const Tokenizer& tok, const std::vector<std::string>& docs,
                     const std::vector<std::vector<int32_t>>& ours, const std::vector<std::vector<int32_t>>& ref,
                     const std::string& name) {
  ASSERT_EQ(ours.size(), ref.size());
  int reported = 0;
  size_t bad = 0;
  for (size_t d = 0; d < docs.size(); ++d) {
    if (ours[d] == ref[d]) continue;
    ++bad;
    if (reported++ >= 3) continue;
    size_t k = 0;
    while (k < ours[d].size() && k < ref[d].size() && ours[d][k] == ref[d][k]) ++k;
    size_t from = k >= 3 ? k - 3 : 0;
    auto piece = [&](const std::vector<int32_t>& ids) {
      std::vector<int32_t> w(ids.begin() + std::min(from, ids.size()), ids.begin() + std::min(k + 4, ids.size()));
      return show(tok.decode(w), 80);
    };
    std::string before = tok.decode(std::vector<int32_t>(ref[d].begin(), ref[d].begin() + k));
    size_t cut = before.size() > 60 ? before.size() - 60 : 0;
    while (cut < before.size() && (static_cast<unsigned char>(before[cut]) & 0xC0) == 0x80) ++cut;
    ADD_FAILURE() << name << ": document " << d << " differs at token " << k << " (after text \"..."
                  << show(std::string_view(before).substr(cut)) << "\")\n  ours: " << show_ids(ours[d], from, 7) << " \""
                  << piece(ours[d]) << "\"\n  hf:   " << show_ids(ref[d], from, 7) << " \"" << piece(ref[d])
                  << "\"\n  document starts: \"" << show(docs[d]) << "\"";
  }
  EXPECT_EQ(bad, 0u) << name << ": " << bad << " of " << docs.size() << " documents differ";
}

void expect_same_strings(const std::vector<std::string>& ours, const std::vector<std::string>& ref,
                         const std::string& what) {
  ASSERT_EQ(ours.size(), ref.size());
  size_t bad = 0;
  for (size_t i = 0; i < ours.size(); ++i) {
    if (ours[i] == ref[i]) continue;
    if (bad++ < 3) {
      size_t k = 0;
      while (k < ours[i].size() && k < ref[i].size() && ours[i][k] == ref[i][k]) ++k;
      size_t from = k > 20 ? k - 20 : 0;
      ADD_FAILURE() << what << ": document " << i << " differs at byte " << k << "\n  ours: \""
                    << show(std::string_view(ours[i]).substr(from), 80) << "\"\n  hf:   \""
                    << show(std::string_view(ref[i]).substr(from), 80) << "\"";
    }
  }
  EXPECT_EQ(bad, 0u) << what << ": " << bad << " of " << ours.size() << " documents differ";
}

fs::path shared_tokenizer(const std::string& name) { return test::shared_dir() / "tokenizers" / name; }

// Each shared tokenizer is loaded once per test run (loading gpt-oss's 28 MB file is the slow part).
const Tokenizer& loaded_tokenizer(const std::string& name, double* load_seconds = nullptr) {
  static std::mutex mu;
  static std::map<std::string, std::pair<std::unique_ptr<Tokenizer>, double>> cache;
  std::lock_guard<std::mutex> lock(mu);
  auto& slot = cache[name];
  if (!slot.first) {
    auto t0 = std::chrono::steady_clock::now();
    slot.first = Tokenizer::from_model_dir(shared_tokenizer(name));
    slot.second = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  if (load_seconds) *load_seconds = slot.second;
  return *slot.first;
}

// Reference data, generated once per test run. ESFT_TOKENIZER_SEED / ESFT_TOKENIZER_BYTES pick
// another corpus (for soak runs; the default is what CI checks).
std::string corpus_args() {
  std::string a;
  if (const char* s = std::getenv("ESFT_TOKENIZER_SEED")) a += std::string(" --seed ") + s;
  if (const char* b = std::getenv("ESFT_TOKENIZER_BYTES")) a += std::string(" --bytes ") + b;
  return a;
}

const fs::path& shared_reference() {
  static fs::path dir;
  static std::once_flag once;
  std::call_once(once, [] {
    dir = test::temp_dir("tokenizer-ref");
    std::string args = corpus_args() + " " + dir.string();
    for (const char* n : {"qwen3", "gpt-oss", "deepseek-v3"})
      args += std::string(" ") + n + "=" + (shared_tokenizer(n) / "tokenizer.json").string();
    test::run_python("tokenizer_reference.py", args);
  });
  return dir;
}

const fs::path& variant_reference() {
  static fs::path dir;
  static std::once_flag once;
  std::call_once(once, [] {
    dir = test::temp_dir("tokenizer-variants");
    test::run_python("tokenizer_variants.py", dir.string() + corpus_args());
  });
  return dir;
}

// Encode, decode and round trip of one tokenizer against reference files in `ref`.
void check_against_reference(const Tokenizer& tok, const fs::path& ref, const std::string& name) {
  auto docs = read_strings(ref / "corpus.bin");
  auto want = read_id_lists(ref / (name + ".ids.bin"));
  ASSERT_EQ(docs.size(), want.size());

  auto t0 = std::chrono::steady_clock::now();
  std::vector<std::vector<int32_t>> ours;
  for (auto& d : docs) ours.push_back(tok.encode(d));
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  size_t bytes = 0;
  for (auto& d : docs) bytes += d.size();
  std::printf("[ %s ] %zu documents, %.2f MB encoded in %.3f s\n", name.c_str(), docs.size(), bytes / 1e6, secs);
  expect_same_ids(tok, docs, ours, want, name);

  // encode_batch over several threads gives the same ids.
  EXPECT_EQ(tok.encode_batch(docs, 3), ours) << name << ": encode_batch differs from encode";

  // decode of the reference ids, with and without special tokens, equals HF's.
  auto hf_decoded = read_strings(ref / (name + ".decoded.bin"));
  auto hf_decoded_skip = read_strings(ref / (name + ".decoded_skip.bin"));
  std::vector<std::string> dec, dec_skip;
  size_t round_trips = 0;
  for (size_t i = 0; i < docs.size(); ++i) {
    dec.push_back(tok.decode(want[i], false));
    dec_skip.push_back(tok.decode(want[i], true));
    // decode(encode(x)) == x wherever HF's decode gives x back.
    if (hf_decoded[i] == docs[i]) {
      ++round_trips;
      EXPECT_EQ(tok.decode(ours[i]), docs[i]) << name << ": round trip of document " << i;
    }
  }
  expect_same_strings(dec, hf_decoded, name + " decode");
  expect_same_strings(dec_skip, hf_decoded_skip, name + " decode(skip_special_tokens)");
  std::printf("[ %s ] decode(encode(x)) == x checked on %zu documents\n", name.c_str(), round_trips);

  EXPECT_EQ(std::to_string(tok.vocab_size()), read_file(ref / (name + ".vocab_size")));
}

// ---- the shared real tokenizers ----

class SharedTokenizer : public ::testing::TestWithParam<std::string> {};

TEST_P(SharedTokenizer, EncodeDecodeMatchHfOnCorpus) {
  double load = 0;
  const Tokenizer& tok = loaded_tokenizer(GetParam(), &load);
  std::printf("[ %s ] loaded in %.3f s\n", GetParam().c_str(), load);
  check_against_reference(tok, shared_reference(), GetParam());
}

TEST_P(SharedTokenizer, SpecialTokensInsideText) {
  const Tokenizer* tok = &loaded_tokenizer(GetParam());
  auto specials = tok->special_tokens();
  ASSERT_FALSE(specials.empty());
  for (const std::string& sp : {specials.front(), specials.back()}) {
    auto id = tok->token_to_id(sp);
    ASSERT_TRUE(id.has_value()) << sp;
    auto ids = tok->encode("Hello" + sp + " world " + sp + sp + "\n");
    EXPECT_EQ(std::count(ids.begin(), ids.end(), *id), 3) << sp;
    EXPECT_EQ(tok->decode(ids, false), "Hello" + sp + " world " + sp + sp + "\n");
    EXPECT_EQ(tok->decode(ids, true), "Hello world \n");
    EXPECT_EQ(tok->id_to_token(*id), sp);
    // A near miss is ordinary text.
    std::string partial = sp.substr(0, sp.size() - 1);
    auto pids = tok->encode(partial);
    EXPECT_EQ(std::count(pids.begin(), pids.end(), *id), 0);
  }
}

TEST_P(SharedTokenizer, ConfigSpecialTokensAndChatTemplate) {
  fs::path dir = shared_tokenizer(GetParam());
  const Tokenizer* tok = &loaded_tokenizer(GetParam());
  auto cfg = nlohmann::json::parse(read_file(dir / "tokenizer_config.json"));
  auto text_of = [](const nlohmann::json& v) -> std::string {
    if (v.is_string()) return v.get<std::string>();
    if (v.is_object()) return v["content"].get<std::string>();
    return "";
  };
  struct {
    const char* key;
    const std::string& token;
    const std::optional<int32_t>& id;
  } slots[] = {{"bos_token", tok->bos_token, tok->bos_id}, {"eos_token", tok->eos_token, tok->eos_id},
               {"pad_token", tok->pad_token, tok->pad_id}};
  for (auto& s : slots) {
    std::string want = cfg.contains(s.key) ? text_of(cfg[s.key]) : "";
    EXPECT_EQ(s.token, want) << s.key;
    if (want.empty()) {
      EXPECT_FALSE(s.id.has_value()) << s.key;
    } else {
      ASSERT_TRUE(s.id.has_value()) << s.key;
      EXPECT_EQ(tok->encode(want), std::vector<int32_t>{*s.id}) << s.key;
    }
  }
  EXPECT_EQ(tok->chat_template, cfg.value("chat_template", std::string()));
  EXPECT_EQ(tok->add_bos_token, cfg.value("add_bos_token", false));
}

INSTANTIATE_TEST_SUITE_P(Hf, SharedTokenizer, ::testing::Values("qwen3", "gpt-oss", "deepseek-v3"),
                         [](const auto& info) {
                           std::string n = info.param;
                           std::replace(n.begin(), n.end(), '-', '_');
                           return n;
                         });

// ---- synthetic tokenizer.json files (tests/python/tokenizer_variants.py) ----

class VariantTokenizer : public ::testing::TestWithParam<std::string> {};

TEST_P(VariantTokenizer, EncodeDecodeMatchHf) {
  auto ref = variant_reference();
  auto tok = Tokenizer::from_file(ref / (GetParam() + ".json"));
  check_against_reference(*tok, ref, GetParam());
}

const std::vector<std::string> kVariants = {"bytelevel_nfd", "splits", "metaspace_byte_fallback", "prepend_replace", "unk_fused",
                           "unk_unfused", "prefix_suffix", "legacy_ignore_merges"};

TEST(VariantTokenizerList, CoversEveryGeneratedVariant) {
  std::string listed = read_file(variant_reference() / "variants.txt");
  std::string ours;
  for (const auto& v : kVariants) ours += v + "\n";
  EXPECT_EQ(listed, ours);
}

INSTANTIATE_TEST_SUITE_P(Hf, VariantTokenizer, ::testing::ValuesIn(kVariants));

// ---- Unicode ----

TEST(TokenizerUnicode, NfcMatchesHfOnCorpus) {
  auto docs = read_strings(shared_reference() / "corpus.bin");
  auto want = read_strings(shared_reference() / "nfc.bin");
  std::vector<std::string> ours;
  for (auto& d : docs) ours.push_back(text::nfc(d));
  expect_same_strings(ours, want, "NFC");
}

TEST(TokenizerUnicode, Utf8Lossy) {
  // Rust from_utf8_lossy: one U+FFFD per maximal invalid subsequence.
  EXPECT_EQ(text::utf8_lossy("a\xC3"), "a\xEF\xBF\xBD");
  EXPECT_EQ(text::utf8_lossy("\xE2\x82x"), "\xEF\xBF\xBDx");
  EXPECT_EQ(text::utf8_lossy("\xF0\x9F\x98"), "\xEF\xBF\xBD");
  EXPECT_EQ(text::utf8_lossy("\xED\xA0\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");  // surrogate
  EXPECT_EQ(text::utf8_lossy("\xC0\xAF"), "\xEF\xBF\xBD\xEF\xBF\xBD");
  EXPECT_EQ(text::utf8_lossy("\xE4\xB8\xAD"), "\xE4\xB8\xAD");
}

TEST(TokenizerUnicode, InvalidUtf8InputFailsNamingTheByte) {
  const Tokenizer* tok = &loaded_tokenizer("qwen3");
  try {
    tok->encode("abc\xFF");
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("byte 3"), std::string::npos) << e.what();
  }
}

// ---- regex engine ----

std::vector<std::string> regex_matches(const std::string& pattern, const std::string& text) {
  text::Regex re(pattern);
  std::vector<std::pair<uint32_t, uint32_t>> m;
  re.find_all(text, m);
  std::vector<std::string> out;
  for (auto [a, b] : m) out.push_back(text.substr(a, b - a));
  return out;
}

TEST(TokenizerRegex, OnigurumaSemantics) {
  using V = std::vector<std::string>;
  EXPECT_EQ(regex_matches("a|ab|abc", "abc"), V{"a"});               // first alternative wins
  EXPECT_EQ(regex_matches(R"(\s+(?!\S)|\s+)", "a   b"), (V{"  ", " "}));
  EXPECT_EQ(regex_matches("x*", "ab"), (V{"", "", ""}));              // empty matches advance
  EXPECT_EQ(regex_matches("a(?i)b|c", "aBaCC"), (V{"aB", "aC"}));     // (?i) takes the rest of the group
  EXPECT_EQ(regex_matches("(?i:s)", "sSſ"), (V{"s", "S", "ſ"}));      // long s folds to s
  EXPECT_EQ(regex_matches(R"(\p{N}{1,3})", "12345"), (V{"123", "45"}));
  EXPECT_EQ(regex_matches("a{2}+", "aaaaa"), V{"aaaa"});              // Ruby: a repeat of a{2}
  EXPECT_EQ(regex_matches("a++a", "aaa"), V{});                       // possessive
  EXPECT_EQ(regex_matches("(?>a+)b|a", "aab"), V{"aab"});
  EXPECT_EQ(regex_matches("[a-d&&[^b]]", "abcd"), (V{"a", "c", "d"}));
  EXPECT_EQ(regex_matches("[]a]+", "]a]"), V{"]a]"});
  EXPECT_EQ(regex_matches("a{,2}", "aaa"), (V{"aa", "a"}));  // no empty match right after one
  EXPECT_EQ(regex_matches("a{1", "a{1"), V{"a{1"});                   // not an interval: literal
  EXPECT_EQ(regex_matches("^a|b$", "ab\nab"), (V{"a", "b", "a", "b"}));
  EXPECT_EQ(regex_matches(R"(\p{Lu}\p{Ll}+?)", "Hello"), V{"He"});
  EXPECT_EQ(regex_matches(R"([\u4e00-\u9fa5]+)", "ab中文c"), V{"中文"});
}

TEST(TokenizerRegex, UnsupportedConstructsFailNamingThem) {
  auto expect_fail = [](const std::string& pattern, const std::string& needle) {
    try {
      text::Regex re(pattern);
      ADD_FAILURE() << pattern << ": no error";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  expect_fail("(?<=a)b", "lookbehind");
  expect_fail(R"((a)\1)", "backreference");
  expect_fail(R"(\p{Greek})", "\\p{greek}");
  expect_fail("(?i:ss)", "multi-character case folding");
  expect_fail("(a*)*", "empty string");
  expect_fail("[[:alpha:]]", "POSIX");
  expect_fail("(ab", "missing ')'");
  expect_fail("*a", "target of repeat");
}

// ---- SentencePiece ----

TEST(SentencePiece, TrainedModelMatchesHfConvertedTokenizer) {
  fs::path dir = test::temp_dir("tokenizer-spm");
  test::run_python("tokenizer_spm_reference.py", "text " + (dir / "train.txt").string());
  // A Llama/Mixtral-like model: BPE, byte fallback, digits split, whitespace kept as is.
  std::string cmd = "spm_train --input=" + (dir / "train.txt").string() + " --model_prefix=" + (dir / "tokenizer").string() +
                    " --vocab_size=600 --model_type=bpe --byte_fallback=true --split_digits=true"
                    " --remove_extra_whitespaces=false --normalization_rule_name=identity"
                    " --character_coverage=0.9995 --minloglevel=2 > " + (dir / "spm_train.log").string() + " 2>&1";
  ASSERT_EQ(test::run(cmd), 0) << cmd << "\n" << read_file(dir / "spm_train.log");
  test::run_python("tokenizer_spm_reference.py", "reference " + dir.string() + " " + (dir / "tokenizer.model").string());

  // tokenizer.model through the sentencepiece library, and the converted tokenizer.json through
  // our BPE: both must give HF's ids (special strings such as <s> in the text included).
  auto spm_tok = Tokenizer::from_model_dir(dir);  // no tokenizer.json there: tokenizer.model
  check_against_reference(*spm_tok, dir, "spm");
  auto json_tok = Tokenizer::from_file(dir / "spm.json");
  check_against_reference(*json_tok, dir, "spm");

  // On text without special strings, SentencePiece's own ids.
  auto docs = read_strings(dir / "corpus.bin");
  auto sp_ids = read_id_lists(dir / "spm.sp_ids.bin");
  size_t compared = 0;
  for (size_t i = 0; i < docs.size(); ++i) {
    bool has_special = false;
    for (const auto& s : spm_tok->special_tokens()) has_special |= docs[i].find(s) != std::string::npos;
    if (has_special) continue;
    ++compared;
    EXPECT_EQ(spm_tok->encode(docs[i]), sp_ids[i]) << "document " << i;
  }
  EXPECT_GT(compared, docs.size() / 2);

  // The model's own bos/eos.
  ASSERT_TRUE(spm_tok->bos_id && spm_tok->eos_id);
  EXPECT_EQ(spm_tok->bos_token, "<s>");
  EXPECT_EQ(spm_tok->eos_token, "</s>");
  EXPECT_EQ(spm_tok->token_to_id("<s>"), spm_tok->bos_id);
  EXPECT_EQ(spm_tok->token_to_id("</s>"), spm_tok->eos_id);
  EXPECT_FALSE(spm_tok->token_to_id("no such piece").has_value());
}

// ---- load-time errors ----

// A minimal valid tokenizer.json with one section replaced.
std::string tiny_tokenizer_json(const std::string& key, const nlohmann::json& value) {
  nlohmann::json j = {{"version", "1.0"}, {"truncation", nullptr}, {"padding", nullptr}, {"added_tokens", nlohmann::json::array()},
                      {"normalizer", nullptr}, {"pre_tokenizer", nullptr}, {"post_processor", nullptr}, {"decoder", nullptr},
                      {"model", {{"type", "BPE"}, {"vocab", {{"a", 0}, {"b", 1}, {"ab", 2}}}, {"merges", {"a b"}}}}};
  if (key.find('.') != std::string::npos)
    j["model"][key.substr(key.find('.') + 1)] = value;
  else
    j[key] = value;
  return j.dump();
}

TEST(TokenizerErrors, UnsupportedComponentsFailAtLoad) {
  fs::path dir = test::temp_dir("tokenizer-errors");
  struct Case {
    std::string key;
    nlohmann::json value;
    std::string needle;
  } cases[] = {
      {"normalizer", {{"type", "Lowercase"}}, "normalizer type 'Lowercase' is not supported"},
      {"normalizer", {{"type", "Sequence"}, {"normalizers", {{{"type", "NFKC"}}}}}, "normalizer type 'NFKC' is not supported"},
      {"pre_tokenizer", {{"type", "Whitespace"}}, "pre_tokenizer type 'Whitespace' is not supported"},
      {"pre_tokenizer", {{"type", "Sequence"}, {"pretokenizers", {{{"type", "ByteLevel"}}, {{"type", "Digits"}}}}},
       "ByteLevel pre-tokenizer followed by other pre-tokenizers"},
      {"pre_tokenizer", {{"type", "Split"}, {"pattern", {{"Regex", "(?<!x)y"}}}, {"behavior", "Isolated"}, {"invert", false}},
       "lookbehind"},
      {"decoder", {{"type", "WordPiece"}}, "decoder type 'WordPiece' is not supported"},
      {"model.type", "WordPiece", "model type 'WordPiece' is not supported"},
      {"model.dropout", 0.1, "dropout"},
      {"model.merges", {"a c"}, "'c', which is not in the vocabulary"},
      {"truncation", {{"max_length", 512}}, "truncation"},
  };
  for (auto& c : cases) {
    fs::path f = dir / "tokenizer.json";
    write_file_atomic(f, tiny_tokenizer_json(c.key, c.value));
    try {
      Tokenizer::from_file(f);
      ADD_FAILURE() << c.key << ": loaded without error";
    } catch (const Error& e) {
      std::string msg = e.what();
      EXPECT_NE(msg.find(c.needle), std::string::npos) << msg;
      EXPECT_NE(msg.find(f.string()), std::string::npos) << "message does not name the file: " << msg;
    }
  }
  // And a sane file loads and encodes.
  write_file_atomic(dir / "tokenizer.json", tiny_tokenizer_json("decoder", nullptr));
  auto tok = Tokenizer::from_file(dir / "tokenizer.json");
  EXPECT_EQ(tok->encode("abba"), (std::vector<int32_t>{2, 1, 0}));
  // Malformed JSON names the line.
  write_file_atomic(dir / "tokenizer.json", "{\n\"version\": \"1.0\",\n\"model\": {\"type\": \"BPE\",,}}");
  try {
    Tokenizer::from_file(dir / "tokenizer.json");
    ADD_FAILURE() << "malformed JSON loaded";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("line 3"), std::string::npos) << e.what();
  }
}

}  // namespace
