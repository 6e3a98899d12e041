// The ESFT training loop: only the selected experts (and optionally shared experts and
// non-expert modules) train; outputs an adapter and optionally a full HF checkpoint.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "esft/fs.h"
#include "esft/optim.h"

namespace esft {

struct TrainOptions {
  fs::path model, data, expert_config, output, eval_data;
  // A step-N checkpoint, a run directory or a checkpoint directory (its newest usable checkpoint),
  // or "auto": the newest usable checkpoint of checkpoint_dir when there is one, else a fresh start.
  fs::path resume;
  fs::path checkpoint_dir;   // "" = output/checkpoints
  fs::path tensorboard_dir;  // "" = output/tensorboard
  fs::path metrics_file;     // "" = output/metrics.jsonl
  fs::path cache_dir;        // encoded datasets; "" = output/.cache
  std::string device, dtype, chat_format = "auto";
  bool skip_bad_lines = false;
  // optimisation
  double lr = 1e-5, min_lr = 0, warmup_ratio = 0, max_grad_norm = 1.0;
  AdamWOptions adamw;
  std::string lr_scheduler = "constant";
  int64_t micro_batch = 1, global_batch = 0;  // 0 = micro_batch
  int64_t max_length = 4096, epochs = 1, max_steps = 0;
  std::string packing = "document", truncation = "right";
  uint64_t seed = 5934875;
  bool router_aux_loss = false;
  int64_t checkpoint_layers = 0;  // decoder layers (from the first) re-run in the backward: 0 none, -1 all
  // bookkeeping
  int64_t eval_steps = 0, save_steps = 0, save_total_limit = 2, log_steps = 1;
  bool save_full = false;
  int64_t stop_after = 0;  // > 0: checkpoint and exit after this step (time-sliced jobs)
  // Steps whose loss or gradient norm is NaN/Inf are never applied. 0: the first one stops the run
  // (non-zero exit, the last good checkpoint kept); N: up to N such steps are skipped (counted).
  int64_t max_nonfinite_steps = 0;
  double peak_tflops = 989;  // accelerator peak for the MFU estimate (H100/H200 dense bf16); 0 = no MFU
  double cpu_peak_tflops = 0;  // the same on --device cpu, where no default peak makes sense (0 = no MFU)
  // parallelism (the process layout comes from the launcher, see esft/dist/launch.h)
  int expert_parallel = 1;   // ranks each MoE layer's experts are split over; must divide the world size
};

struct TrainOutcome {
  int stop_signal = 0;  // SIGTERM/SIGINT stopped the run after a checkpoint (exit kExitInterrupted)
  int64_t steps_done = 0, skipped_nonfinite = 0;
};
TrainOutcome run_training(const TrainOptions& opt);

class MoeModel;

// Writes a complete HF checkpoint of `model` to dir (config.json and tokenizer files copied
// from model_dir), atomically.
void write_full_checkpoint(MoeModel& model, const fs::path& model_dir, const fs::path& dir,
                           size_t max_shard_bytes = size_t(5000) * 1000 * 1000);
// The same from the base checkpoint plus adapter tensors (what esft merge does; used when the
// trained experts are spread over ranks).
struct ExpertSelection;
struct HfTensor;
void write_merged_checkpoint(const fs::path& model_dir, const std::vector<HfTensor>& adapter, const ExpertSelection& sel,
                             const fs::path& dir, size_t max_shard_bytes = size_t(5000) * 1000 * 1000);

}  // namespace esft
