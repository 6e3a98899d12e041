// jsonl file -> samples: records are parsed and encoded in parallel (all cores), with a progress
// bar, and cached (data_cache.h). Record formats: jsonl_records.h; chat formats: esft/chat.h.
#include <fmt/format.h>
#include <sched.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <thread>

#include "data_cache.h"
#include "esft/chat.h"
#include "esft/data.h"
#include "esft/error.h"
#include "esft/log.h"
#include "esft/progress.h"
#include "esft/tokenizer.h"
#include "jsonl_records.h"

namespace esft {

namespace {

struct Line {
  int64_t number;
  std::string_view text;
};

std::vector<Line> split_lines(const std::string& content) {
  std::vector<Line> lines;
  int64_t number = 0;
  const size_t start = content.compare(0, 3, "\xEF\xBB\xBF") == 0 ? 3 : 0;  // a UTF-8 byte order mark
  for (size_t pos = start; pos < content.size();) {
    size_t end = content.find('\n', pos);
    if (end == std::string::npos) end = content.size();
    ++number;
    std::string_view t(content.data() + pos, end - pos);
    if (!t.empty() && t.back() == '\r') t.remove_suffix(1);
    if (t.find_first_not_of(" \t") != std::string_view::npos) lines.push_back({number, t});
    pos = end + 1;
  }
  return lines;
}

// The cores this process may run on (a SLURM or container CPU set), not the whole host's.
int thread_count(const DataOptions& opt) {
  if (opt.num_threads > 0) return opt.num_threads;
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0) return CPU_COUNT(&set);
  return int(std::max(1u, std::thread::hardware_concurrency()));
}

// Runs fn(i) for i in [0, n) on `threads` threads; fn must not throw. The calling thread draws the
// progress bar.
void parallel_for(size_t n, int threads, const std::function<void(size_t)>& fn, ProgressBar* bar) {
  constexpr size_t kChunk = 16;
  std::atomic<size_t> next{0}, done{0};
  auto work = [&] {
    for (;;) {
      size_t b = next.fetch_add(kChunk);
      if (b >= n) return;
      size_t e = std::min(n, b + kChunk);
      for (size_t i = b; i < e; ++i) fn(i);
      done += e - b;
    }
  };
  threads = int(std::min<size_t>(threads, (n + kChunk - 1) / kChunk));
  if (threads <= 1) {
    work();
  } else {
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t) pool.emplace_back(work);
    while (done.load() < n) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      if (bar) bar->update(int64_t(done.load()));
    }
    for (auto& t : pool) t.join();
  }
  if (bar) bar->update(int64_t(n));
}

struct Parsed {
  Record record;
  std::string error;  // non-empty: this line is bad
  std::string text;   // rendered string
};

std::shared_ptr<const Tokenizer> load_tokenizer(const DataOptions& opt) {
  if (opt.tokenizer) return opt.tokenizer;
  if (!opt.tokenizer_file.empty()) return Tokenizer::from_file(opt.tokenizer_file);
  if (!opt.model_dir.empty()) return Tokenizer::from_model_dir(opt.model_dir);
  fail("no model directory or tokenizer file was given");
}

fs::path tokenizer_dir(const DataOptions& opt) {
  return opt.tokenizer_file.empty() ? fs::path() : opt.tokenizer_file.parent_path();
}

// The first token id or label outside the vocabulary, as an error; "" when all are inside.
std::string vocab_problem(const Sample& s, int64_t vocab, bool pre_tokenized) {
  auto outside = [&](int32_t id) { return id < 0 || int64_t(id) >= vocab; };
  for (size_t t = 0; t < s.input_ids.size(); ++t)
    if (outside(s.input_ids[t]))
      return pre_tokenized
                 ? fmt::format("input_ids[{}] is token id {}, outside the model's vocabulary (vocab_size {} in "
                               "config.json)", t, s.input_ids[t], vocab)
                 : fmt::format("the tokenizer produced token id {} (token {}), outside the model's vocabulary "
                               "(vocab_size {} in config.json): the tokenizer does not match the model", s.input_ids[t],
                               t, vocab);
  for (size_t t = 0; t < s.labels.size(); ++t)
    if (s.labels[t] != kIgnoreIndex && outside(s.labels[t]))
      return fmt::format("labels[{}] is token id {}, outside the model's vocabulary (vocab_size {} in config.json; "
                         "-100 masks a token)", t, s.labels[t], vocab);
  return "";
}

struct EncodeResult {
  std::vector<EncodedRecord> records;
  int64_t skipped = 0;
};

EncodeResult encode_content(const fs::path& path, const std::string& content, const DataOptions& opt, bool keep_text) {
  const auto lines = split_lines(content);
  const std::string file = path.string();
  const int threads = thread_count(opt);
  std::vector<Parsed> parsed(lines.size());

  parallel_for(lines.size(), threads, [&](size_t i) {
    try {
      nlohmann::json j;
      try {
        j = nlohmann::json::parse(lines[i].text);
      } catch (const nlohmann::json::exception& e) {
        fail("not valid JSON ({})", e.what());
      }
      parsed[i].record = opt.raw_text ? parse_raw_text_record(j) : parse_record(j);
    } catch (const std::exception& e) {
      parsed[i].error = e.what();
    }
  }, nullptr);

  // Text needs a tokenizer: load it once, when the first text record is met (after any earlier
  // bad line, which is reported first).
  size_t first_text = lines.size(), first_bad = lines.size();
  for (size_t i = 0; i < lines.size(); ++i) {
    if (!parsed[i].error.empty()) first_bad = std::min(first_bad, i);
    else if (parsed[i].record.kind != Record::Kind::Tokens) first_text = std::min(first_text, i);
  }
  if (!opt.skip_bad_lines && first_bad < first_text)
    fail("{}:{}: {}", file, lines[first_bad].number, parsed[first_bad].error);
  std::shared_ptr<const Tokenizer> tok;
  ChatFormat format;
  std::unique_ptr<ChatRenderer> renderer;
  if (first_text < lines.size()) {
    const auto where = fmt::format("{}:{}", file, lines[first_text].number);
    if (!opt.tokenizer && opt.model_dir.empty() && opt.tokenizer_file.empty())
      fail("{}: this record holds text; a tokenizer is needed to encode it (give the model directory with its "
           "tokenizer files, or use pre-tokenized {{\"input_ids\": [...], \"labels\": [...]}} records)",
           where);
    try {
      tok = load_tokenizer(opt);
    } catch (const std::exception& e) {
      fail("{}: this record holds text; a tokenizer is needed to encode it, and none could be loaded: {}", where, e.what());
    }
    if (!opt.raw_text) {
      format = resolve_chat_format(opt.chat_format, opt.model_dir, tokenizer_dir(opt));
      renderer = make_chat_renderer(format);
      log_info(fmt::format("{}: chat format {}", file, format.describe()));
    }
  }

  std::optional<ProgressBar> bar;
  if (opt.show_progress && tok) bar.emplace("encode " + path.filename().string(), int64_t(lines.size()), "rec");
  parallel_for(lines.size(), threads, [&](size_t i) {
    auto& p = parsed[i];
    if (!p.error.empty() || p.record.kind == Record::Kind::Tokens) return;
    try {
      const auto& r = p.record;
      RenderedChat chat;
      if (opt.raw_text) {
        p.record.tokens.input_ids = tok->encode(r.text);
        p.record.tokens.labels = p.record.tokens.input_ids;
        if (keep_text) p.text = r.text;
        return;
      }
      if (r.kind == Record::Kind::Chat) chat = renderer->render(r.messages);
      if (r.kind == Record::Kind::Text) chat = render_plain_text(format, r.text);
      if (r.kind == Record::Kind::PromptCompletion) chat = render_prompt_completion(format, r.prompt, r.completion);
      p.record.tokens = encode_rendered(chat, *tok);
      if (keep_text) p.text = chat.text();
    } catch (const std::exception& e) {
      p.error = e.what();
    }
  }, bar ? &*bar : nullptr);
  if (bar) bar->finish();

  EncodeResult out;
  out.records.reserve(lines.size());
  for (size_t i = 0; i < lines.size(); ++i) {
    auto& p = parsed[i];
    if (p.error.empty() && opt.vocab_size > 0)
      p.error = vocab_problem(p.record.tokens, opt.vocab_size, p.record.kind == Record::Kind::Tokens);
    if (!p.error.empty()) {
      if (!opt.skip_bad_lines) fail("{}:{}: {}", file, lines[i].number, p.error);
      if (out.skipped < 5) log_warn(fmt::format("skipping {}:{}: {}", file, lines[i].number, p.error));
      ++out.skipped;
      continue;
    }
    out.records.push_back({std::move(p.record.tokens), std::move(p.text), lines[i].number});
  }
  if (out.skipped)
    log_warn(fmt::format("{}: skipped {} bad line(s) of {} (--skip-bad-lines)", file, out.skipped, lines.size()));
  return out;
}

std::string read_dataset(const fs::path& path) {
  if (!fs::is_regular_file(path)) fail("{}: cannot open the dataset (no such file)", path.string());
  return read_file(path);
}

}  // namespace

int64_t config_vocab_size(const fs::path& model_dir) {
  std::error_code ec;
  if (model_dir.empty() || !fs::is_regular_file(model_dir / "config.json", ec)) return 0;
  auto j = nlohmann::json::parse(read_file(model_dir / "config.json"), nullptr, false);
  if (j.is_discarded() || !j.is_object() || !j.contains("vocab_size") || !j["vocab_size"].is_number_integer()) return 0;
  return std::max<int64_t>(0, j["vocab_size"].get<int64_t>());
}

std::vector<EncodedRecord> encode_records(const fs::path& path, const DataOptions& opt) {
  return encode_content(path, read_dataset(path), opt, true).records;
}

std::vector<Sample> load_samples(const fs::path& path, const DataOptions& opt) {
  const std::string content = read_dataset(path);
  // An in-memory tokenizer without files cannot be identified in a cache key.
  const bool cache = !opt.cache_dir.empty() && !(opt.tokenizer && opt.model_dir.empty() && opt.tokenizer_file.empty());
  std::string key;
  fs::path cache_file;
  if (cache) {
    std::string format = opt.chat_format;
    if (!opt.model_dir.empty() || !opt.tokenizer_file.empty())
      format = resolve_chat_format(opt.chat_format, opt.model_dir, tokenizer_dir(opt)).describe();
    key = dataset_cache_key(content, opt, format);
    cache_file = dataset_cache_file(opt.cache_dir, path, key);
    std::vector<Sample> samples;
    int64_t skipped = 0;
    if (read_sample_cache(cache_file, key, &samples, &skipped)) {
      log_info(fmt::format("{}: {} encoded samples from the cache {}", path.string(), samples.size(), cache_file.string()));
      if (skipped) log_warn(fmt::format("{}: {} bad line(s) were skipped when it was encoded", path.string(), skipped));
      return samples;
    }
  }
  auto res = encode_content(path, content, opt, false);
  std::vector<Sample> samples;
  samples.reserve(res.records.size());
  for (auto& r : res.records) samples.push_back(std::move(r.sample));
  if (cache) write_sample_cache(cache_file, key, samples, res.skipped);
  return samples;
}

}  // namespace esft
