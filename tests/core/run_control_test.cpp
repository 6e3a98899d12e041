// Torch-free pieces of run safety and reporting: directory lock, stale temporaries, path
// containment, TFRecord/CRC32C framing, progress timing, the HTML report from synthetic scores.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <fstream>

#include "esft/error.h"
#include "esft/progress.h"
#include "esft/report.h"
#include "esft/run_control.h"
#include "esft/tfevents.h"
#include "test_util.h"

using namespace esft;

namespace {

TEST(DirectoryLock, SecondHolderFailsNamingTheFirstAndReleaseRemovesTheFile) {
  auto dir = test::temp_dir("lock");
  {
    DirectoryLock a(dir / "out", "--output");
    EXPECT_TRUE(fs::exists(dir / "out/.esft.lock"));
    EXPECT_NE(read_file(dir / "out/.esft.lock").find("pid " + std::to_string(::getpid())), std::string::npos);
    // A second lock from another process (flock locks belong to open files; fork gets its own).
    pid_t pid = ::fork();
    if (pid == 0) {
      std::string msg = test::error_of([&] { DirectoryLock b(dir / "out", "--output"); });
      ::_exit(msg.find("is in use by another esft run (pid " + std::to_string(::getppid())) != std::string::npos ? 0 : 1);
    }
    int status = 0;
    ::waitpid(pid, &status, 0);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  }
  EXPECT_FALSE(fs::exists(dir / "out/.esft.lock"));
  DirectoryLock again(dir / "out", "--output");  // free again
}

TEST(StaleTemporaries, DeadWritersLeftoversRemovedInterruptedReplaceRestored) {
  auto dir = test::temp_dir("stale");
  // A pid that cannot be alive: a child that has exited and been reaped.
  pid_t dead = ::fork();
  if (dead == 0) ::_exit(0);
  ::waitpid(dead, nullptr, 0);
  const std::string d = std::to_string(dead), me = std::to_string(::getpid());
  fs::create_directories(dir / ("step-4.tmp." + d));
  write_file_atomic(dir / ("step-4.tmp." + d) / "x", "half");
  write_file_atomic(dir / ("metrics.jsonl.tmp." + d), "half");
  fs::create_directories(dir / ("step-2.old." + d));  // its step-2 exists: a finished replace
  fs::create_directories(dir / "step-2");
  fs::create_directories(dir / ("step-3.old." + d));  // no step-3: killed between the two renames
  write_file_atomic(dir / ("step-3.old." + d) / "train_state.safetensors", "good");
  fs::create_directories(dir / ("step-5.tmp." + me));  // our own: left alone
  auto done = remove_stale_temporaries(dir);
  EXPECT_EQ(done.size(), 4u);
  EXPECT_FALSE(fs::exists(dir / ("step-4.tmp." + d)));
  EXPECT_FALSE(fs::exists(dir / ("metrics.jsonl.tmp." + d)));
  EXPECT_FALSE(fs::exists(dir / ("step-2.old." + d)));
  EXPECT_TRUE(fs::exists(dir / "step-2"));
  EXPECT_EQ(read_file(dir / "step-3/train_state.safetensors"), "good");
  EXPECT_TRUE(fs::exists(dir / ("step-5.tmp." + me)));
}

TEST(PathWithin, EqualInsideOutsideAndDotDot) {
  auto dir = test::temp_dir("within");
  fs::create_directories(dir / "a/b");
  EXPECT_TRUE(path_within(dir / "a", dir / "a"));
  EXPECT_TRUE(path_within(dir / "a/b", dir / "a"));
  EXPECT_TRUE(path_within(dir / "a/b/../b/new", dir / "a/"));
  EXPECT_FALSE(path_within(dir / "a", dir / "a/b"));
  EXPECT_FALSE(path_within(dir / "ab", dir / "a"));
  fs::create_directory_symlink(dir / "a", dir / "link");
  EXPECT_TRUE(path_within(dir / "link/b", dir / "a"));
}

TEST(TfEvents, Crc32cKnownValuesAndRecordFraming) {
  EXPECT_EQ(crc32c("123456789", 9), 0xE3069283u);  // the CRC-32C check value
  EXPECT_EQ(crc32c("", 0), 0u);
  auto rec = encode_tfrecord("abc");
  ASSERT_EQ(rec.size(), 8u + 4 + 3 + 4);
  uint64_t len;
  std::memcpy(&len, rec.data(), 8);
  EXPECT_EQ(len, 3u);
  uint32_t c;
  std::memcpy(&c, rec.data() + 8, 4);
  EXPECT_EQ(c, masked_crc32c(rec.data(), 8));
  std::memcpy(&c, rec.data() + 15, 4);
  EXPECT_EQ(c, masked_crc32c("abc", 3));
  // A file: a version record first, then one record per scalars() call.
  auto dir = test::temp_dir("tfevents");
  fs::path file;
  {
    EventWriter w(dir);
    w.scalars(1, {{"train/loss", 2.5}});
    w.scalars(2, {{"train/loss", 2.0}, {"eval/loss", 2.25}});
    file = w.path();
  }
  EXPECT_NE(file.filename().string().find("events.out.tfevents."), std::string::npos);
  auto bytes = read_file(file);
  size_t pos = 0, n = 0;
  while (pos < bytes.size()) {
    std::memcpy(&len, bytes.data() + pos, 8);
    ASSERT_LE(pos + 16 + len, bytes.size());
    std::memcpy(&c, bytes.data() + pos + 12 + len, 4);
    EXPECT_EQ(c, masked_crc32c(bytes.data() + pos + 12, len));
    pos += 16 + len, ++n;
  }
  EXPECT_EQ(n, 3u);
  EXPECT_NE(bytes.find("brain.Event:2"), std::string::npos);
  EXPECT_NE(bytes.find("eval/loss"), std::string::npos);
}

TEST(Progress, DurationsAndEta) {
  EXPECT_EQ(format_duration(0), "0:00");
  EXPECT_EQ(format_duration(75), "1:15");
  EXPECT_EQ(format_duration(3725), "1:02:05");
  ProgressBar bar("t", 100, "step");
  EXPECT_NE(bar.timing().find("ETA ?"), std::string::npos);  // nothing done yet: no estimate
  ::usleep(20000);
  bar.update(50);
  auto t = bar.timing();
  EXPECT_NE(t.find(" ETA 0:00"), std::string::npos) << t;  // half done in ~20 ms: ~20 ms left
  bar.update(100);
  EXPECT_EQ(bar.timing().find("ETA"), std::string::npos);
}

TEST(Report, HeatmapSelectionCurvesOverlapAndLoss) {
  auto dir = test::temp_dir("report");
  // Two tasks over 2 layers x 4 experts; task b favours other experts in layer 2.
  for (auto [name, l2] : {std::pair{"a", R"({"0": 0.5, "1": 0.3, "2": 0.1, "3": 0.1})"},
                          {"b", R"({"0": 0.05, "1": 0.05, "2": 0.1, "3": 0.8})"}}) {
    fs::create_directories(dir / name);
    write_file_atomic(dir / name / "summary.json",
                      std::string(R"({"token_scores": {"1": {"0": 0.7, "1": 0.1, "2": 0.1, "3": 0.1}, "2": )") + l2 +
                          R"(}, "gate_scores": {"1": {"0": 0.2, "1": 0.1, "2": 0.1, "3": 0.1}, "2": )" + l2 + "}}");
  }
  write_file_atomic(dir / "metrics.jsonl", R"({"step": 1, "loss": 2.5}
{"step": 2, "loss": 2.0, "eval_loss": 2.2}
{"step": 3, "loss": null, "skipped": "non-finite"}
)");
  ReportOptions opt;
  opt.tasks = {{"", dir / "a", ""}, {"task-b", dir / "b", ""}};
  opt.top_p = 0.6;
  opt.runs = {dir};
  auto html = make_report(opt);
  EXPECT_EQ(html.rfind("<!DOCTYPE html>", 0), 0u);
  EXPECT_EQ(html.find("<script"), std::string::npos) << "self-contained: no scripts";
  EXPECT_EQ(html.find("http"), std::string::npos) << "self-contained: nothing fetched";
  // top_p 0.6: layer 1 takes expert 0 (0.7); layer 2 of a takes 0 and 1, of b only 3.
  EXPECT_NE(html.find("layer 1, expert 0: 0.7 (selected)"), std::string::npos);
  EXPECT_NE(html.find("layer 2, expert 1: 0.3 (selected)"), std::string::npos);
  EXPECT_NE(html.find("layer 2, expert 3: 0.8 (selected)"), std::string::npos);
  EXPECT_NE(html.find("layer 2, expert 2: 0.1</title>"), std::string::npos);
  EXPECT_NE(html.find("top_p 0.6"), std::string::npos);
  // overlap: a selects (1,0),(2,0),(2,1); b selects (1,0),(2,3): one shared, Jaccard 1/4
  EXPECT_NE(html.find("a and task-b: 1 shared, Jaccard 25%"), std::string::npos);
  EXPECT_NE(html.find("3 steps, 1 evaluations, 1 skipped"), std::string::npos);
  // A selection given as a file is marked instead of the computed one.
  write_file_atomic(dir / "cfg.json", R"({"experts": {"2": [2]}})");
  opt.tasks = {{"x", dir / "a", dir / "cfg.json"}};
  html = make_report(opt);
  EXPECT_NE(html.find("layer 2, expert 2: 0.1 (selected)"), std::string::npos);
  EXPECT_EQ(html.find("layer 1, expert 0: 0.7 (selected)"), std::string::npos);
  EXPECT_NE(test::error_of([&] { opt.tasks = {{"", dir / "none", ""}}; make_report(opt); }).find(dir.string() + "/none"),
            std::string::npos);
}

}  // namespace
