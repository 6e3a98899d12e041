// `esft tokenize` through the binary: --raw equals HF tokenizers' encode(text,
// add_special_tokens=False); chat records give the Jinja template's string and its ids; errors
// name file:line and never leave a partial output; --skip-bad-lines keeps the good records.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "test_util.h"

using namespace esft;
using json = nlohmann::json;

namespace {

using test::read_jsonl;

int tokenize(const std::string& args, const fs::path& err) {
  return test::run(test::esft_bin() + " tokenize " + args + " 2> " + err.string());
}

fs::path tokenizers(const std::string& family) { return test::shared_dir() / "tokenizers" / family; }

TEST(CliTokenize, ChatRecordsAndRawText) {
  auto dir = test::temp_dir("cli-tokenize");
  auto err = dir / "stderr.txt";
  test::run_python("chat_template_parity.py", tokenizers("deepseek-v3").string() + " " + dir.string() + " 80 11");
  auto expected = read_jsonl(dir / "expected.jsonl");

  // Conversations: the Jinja string, its HF ids, prompt masked.
  ASSERT_EQ(tokenize("--model " + tokenizers("deepseek-v3").string() + " --data " + (dir / "convs.jsonl").string() +
                         " --output " + (dir / "out.jsonl").string(),
                     err),
            0)
      << read_file(err);
  auto out = read_jsonl(dir / "out.jsonl");
  ASSERT_EQ(out.size(), expected.size());
  for (size_t i = 0; i < out.size(); ++i) {
    EXPECT_EQ(out[i]["text"], expected[i]["text"]) << i;
    EXPECT_EQ(out[i]["input_ids"], expected[i]["ids"]) << i;
    ASSERT_EQ(out[i]["labels"].size(), out[i]["input_ids"].size());
    EXPECT_EQ(out[i]["labels"][0], -100) << "BOS is prompt";
  }

  // --raw: every record's text as is (here: the rendered strings, full of special tokens and
  // unicode), through the tokenizer file alone, to standard output.
  {
    std::ofstream raw(dir / "raw.jsonl");
    for (auto& e : expected) raw << json{{"text", e["text"]}, {"other", 1}}.dump() << "\n";
    raw << json{{"text", "  spaces, tabs\t, 数字 12345, emoji 🚀 and é"}}.dump() << "\n";
  }
  for (auto family : {"qwen3", "deepseek-v3", "gpt-oss"}) {
    auto tok_json = tokenizers(family) / "tokenizer.json";
    ASSERT_EQ(tokenize("--raw --tokenizer " + tok_json.string() + " --data " + (dir / "raw.jsonl").string() + " > " +
                           (dir / "raw.out.jsonl").string(),
                       err),
              0)
        << read_file(err);
    test::run_python("data_reference.py", "encode " + tok_json.string() + " " + (dir / "raw.jsonl").string() + " " +
                                              (dir / "raw.ref.jsonl").string());
    auto got = read_jsonl(dir / "raw.out.jsonl"), want = read_jsonl(dir / "raw.ref.jsonl");
    ASSERT_EQ(got.size(), want.size()) << family;
    for (size_t i = 0; i < got.size(); ++i) {
      EXPECT_EQ(got[i]["input_ids"], want[i]["ids"]) << family << " record " << i;
      EXPECT_EQ(got[i]["labels"], got[i]["input_ids"]) << "raw: every token trained";
    }
  }
}

TEST(CliTokenize, ErrorsAndSkippedLines) {
  auto dir = test::temp_dir("cli-tokenize-errors");
  auto err = dir / "stderr.txt";
  write_file_atomic(dir / "d.jsonl", "{\"text\": \"a\"}\n{\"messages\": [{\"role\": \"user\"}]}\n{\"text\": \"b\"}\n");
  write_file_atomic(dir / "out.jsonl", "previous\n");
  const std::string common = "--model " + tokenizers("qwen3").string() + " --data " + (dir / "d.jsonl").string();
  EXPECT_NE(tokenize(common + " --output " + (dir / "out.jsonl").string(), err), 0);
  EXPECT_NE(read_file(err).find("d.jsonl:2: messages[0] has no \"content\""), std::string::npos) << read_file(err);
  EXPECT_EQ(read_file(dir / "out.jsonl"), "previous\n") << "a failed run leaves the output alone";

  ASSERT_EQ(tokenize(common + " --skip-bad-lines --output " + (dir / "out.jsonl").string(), err), 0) << read_file(err);
  EXPECT_EQ(read_jsonl(dir / "out.jsonl").size(), 2u);
  EXPECT_NE(read_file(err).find("skipped 1 bad line"), std::string::npos) << read_file(err);

  // text without any tokenizer
  EXPECT_NE(tokenize("--data " + (dir / "d.jsonl").string(), err), 0);
  EXPECT_NE(read_file(err).find("d.jsonl:1: this record holds text; a tokenizer is needed"), std::string::npos)
      << read_file(err);
  // pre-tokenized records need none
  write_file_atomic(dir / "t.jsonl", "{\"input_ids\": [1, 2], \"labels\": [-100, 2]}\n");
  ASSERT_EQ(test::run(test::esft_bin() + " tokenize --data " + (dir / "t.jsonl").string() + " > " +
                      (dir / "t.out").string() + " 2> " + err.string()),
            0);
  EXPECT_EQ(read_jsonl(dir / "t.out").at(0)["labels"], json({-100, 2}));
  EXPECT_NE(tokenize(common + " --chat-format llama", err), 0);
  EXPECT_NE(read_file(err).find("--chat-format"), std::string::npos) << read_file(err);
}

}  // namespace
