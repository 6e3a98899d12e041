// esft tokenize: jsonl records -> one {"input_ids", "labels", "text"} object per record, exactly
// what `esft train` / `esft score` feed the model (text = the rendered string before tokenization).
#include <cxxopts.hpp>

#include <cstdio>
#include <nlohmann/json.hpp>
#include <optional>

#include "esft/chat.h"
#include "esft/cli.h"
#include "esft/data.h"
#include "esft/error.h"
#include "esft/fs.h"
#include "esft/log.h"
#include "esft/run_control.h"
#include "flags.h"

namespace esft {
namespace {

int cmd_tokenize(int argc, char** argv) {
  std::string formats;
  for (auto& n : chat_format_names()) formats += (formats.empty() ? "" : ", ") + n;
  cxxopts::Options o(argv[0], "Encode a jsonl dataset the way training sees it: one {\"input_ids\", \"labels\", \"text\"} "
                              "object per record (labels -100 where no loss is taken).");
  // clang-format off
  o.add_options()
    ("model", "model directory: tokenizer files, tokenizer_config.json, config.json (picks the chat format)", cxxopts::value<std::string>())
    ("tokenizer", "a tokenizer.json or tokenizer.model file instead of --model's (tokenizer_config.json is read beside it)", cxxopts::value<std::string>())
    ("data", "jsonl dataset: messages, conversations (ShareGPT), instruction/input/output (alpaca), query/response, "
             "prompt/completion, text, or input_ids/labels records", cxxopts::value<std::string>())
    ("chat-format", "chat format of conversation records: " + formats + " (auto: from --model's config.json and chat template)",
                    cxxopts::value<std::string>()->default_value("auto"))
    ("output", "jsonl file to write (written whole, then renamed into place); default: standard output", cxxopts::value<std::string>())
    ("raw", "encode each record's \"text\" field as is: no chat template, no BOS/EOS, every token trained")
    ("skip-bad-lines", "skip malformed lines (counted and reported) instead of stopping at the first")
    ("threads", "encoding threads (0 = all cores)", cxxopts::value<int>()->default_value("0"))
    ("h,help", "show this help");
  // clang-format on
  auto a = cli::parse_flags(o, argc, argv);
  if (a.count("help")) {
    std::printf("%s\n", o.help().c_str());
    return 0;
  }
  cli::require_flags(a, {"data"});
  DataOptions opt;
  if (a.count("model")) opt.model_dir = a["model"].as<std::string>();
  if (a.count("tokenizer")) opt.tokenizer_file = a["tokenizer"].as<std::string>();
  if (!opt.model_dir.empty() && !fs::is_directory(opt.model_dir)) fail("--model {}: not a directory", opt.model_dir.string());
  if (!opt.tokenizer_file.empty() && !fs::is_regular_file(opt.tokenizer_file))
    fail("--tokenizer {}: no such file", opt.tokenizer_file.string());
  opt.chat_format = a["chat-format"].as<std::string>();
  opt.raw_text = a.count("raw") > 0;
  opt.skip_bad_lines = a.count("skip-bad-lines") > 0;
  opt.num_threads = a["threads"].as<int>();
  ESFT_CHECK(opt.num_threads >= 0, "--threads {}: must be >= 0 (0 = all cores)", opt.num_threads);
  const fs::path data = a["data"].as<std::string>();
  // The output is written whole and renamed over its path: it must not be one of the inputs.
  if (a.count("output")) {
    const fs::path out = a["output"].as<std::string>();
    std::vector<std::pair<std::string, fs::path>> inputs = {{"--data", data}};
    if (!opt.tokenizer_file.empty()) inputs.push_back({"--tokenizer", opt.tokenizer_file});
    if (!opt.model_dir.empty()) inputs.push_back({"--model", opt.model_dir});
    const std::string name = out.filename().string();
    const bool model_file = name.size() > 12 && name.substr(name.size() - 12) == ".safetensors";
    for (auto& [flag, in] : inputs) {
      bool clash = path_within(out, in) && path_within(in, out);
      if (flag == "--model" && path_within(out, in))  // a file the model directory needs
        for (auto f : {"config.json", "tokenizer.json", "tokenizer_config.json", "tokenizer.model", "generation_config.json",
                       "special_tokens_map.json", "chat_template.jinja", "vocab.json", "merges.txt"})
          clash = clash || name == f || model_file;
      if (clash)
        fail("--output {} would overwrite {} {}: choose another output file", out.string(), flag,
             flag == "--model" ? (in / name).string() : in.string());
    }
  }
  // Token ids must index the model's embedding (a tokenizer from another model would not).
  if (!opt.model_dir.empty()) opt.vocab_size = config_vocab_size(opt.model_dir);

  auto records = encode_records(data, opt);

  std::optional<AtomicFile> file;
  if (a.count("output")) file.emplace(fs::path(a["output"].as<std::string>()));
  std::string buf;
  auto emit = [&](bool final) {
    if (!final && buf.size() < (1 << 20)) return;
    if (file) {
      file->write(buf);
    } else if (std::fwrite(buf.data(), 1, buf.size(), stdout) != buf.size()) {
      fail("cannot write to standard output");
    }
    buf.clear();
  };
  int64_t tokens = 0, trained = 0;
  for (auto& r : records) {
    nlohmann::json j = {{"input_ids", r.sample.input_ids}, {"labels", r.sample.labels}, {"text", r.text}};
    buf += j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    buf += '\n';
    tokens += int64_t(r.sample.input_ids.size());
    for (auto l : r.sample.labels) trained += l != kIgnoreIndex;
    emit(false);
  }
  emit(true);
  if (file) {
    file->commit();
  } else {
    std::fflush(stdout);
  }
  log_info(fmt::format("{}: {} records, {} tokens, {} trained{}", data.string(), records.size(), tokens, trained,
                       file ? ", wrote " + file->path().string() : ""));
  return 0;
}

}  // namespace
ESFT_SUBCOMMAND("tokenize", "encode a jsonl dataset (chat templates, loss masks) as training sees it", cmd_tokenize);
}  // namespace esft
