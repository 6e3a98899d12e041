// Data loading, Python-compatible shuffling and packing.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>

#include "byte_tokenizer.h"
#include "esft/data.h"
#include "esft/error.h"
#include "test_util.h"

using namespace esft;

namespace {

std::string capture(const std::string& cmd) {
  std::string out;
  FILE* p = popen(cmd.c_str(), "r");
  char buf[4096];
  while (size_t n = fread(buf, 1, sizeof buf, p)) out.append(buf, n);
  pclose(p);
  return out;
}

TEST(Data, PythonShuffleMatchesCPython) {
  // Seeds below and above 2^32 (multi-word init_by_array), sizes around powers of two.
  std::vector<std::pair<uint64_t, size_t>> cases = {{5934875, 127}, {0, 1}, {42, 2}, {1, 1000}, {(1ull << 40) + 7, 33}, {123, 4096}};
  std::string args;
  for (auto& [s, n] : cases) args += " " + std::to_string(s) + ":" + std::to_string(n);
  auto out = capture(std::string(ESFT_PYTHON) + " " + (test::source_dir() / "tests/python/py_shuffle.py").string() + args);
  std::istringstream lines(out);
  for (auto& [seed, n] : cases) {
    std::string line;
    ASSERT_TRUE(std::getline(lines, line)) << "python output ended early";
    std::vector<size_t> ours(n);
    for (size_t i = 0; i < n; ++i) ours[i] = i;
    python_shuffle(ours, seed);
    EXPECT_EQ(nlohmann::json(ours), nlohmann::json::parse(line)) << "seed " << seed << " n " << n;
  }
}

TEST(Data, PretokenizedRecordsAndErrors) {
  auto dir = test::temp_dir("data");
  write_file_atomic(dir / "ok.jsonl", "{\"input_ids\": [5, 6, 7], \"labels\": [-100, 6, 7]}\n\n{\"input_ids\": [1, 2]}\n");
  auto s = load_samples(dir / "ok.jsonl", {});
  ASSERT_EQ(s.size(), 2u);
  EXPECT_EQ(s[0].labels, (std::vector<int32_t>{-100, 6, 7}));
  EXPECT_EQ(s[1].labels, (std::vector<int32_t>{1, 2})) << "no labels: every token trained";

  auto expect_error = [&](const std::string& content, const std::string& needle) {
    write_file_atomic(dir / "bad.jsonl", content);
    try {
      load_samples(dir / "bad.jsonl", {});
      ADD_FAILURE() << "no error for " << content;
    } catch (const Error& e) {
      std::string m = e.what();
      EXPECT_NE(m.find("bad.jsonl:2"), std::string::npos) << m;
      EXPECT_NE(m.find(needle), std::string::npos) << m;
    }
  };
  expect_error("{\"input_ids\": [1]}\n{\"input_ids\": [1, 2\n", "not valid JSON");
  expect_error("{\"input_ids\": [1]}\n{\"input_ids\": [1, 2], \"labels\": [1]}\n", "labels");
  expect_error("{\"input_ids\": [1]}\n{\"input_ids\": [1, -3]}\n", "-3");
  expect_error("{\"input_ids\": [1]}\n{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}\n", "tokenizer");
  expect_error("{\"input_ids\": [1]}\n[1, 2]\n", "object");

  DataOptions skip;
  skip.skip_bad_lines = true;
  write_file_atomic(dir / "mixed.jsonl", "{\"input_ids\": [1]}\nnot json\n{\"input_ids\": [2]}\n");
  EXPECT_EQ(load_samples(dir / "mixed.jsonl", skip).size(), 2u);
}

TEST(Data, ScoringSampleSelection) {
  std::vector<Sample> samples(10);
  for (size_t i = 0; i < samples.size(); ++i) samples[i].input_ids.assign(10 + i, 1), samples[i].labels = samples[i].input_ids;
  auto all = select_scoring_samples(samples, 0, 7);
  EXPECT_EQ(all.size(), 10u);
  auto some = select_scoring_samples(samples, 25, 7);
  int64_t before_last = 0;
  for (size_t i = 0; i + 1 < some.size(); ++i) before_last += samples[some[i]].input_ids.size();
  EXPECT_LT(before_last, 25) << "stops after the sample that reaches the budget";
  EXPECT_GE(before_last + int64_t(samples[some.back()].input_ids.size()), 25);
  EXPECT_EQ(std::vector<size_t>(all.begin(), all.begin() + some.size()), some) << "a prefix of the shuffled order";

  // Sharded as the reference: rank r takes order[r::W] with a budget of n_tokens / W each;
  // max_length counts samples as truncated.
  for (int rank = 0; rank < 3; ++rank) {
    int64_t tokens = 0;
    auto shard = select_scoring_samples(samples, 0, 7, rank, 3, 0, &tokens);
    std::vector<size_t> want;
    int64_t want_tokens = 0;
    for (size_t j = rank; j < all.size(); j += 3) want.push_back(all[j]), want_tokens += samples[all[j]].input_ids.size();
    EXPECT_EQ(shard, want) << "rank " << rank;
    EXPECT_EQ(tokens, want_tokens);
    auto budgeted = select_scoring_samples(samples, 60, 7, rank, 3, 12, &tokens);
    EXPECT_GE(tokens, 20);
    EXPECT_LT(tokens - 12, 20) << "stops at the first sample reaching 60 / 3 tokens, counted at most 12 each";
    EXPECT_EQ(std::vector<size_t>(want.begin(), want.begin() + budgeted.size()), budgeted);
  }
  EXPECT_THROW(select_scoring_samples(samples, 0, 7, 3, 3), Error);
}

std::vector<Sample> three_samples() {
  std::vector<Sample> s(3);
  s[0].input_ids = {1, 2, 3}, s[0].labels = {-100, 2, 3};
  s[1].input_ids = {4, 5}, s[1].labels = {4, 5};
  s[2].input_ids = {6, 7, 8, 9, 10, 11}, s[2].labels = {6, 7, 8, 9, 10, 11};
  return s;
}

TEST(Data, PackingModes) {
  PackOptions o;
  o.max_length = 5;
  PackStats st;
  o.packing = "none";
  auto none = pack_samples(three_samples(), o, &st);
  ASSERT_EQ(none.size(), 3u);
  EXPECT_EQ(none[2].input_ids, (std::vector<int32_t>{6, 7, 8, 9, 10})) << "right truncation keeps the head";
  EXPECT_EQ(st.truncated_samples, 1);
  EXPECT_EQ(st.dropped_tokens, 1);

  o.packing = "document";
  auto doc = pack_samples(three_samples(), o);
  ASSERT_EQ(doc.size(), 2u);
  EXPECT_EQ(doc[0].input_ids, (std::vector<int32_t>{1, 2, 3, 4, 5}));
  EXPECT_EQ(doc[0].position_ids, (std::vector<int32_t>{0, 1, 2, 0, 1})) << "positions restart per document";
  EXPECT_EQ(doc[0].doc_ids, (std::vector<int32_t>{0, 0, 0, 1, 1}));
  EXPECT_EQ(doc[0].labels, (std::vector<int32_t>{-100, 2, 3, -100, 5}))
      << "a sample's first label is masked: it would be predicted from the previous sample";

  o.packing = "causal";
  o.truncation = "left";
  auto causal = pack_samples(three_samples(), o);
  ASSERT_EQ(causal.size(), 2u);
  EXPECT_EQ(causal[0].position_ids, (std::vector<int32_t>{0, 1, 2, 3, 4}));
  EXPECT_EQ(causal[0].doc_ids, (std::vector<int32_t>{0, 0, 0, 0, 0})) << "one attention span";
  EXPECT_EQ(causal[1].input_ids, (std::vector<int32_t>{7, 8, 9, 10, 11})) << "left truncation keeps the tail";

  o.packing = "zigzag";
  EXPECT_THROW(pack_samples(three_samples(), o), Error);
}

TEST(Data, CausalPackingFillsWindowsLikeTheReference) {
  // get_examples_from_buffer_pad: windows of exactly max_length; a sample that does not fit the
  // room left is cut to it (left: its tail), the rest dropped; the last window padded.
  std::vector<Sample> s(3);
  s[0].input_ids = {1, 2, 3}, s[0].labels = {-100, 2, 3};
  s[1].input_ids = {4, 5, 6, 7}, s[1].labels = {4, 5, 6, 7};
  s[2].input_ids = {8, 9}, s[2].labels = {-100, 9};
  PackOptions o;
  o.packing = "causal";
  o.max_length = 5;
  o.truncation = "left";
  o.pad_id = 77;
  PackStats st;
  auto rows = pack_samples(s, o, &st);
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0].input_ids, (std::vector<int32_t>{1, 2, 3, 6, 7})) << "the second sample's tail fills the room";
  EXPECT_EQ(rows[0].labels, (std::vector<int32_t>{-100, 2, 3, 6, 7}));
  EXPECT_EQ(rows[1].input_ids, (std::vector<int32_t>{8, 9, 77, 77, 77})) << "last window padded with pad_id";
  EXPECT_EQ(rows[1].labels, (std::vector<int32_t>{-100, 9, -100, -100, -100}));
  EXPECT_EQ(rows[1].doc_ids, (std::vector<int32_t>{0, 0, -1, -1, -1}));
  EXPECT_EQ(rows[1].position_ids, (std::vector<int32_t>{0, 1, 2, 3, 4}));
  EXPECT_EQ(st.cut_samples, 1);
  EXPECT_EQ(st.cut_tokens, 2);
  EXPECT_EQ(st.truncated_samples, 0);

  o.truncation = "right";
  rows = pack_samples(s, o);
  EXPECT_EQ(rows[0].input_ids, (std::vector<int32_t>{1, 2, 3, 4, 5})) << "right keeps the head";

  // document packing: a sample that does not fit starts a new row; doc ids distinct per sample
  o.packing = "document";
  rows = pack_samples(s, o, &st);
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(rows[0].input_ids, (std::vector<int32_t>{1, 2, 3}));
  EXPECT_EQ(rows[1].input_ids, (std::vector<int32_t>{4, 5, 6, 7}));
  EXPECT_EQ(rows[2].input_ids, (std::vector<int32_t>{8, 9}));
  EXPECT_EQ(st.cut_samples + st.truncated_samples, 0);
  s[2].input_ids = {8}, s[2].labels = {8};
  rows = pack_samples(s, o);
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[1].doc_ids, (std::vector<int32_t>{0, 0, 0, 0, 1}));
  EXPECT_EQ(rows[1].position_ids, (std::vector<int32_t>{0, 1, 2, 3, 0}));
}

// ---- text records -------------------------------------------------------------------------

const std::vector<std::string> kSpecials = {"<s>", "</s>", "<|im_start|>", "<|im_end|>"};

// Counts encode calls, to tell a cache hit from a fresh encoding.
class CountingTokenizer : public test::ByteTokenizer {
 public:
  CountingTokenizer() : ByteTokenizer(kSpecials) {}
  std::vector<int32_t> encode(std::string_view text) const override {
    ++calls;
    return ByteTokenizer::encode(text);
  }
  mutable std::atomic<int64_t> calls{0};
};

// A model directory whose tokenizer_config.json gives BOS/EOS (the tokenizer itself is injected).
fs::path model_dir(const fs::path& root) {
  auto d = root / "model";
  fs::create_directories(d);
  write_file_atomic(d / "tokenizer_config.json",
                    R"({"bos_token": "<s>", "eos_token": {"content": "</s>"}, "add_bos_token": true})");
  return d;
}

struct Decoded {
  std::string text, trained;
};
Decoded decode(const Sample& s, const Tokenizer& tok) {
  Decoded d;
  EXPECT_EQ(s.input_ids.size(), s.labels.size());
  for (size_t i = 0; i < s.input_ids.size(); ++i) {
    d.text += tok.id_to_token(s.input_ids[i]);
    if (s.labels[i] != kIgnoreIndex) {
      EXPECT_EQ(s.labels[i], s.input_ids[i]);
      d.trained += tok.id_to_token(s.input_ids[i]);
    }
  }
  return d;
}

TEST(Data, EveryRecordFormat) {
  auto dir = test::temp_dir("data-formats");
  DataOptions opt;
  opt.model_dir = model_dir(dir);
  opt.chat_format = "esft";
  auto tok = std::make_shared<test::ByteTokenizer>(kSpecials);
  opt.tokenizer = tok;
  const std::vector<std::pair<std::string, Decoded>> cases = {
      {R"({"messages": [{"role": "user", "content": " q "}, {"role": "assistant", "content": "a"}]})",
       {"<s>User: q\n\nAssistant: a</s>", "<s> a</s>"}},
      {R"({"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "mask": 1}, {"role": "user", "content": "q2"}, {"role": "assistant", "content": "a2"}]})",
       {"<s>S\n\nUser: q\n\nAssistant: a</s>User: q2\n\nAssistant: a2</s>", "<s> a2</s>"}},
      {R"({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "loss": false}, {"role": "user", "content": "q2"}, {"role": "assistant", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "2"}], "weight": 1}]})",
       {"<s>User: q\n\nAssistant: a</s>User: q2\n\nAssistant: a2</s>", "<s> a2</s>"}},
      {R"({"system": "S", "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]})",
       {"<s>S\n\nUser: q\n\nAssistant: a</s>", "<s> a</s>"}},
      {R"({"instruction": "do", "input": "this", "output": "done"})", {"<s>User: do\nthis\n\nAssistant: done</s>", "<s> done</s>"}},
      {R"({"instruction": "do", "input": "", "output": "done"})", {"<s>User: do\n\nAssistant: done</s>", "<s> done</s>"}},
      {R"({"query": "q", "response": "r", "history": [["q0", "r0"]]})",
       {"<s>User: q0\n\nAssistant: r0</s>User: q\n\nAssistant: r</s>", "<s> r0</s> r</s>"}},
      {R"({"prompt": "P ", "completion": "C"})", {"<s>P C</s>", "C</s>"}},
      {R"({"prompt": [{"role": "user", "content": "q"}], "completion": [{"role": "assistant", "content": "a"}]})",
       {"<s>User: q\n\nAssistant: a</s>", "<s> a</s>"}},
      {R"({"text": "plain text"})", {"<s>plain text</s>", "<s>plain text</s>"}},
  };
  std::string content;
  for (auto& c : cases) content += c.first + "\n";
  content += R"({"input_ids": [5, 6], "labels": [-100, 6]})" "\n";
  write_file_atomic(dir / "all.jsonl", content);
  auto recs = encode_records(dir / "all.jsonl", opt);
  ASSERT_EQ(recs.size(), cases.size() + 1);
  for (size_t i = 0; i < cases.size(); ++i) {
    auto d = decode(recs[i].sample, *tok);
    EXPECT_EQ(d.text, cases[i].second.text) << cases[i].first;
    EXPECT_EQ(recs[i].text, cases[i].second.text) << "rendered string: " << cases[i].first;
    EXPECT_EQ(d.trained, cases[i].second.trained) << cases[i].first;
    EXPECT_EQ(recs[i].line, int64_t(i + 1));
  }
  EXPECT_EQ(recs.back().sample.labels, (std::vector<int32_t>{-100, 6}));

  // load_samples gives the same ids, in order, on any number of threads
  for (int threads : {1, 3}) {
    opt.num_threads = threads;
    auto samples = load_samples(dir / "all.jsonl", opt);
    ASSERT_EQ(samples.size(), recs.size());
    for (size_t i = 0; i < samples.size(); ++i) EXPECT_EQ(samples[i].input_ids, recs[i].sample.input_ids);
  }

  // --raw: the text field as is, no BOS/EOS, all trained
  opt.raw_text = true;
  write_file_atomic(dir / "raw.jsonl", "{\"text\": \"a<s>b\"}\n");
  auto raw = encode_records(dir / "raw.jsonl", opt);
  ASSERT_EQ(raw.size(), 1u);
  EXPECT_EQ(raw[0].sample.input_ids, tok->encode("a<s>b"));
  EXPECT_EQ(raw[0].sample.labels, raw[0].sample.input_ids);
}

TEST(Data, TextRecordErrorsNameFileAndLine) {
  auto dir = test::temp_dir("data-text-errors");
  DataOptions opt;
  opt.model_dir = model_dir(dir);
  opt.tokenizer = std::make_shared<test::ByteTokenizer>(kSpecials);
  auto expect_error = [&](const std::string& record, const std::string& needle) {
    write_file_atomic(dir / "bad.jsonl", "{\"text\": \"fine\"}\n\n" + record + "\n{\"text\": \"fine\"}\n");
    try {
      load_samples(dir / "bad.jsonl", opt);
      ADD_FAILURE() << "no error for " << record;
    } catch (const Error& e) {
      std::string m = e.what();
      EXPECT_NE(m.find("bad.jsonl:3:"), std::string::npos) << m;
      EXPECT_NE(m.find(needle), std::string::npos) << m;
    }
  };
  expect_error(R"({"messages": [{"role": "narrator", "content": "x"}]})", "narrator");
  expect_error(R"({"messages": [{"role": "user", "content": null}]})", "content");
  expect_error(R"({"messages": [{"role": "user", "content": "q", "loss": true}]})", "only assistant");
  expect_error(R"({"messages": []})", "no messages");
  expect_error(R"({"conversations": [{"from": "robot", "value": "x"}]})", "robot");
  expect_error(R"({"instruction": "x"})", "output");
  expect_error(R"({"query": "x"})", "response");
  expect_error(R"({"prompt": "x"})", "completion");
  expect_error(R"({"text": 5})", "text");
  expect_error(R"({"input": "x"})", "unrecognised");
  expect_error(R"({"messages": [{"role": "assistant", "content": "x", "tool_calls": [{"id": 1}]}]})", "tool calls");

  // chat format errors are line errors too
  opt.chat_format = "mixtral";
  expect_error(R"({"messages": [{"role": "user", "content": "q"}, {"role": "user", "content": "q"}]})", "alternating");

  // skip_bad_lines: the good records stay
  opt.skip_bad_lines = true;
  write_file_atomic(dir / "mixed.jsonl", "{\"text\": \"a\"}\n{\"messages\": 3}\nnot json\n{\"text\": \"b\"}\n");
  EXPECT_EQ(load_samples(dir / "mixed.jsonl", opt).size(), 2u);
  EXPECT_EQ(encode_records(dir / "mixed.jsonl", opt).at(1).line, 4);
}

TEST(Data, TextWithoutTokenizerIsAClearError) {
  auto dir = test::temp_dir("data-no-tokenizer");
  write_file_atomic(dir / "d.jsonl", "{\"input_ids\": [1, 2]}\n{\"text\": \"hello\"}\n");
  try {
    load_samples(dir / "d.jsonl", {});
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("d.jsonl:2"), std::string::npos) << m;
    EXPECT_NE(m.find("tokenizer is needed"), std::string::npos) << m;
  }
  write_file_atomic(dir / "t.jsonl", "\xEF\xBB\xBF{\"input_ids\": [1, 2]}\r\n{\"input_ids\": [3], \"labels\": null}\r\n");
  EXPECT_EQ(load_samples(dir / "t.jsonl", {}).size(), 2u) << "pre-tokenized data needs no tokenizer (BOM, CRLF)";
}

TEST(Data, CacheHitOnSecondLoad) {
  auto dir = test::temp_dir("data-cache");
  auto tok = std::make_shared<CountingTokenizer>();
  DataOptions opt;
  opt.model_dir = model_dir(dir);
  opt.chat_format = "esft";
  opt.tokenizer = tok;
  opt.cache_dir = dir / "cache";
  std::string content;
  for (int i = 0; i < 50; ++i)
    content += "{\"messages\": [{\"role\": \"user\", \"content\": \"q" + std::to_string(i) +
               "\"}, {\"role\": \"assistant\", \"content\": \"a\"}]}\n";
  content += "bad line\n";
  write_file_atomic(dir / "d.jsonl", content);
  opt.skip_bad_lines = true;

  auto first = load_samples(dir / "d.jsonl", opt);
  ASSERT_EQ(first.size(), 50u);
  const int64_t calls = tok->calls;
  EXPECT_GT(calls, 0);
  size_t files = 0;
  for (auto& e : fs::directory_iterator(opt.cache_dir)) {
    ++files;
    EXPECT_EQ(e.path().extension(), ".samples") << "no temporary left behind: " << e.path();
  }
  EXPECT_EQ(files, 1u);

  auto second = load_samples(dir / "d.jsonl", opt);
  EXPECT_EQ(tok->calls.load(), calls) << "second load served from the cache";
  ASSERT_EQ(second.size(), first.size());
  for (size_t i = 0; i < first.size(); ++i) {
    EXPECT_EQ(second[i].input_ids, first[i].input_ids);
    EXPECT_EQ(second[i].labels, first[i].labels);
  }

  opt.chat_format = "qwen";  // another format: encoded again
  load_samples(dir / "d.jsonl", opt);
  EXPECT_GT(tok->calls.load(), calls);
  const int64_t calls2 = tok->calls;
  opt.chat_format = "esft";
  write_file_atomic(dir / "d.jsonl", content + "{\"text\": \"new\"}\n");  // other content: encoded again
  EXPECT_EQ(load_samples(dir / "d.jsonl", opt).size(), 51u);
  EXPECT_GT(tok->calls.load(), calls2);

  // a damaged cache file is ignored, not trusted
  for (auto& e : fs::directory_iterator(opt.cache_dir)) {
    std::string b = read_file(e.path());
    write_file_atomic(e.path(), b.substr(0, b.size() - 3));
  }
  EXPECT_EQ(load_samples(dir / "d.jsonl", opt).size(), 51u);
}

TEST(Data, EsftFormatMatchesReferenceCode) {
  // utils.get_formatted_input_and_target of the ESFT repository, run in python on the same
  // records with the same (DeepSeek-V3) tokenizer: identical ids and labels.
  auto dir = test::temp_dir("data-esft-ref");
  auto tok_dir = test::shared_dir() / "tokenizers" / "deepseek-v3";
  test::run_python("data_reference.py", "esft " + tok_dir.string() + " " + dir.string() + " 300 7");
  DataOptions opt;
  opt.model_dir = tok_dir;
  opt.chat_format = "esft";
  opt.show_progress = false;
  auto samples = load_samples(dir / "esft.jsonl", opt);
  std::ifstream in(dir / "esft_expected.jsonl");
  std::string line;
  size_t i = 0;
  for (; std::getline(in, line); ++i) {
    auto want = nlohmann::json::parse(line);
    ASSERT_LT(i, samples.size());
    EXPECT_EQ(nlohmann::json(samples[i].input_ids), want["input_ids"]) << "record " << i;
    EXPECT_EQ(nlohmann::json(samples[i].labels), want["labels"]) << "record " << i;
  }
  EXPECT_EQ(i, samples.size());
  EXPECT_EQ(i, 300u);
}

}  // namespace
