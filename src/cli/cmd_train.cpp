// esft train: fine-tune only the selected experts (ESFT).
#include <fmt/ranges.h>

#include <cxxopts.hpp>

#include <limits>

#include "esft/cli.h"
#include "esft/dist/launch.h"
#include "esft/error.h"
#include "esft/run_control.h"
#include "esft/train.h"
#include "flags.h"

namespace esft {
namespace {

cxxopts::Options train_options(const std::string& prog) {
  cxxopts::Options o(prog, "Expert-specialized fine-tuning: train only the experts in --expert-config (plus shared "
                              "experts / non-expert modules when it says so); everything else stays frozen.\n"
                              "Writes OUT/adapter/{model.safetensors,expert_config.json}, OUT/full/ with --save-full, "
                              "OUT/checkpoints/step-N/, OUT/metrics.jsonl, OUT/tensorboard/ (TensorBoard event files).\n"
                              "SIGTERM/SIGINT: the current step finishes, a checkpoint is written and the exit status is "
                              "75 (continue with --resume OUT).");
  const TrainOptions d;  // the defaults, stated once (in TrainOptions)
  auto num = [](auto v) { return fmt::format("{}", v); };
  // clang-format off
  o.add_options("Data and model")
    ("model", "HF checkpoint directory", cxxopts::value<std::string>())
    ("data", "training data, jsonl", cxxopts::value<std::string>())
    ("expert-config", "expert_config.json from `esft select`", cxxopts::value<std::string>())
    ("output", "output directory", cxxopts::value<std::string>())
    ("eval-dataset", "jsonl evaluated every --eval-steps and at the end", cxxopts::value<std::string>())
    ("chat-format", "chat format for conversation records", cxxopts::value<std::string>()->default_value(d.chat_format))
    ("skip-bad-lines", "skip malformed jsonl lines (counted) instead of stopping")
    ("max-length", "tokens per row", cxxopts::value<int64_t>()->default_value(num(d.max_length)))
    ("packing", "none (one sample per row, padded), causal (concatenate samples into rows that attend across sample "
                "boundaries, as the ESFT reference does) or document (concatenate, but attention and positions reset "
                "per sample). document is the default: it wastes no compute on padding like causal, yet each sample "
                "is trained exactly as it is seen at inference, without context leaking in from unrelated samples",
     cxxopts::value<std::string>()->default_value(d.packing))
    ("truncation", "over-long samples keep their head (right) or tail (left)", cxxopts::value<std::string>()->default_value(d.truncation));
  o.add_options("Optimisation")
    ("learning-rate", "peak learning rate (the ESFT paper uses 1e-5)", cxxopts::value<double>()->default_value(num(d.lr)))
    ("lr-scheduler", "constant, cosine or linear (HF semantics)", cxxopts::value<std::string>()->default_value(d.lr_scheduler))
    ("warmup-ratio", "fraction of steps with linear warmup from 0", cxxopts::value<double>()->default_value(num(d.warmup_ratio)))
    ("min-lr", "floor of the cosine/linear decay", cxxopts::value<double>()->default_value(num(d.min_lr)))
    ("adam-beta1", "AdamW beta1", cxxopts::value<double>()->default_value(num(d.adamw.beta1)))
    ("adam-beta2", "AdamW beta2", cxxopts::value<double>()->default_value(num(d.adamw.beta2)))
    ("adam-eps", "AdamW epsilon", cxxopts::value<double>()->default_value(num(d.adamw.eps)))
    ("weight-decay", "decoupled weight decay (not applied to norms and biases)", cxxopts::value<double>()->default_value(num(d.adamw.weight_decay)))
    ("max-grad-norm", "clip the global gradient norm to this; 0 disables", cxxopts::value<double>()->default_value(num(d.max_grad_norm)))
    ("micro-batch-size", "rows per forward/backward", cxxopts::value<int64_t>()->default_value(num(d.micro_batch)))
    ("global-batch-size", "rows per optimizer step (gradient accumulation); 0 = the micro batch", cxxopts::value<int64_t>()->default_value(num(d.global_batch)))
    ("epochs", "passes over the data", cxxopts::value<int64_t>()->default_value(num(d.epochs)))
    ("max-steps", "optimizer steps; overrides --epochs when > 0", cxxopts::value<int64_t>()->default_value(num(d.max_steps)))
    ("seed", "data-order seed (epoch e shuffles with seed + e)", cxxopts::value<uint64_t>()->default_value(num(d.seed)))
    ("router-aux-loss", "add the model's router load-balancing loss (off in released configs)")
    ("activation-checkpointing", "keep only each decoder layer's input and re-run the layer in the backward: far less "
                                 "activation memory (long rows, big micro-batches) for about one more forward of compute")
    ("checkpoint-layers", "checkpoint only the first N decoder layers (instead of --activation-checkpointing's all): "
                          "each frees most of its layer's activations for a re-run of that layer; for a step that almost fits",
     cxxopts::value<int64_t>()->default_value(num(d.checkpoint_layers)));
  o.add_options("Runtime and outputs")
    ("device", "cpu, cuda or cuda:N (default: cuda when available, else cpu)", cxxopts::value<std::string>()->default_value(d.device))
    ("dtype", "weights/compute dtype: fp32, bf16, fp16 (default: bf16 on cuda with fp32 master copies of trained tensors, fp32 on cpu)", cxxopts::value<std::string>()->default_value(d.dtype))
    ("eval-steps", "evaluate every N steps (0: only at the end)", cxxopts::value<int64_t>()->default_value(num(d.eval_steps)))
    ("save-steps", "checkpoint every N steps (0: none)", cxxopts::value<int64_t>()->default_value(num(d.save_steps)))
    ("save-total-limit", "checkpoints kept", cxxopts::value<int64_t>()->default_value(num(d.save_total_limit)))
    ("log-steps", "log a line every N steps (metrics.jsonl gets every step)", cxxopts::value<int64_t>()->default_value(num(d.log_steps)))
    ("peak-tflops", "accelerator peak TFLOP/s for the MFU in the log and TensorBoard (on cuda; on cpu only when given): MFU = achieved TFLOP/s / peak, where "
                    "the FLOPs are those the step needs (forward, input gradients, weight gradients of trained tensors "
                    "only, attention within documents; recomputation not counted); the default is H100/H200 dense "
                    "bf16; 0 hides MFU", cxxopts::value<double>()->default_value(num(d.peak_tflops)))
    ("save-full", "also write a complete HF checkpoint to OUT/full")
    ("nproc-per-node", "start N worker processes on this node (one per GPU on cuda) and train with all of them; "
                       "under torchrun/srun the processes come from there instead (see README: multi-GPU)",
     cxxopts::value<int>()->default_value("0"))
    ("expert-parallel", "split each MoE layer's experts over E ranks (all-to-all token exchange); E divides the number "
                        "of processes, which all share each global batch (data parallel)",
     cxxopts::value<int>()->default_value(num(d.expert_parallel)))
    ("stop-after", "checkpoint and exit after step N (for time-limited jobs; continue with --resume)", cxxopts::value<int64_t>()->default_value(num(d.stop_after)))
    ("resume", "continue from a checkpoint directory (OUT/checkpoints/step-N), or OUT to take its newest usable "
               "checkpoint (damaged or non-finite ones are passed over, with a warning), or auto: the newest usable "
               "checkpoint of --checkpoint-dir if there is one, else start from the beginning; with the same flags the "
               "result equals an uninterrupted run", cxxopts::value<std::string>())
    ("checkpoint-dir", "where checkpoints go (default: OUT/checkpoints)", cxxopts::value<std::string>())
    ("tensorboard-dir", "where TensorBoard event files go (default: OUT/tensorboard)", cxxopts::value<std::string>())
    ("metrics-file", "the per-step jsonl log (default: OUT/metrics.jsonl)", cxxopts::value<std::string>())
    ("cache-dir", "cache of encoded datasets (default: OUT/.cache)", cxxopts::value<std::string>())
    ("max-nonfinite-steps", "a step whose loss or gradient norm is NaN/Inf is never applied; 0 stops the run at the "
                            "first (exit status 1, the last good checkpoint kept), N skips up to N such steps (counted in "
                            "the log and metrics.jsonl) before stopping",
     cxxopts::value<int64_t>()->default_value(num(d.max_nonfinite_steps)))
    ("h,help", "show this help");
  // clang-format on
  return o;
}

int cmd_train(int argc, char** argv) {
  auto o = train_options(argv[0]);
  auto a = cli::parse_flags(o, argc, argv);
  if (a.count("help")) {
    std::printf("%s\n", o.help().c_str());
    return 0;
  }
  cli::require_flags(a, {"model", "data", "expert-config", "output"});
  TrainOptions t;
  t.model = a["model"].as<std::string>();
  t.data = a["data"].as<std::string>();
  t.expert_config = a["expert-config"].as<std::string>();
  t.output = a["output"].as<std::string>();
  if (a.count("eval-dataset")) t.eval_data = a["eval-dataset"].as<std::string>();
  if (a.count("resume")) t.resume = a["resume"].as<std::string>();
  for (auto [flag, field] : {std::pair{"checkpoint-dir", &t.checkpoint_dir}, {"tensorboard-dir", &t.tensorboard_dir},
                             {"metrics-file", &t.metrics_file}, {"cache-dir", &t.cache_dir}})
    if (a.count(flag)) *field = a[flag].as<std::string>();
  t.max_nonfinite_steps = cli::flag_int(a, "max-nonfinite-steps", 0, std::numeric_limits<int64_t>::max());
  t.chat_format = a["chat-format"].as<std::string>();
  t.skip_bad_lines = a.count("skip-bad-lines") > 0;
  t.max_length = a["max-length"].as<int64_t>();
  t.packing = a["packing"].as<std::string>();
  t.truncation = a["truncation"].as<std::string>();
  t.lr = a["learning-rate"].as<double>();
  t.lr_scheduler = a["lr-scheduler"].as<std::string>();
  t.warmup_ratio = a["warmup-ratio"].as<double>();
  t.min_lr = a["min-lr"].as<double>();
  t.adamw = {a["adam-beta1"].as<double>(), a["adam-beta2"].as<double>(), a["adam-eps"].as<double>(),
             a["weight-decay"].as<double>()};
  t.max_grad_norm = a["max-grad-norm"].as<double>();
  t.micro_batch = a["micro-batch-size"].as<int64_t>();
  t.global_batch = a["global-batch-size"].as<int64_t>();
  t.epochs = a["epochs"].as<int64_t>();
  t.max_steps = a["max-steps"].as<int64_t>();
  t.seed = a["seed"].as<uint64_t>();
  t.router_aux_loss = a.count("router-aux-loss") > 0;
  t.checkpoint_layers = cli::checkpoint_layers(a);
  t.device = a["device"].as<std::string>();
  t.dtype = a["dtype"].as<std::string>();
  t.eval_steps = a["eval-steps"].as<int64_t>();
  t.save_steps = a["save-steps"].as<int64_t>();
  t.save_total_limit = a["save-total-limit"].as<int64_t>();
  t.log_steps = a["log-steps"].as<int64_t>();
  t.save_full = a.count("save-full") > 0;
  t.stop_after = a["stop-after"].as<int64_t>();
  t.peak_tflops = a["peak-tflops"].as<double>();
  if (a.count("peak-tflops")) t.cpu_peak_tflops = t.peak_tflops;  // the default peak is a GPU's
  t.expert_parallel = a["expert-parallel"].as<int>();
  const double inf = std::numeric_limits<double>::infinity();
  const int64_t big = std::numeric_limits<int64_t>::max();
  // Every number finite and in range, the flag named in the error.
  cli::flag_number(a, "warmup-ratio", 0, 1);
  cli::flag_number(a, "learning-rate", 0, inf);
  cli::flag_number(a, "min-lr", 0, inf);
  cli::flag_number(a, "max-grad-norm", 0, inf);
  cli::flag_number(a, "weight-decay", 0, inf);
  cli::flag_number(a, "peak-tflops", 0, inf);
  cli::flag_number(a, "adam-beta1", 0, 0.999999999);
  cli::flag_number(a, "adam-beta2", 0, 0.999999999);
  cli::flag_number(a, "adam-eps", 1e-30, 1);
  cli::flag_int(a, "max-length", 1, big);
  cli::flag_int(a, "epochs", 1, big);
  cli::flag_int(a, "micro-batch-size", 1, big);
  for (auto f : {"global-batch-size", "max-steps", "eval-steps", "save-steps", "save-total-limit", "log-steps", "stop-after"})
    cli::flag_int(a, f, 0, big);
  ESFT_CHECK(a["nproc-per-node"].as<int>() >= 0, "--nproc-per-node {}: must be 1 or more (0, the default, starts no workers)", a["nproc-per-node"].as<int>());
  ESFT_CHECK(t.warmup_ratio >= 0 && t.warmup_ratio <= 1, "--warmup-ratio must be in [0, 1]");
  ESFT_CHECK(t.max_length > 0 && t.epochs > 0, "--max-length and --epochs must be positive");
  // Flag values checked here so a typo fails before data and model load.
  auto one_of = [](const std::string& flag, const std::string& v, std::initializer_list<const char*> ok) {
    for (auto o : ok)
      if (v == o) return;
    fail("--{} \"{}\": expected one of {}", flag, v, fmt::join(ok, ", "));
  };
  one_of("lr-scheduler", t.lr_scheduler, {"constant", "cosine", "linear"});
  one_of("packing", t.packing, {"none", "causal", "document"});
  one_of("truncation", t.truncation, {"right", "left"});
  ESFT_CHECK(t.lr >= 0 && t.min_lr >= 0 && t.min_lr <= t.lr, "--learning-rate and --min-lr must be >= 0, with --min-lr <= --learning-rate");
  ESFT_CHECK(t.max_grad_norm >= 0, "--max-grad-norm must be >= 0 (0 disables clipping)");
  ESFT_CHECK(t.micro_batch >= 1 && t.global_batch >= 0, "--micro-batch-size must be >= 1 and --global-batch-size >= 0");
  ESFT_CHECK(t.max_steps >= 0 && t.eval_steps >= 0 && t.save_steps >= 0 && t.save_total_limit >= 0 && t.stop_after >= 0,
             "--max-steps, --eval-steps, --save-steps, --save-total-limit and --stop-after must be >= 0");
  ESFT_CHECK(t.adamw.beta1 >= 0 && t.adamw.beta1 < 1 && t.adamw.beta2 >= 0 && t.adamw.beta2 < 1 && t.adamw.eps > 0,
             "--adam-beta1/--adam-beta2 must be in [0, 1) and --adam-eps > 0");
  ESFT_CHECK(t.expert_parallel >= 1, "--expert-parallel must be >= 1");
  // --nproc-per-node: this process may be the launcher of the workers that do the training.
  std::vector<std::string> args = {"train"};
  for (int i = 1; i < argc; ++i) args.push_back(argv[i]);
  if (auto rc = dist::launch_if_asked(a["nproc-per-node"].as<int>(), args)) return *rc;
  return run_training(t).stop_signal ? kExitInterrupted : 0;
}

}  // namespace
ESFT_SUBCOMMAND("train", "fine-tune only the selected experts", cmd_train);
namespace cli {
cxxopts::Options train_flags() { return train_options("esft train"); }
}  // namespace cli
}  // namespace esft
