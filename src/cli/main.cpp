// esft: Expert-Specialized Fine-Tuning of MoE LLMs. Dispatches to the registered subcommands.
#include <cstdio>
#include <cstring>
#include <exception>
#include <string>

#include <fmt/format.h>

#include "esft/cli.h"
#include "esft/dist/parallel.h"
#include "esft/error.h"
#include "esft/run_control.h"

#include <c10/util/Exception.h>

namespace esft::cli {
std::vector<Subcommand>& subcommands() {
  static std::vector<Subcommand> all;
  return all;
}
}  // namespace esft::cli

// The allocation that failed and the memory state, without the allocator's advice about Python
// environment variables.
static std::string first_sentences(std::string msg) {
  for (auto cut : {" If reserved but unallocated", "\nException raised from", "\nFrame"})
    if (auto p = msg.find(cut); p != std::string::npos) msg.resize(p);
  while (!msg.empty() && (msg.back() == '\n' || msg.back() == ' ')) msg.pop_back();
  return msg;
}

static const char* memory_hint(const std::string& cmd) {
  if (cmd == "train")
    return "lower --micro-batch-size (use --global-batch-size to keep the batch) or --max-length, or add "
           "--activation-checkpointing (or --checkpoint-layers N for some layers)";
  if (cmd == "score") return "lower --batch-tokens or --max-length";
  if (cmd == "bench") return "lower --batch, --seq or --score-tokens, or add --activation-checkpointing";
  return "use a smaller model or another device";
}

static void usage() {
  std::printf("esft %s: Expert-Specialized Fine-Tuning for Mixture-of-Experts LLMs\n\n", ESFT_VERSION);
  std::printf("usage: esft <command> [flags]   (esft <command> --help documents every flag)\n\ncommands:\n");
  for (auto& c : esft::cli::subcommands()) std::printf("  %-10s %s\n", c.name.c_str(), c.summary.c_str());
}

int main(int argc, char** argv) {
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h") || !std::strcmp(argv[1], "help")) {
    usage();
    return argc < 2 ? 2 : 0;
  }
  if (!std::strcmp(argv[1], "--version")) {
    std::printf("esft %s\n", ESFT_VERSION);
    return 0;
  }
  for (auto& c : esft::cli::subcommands()) {
    if (c.name != argv[1]) continue;
    std::string prog = std::string("esft ") + argv[1];
    argv[1] = prog.data();
    // In a multi-process job a failing rank tells the others (which then stop at once) and a
    // clean end waits for all ranks; on one process end_job does nothing.
    using esft::dist::ParallelContext;
    auto failed = [&](const std::string& what, int rc) {
      auto* par = ParallelContext::get();
      std::string who = par && par->launched() ? " [rank " + std::to_string(par->rank()) + "]" : "";
      auto cause = ParallelContext::report_failure(what);
      if (cause.empty() || cause.find(what) != std::string::npos)
        std::fprintf(stderr, "esft %s%s: error: %s\n", c.name.c_str(), who.c_str(), what.c_str());
      else  // the echo of another rank's failure: say that one
        std::fprintf(stderr, "esft %s%s: stopping: %s\n", c.name.c_str(), who.c_str(), cause.c_str());
      ParallelContext::end_job(false);
      return rc;
    };
    try {
      int rc = argc == 2 && c.name == "train" && esft::cli::sagemaker_mode() ? esft::cli::sagemaker_train()
                                                                             : c.fn(argc - 1, argv + 1);
      // kExitInterrupted: every rank stopped at the same step on a signal, after a checkpoint.
      const bool clean = rc == 0 || rc == esft::kExitInterrupted;
      if (!clean && ParallelContext::get() && ParallelContext::get()->launched())
        return failed(fmt::format("esft {} ended with exit status {}", c.name, rc), rc);
      ParallelContext::end_job(clean);
      return rc;
    } catch (const c10::OutOfMemoryError& e) {
      return failed(fmt::format("out of GPU memory: {}; {}", first_sentences(e.what_without_backtrace()), memory_hint(c.name)), 1);
    } catch (const c10::Error& e) {  // LibTorch's message without its C++ stack frames
      return failed(first_sentences(e.what_without_backtrace()), 1);
    } catch (const std::exception& e) {
      return failed(e.what(), 1);
    }
  }
  std::fprintf(stderr, "esft: unknown command '%s'\n\n", argv[1]);
  usage();
  return 2;
}
