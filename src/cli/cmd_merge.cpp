// esft merge: base checkpoint + ESFT adapter -> a complete HF checkpoint.
#include <cxxopts.hpp>

#include <set>

#include "esft/cli.h"
#include "esft/error.h"
#include "esft/log.h"
#include "esft/model.h"
#include "esft/run_control.h"
#include "esft/tensor_io.h"
#include "esft/train.h"
#include "flags.h"

namespace esft {
namespace {

// "5GB" -> 5e9 bytes (decimal units, as HF's max_shard_size).
size_t parse_size(const std::string& s) {
  char* end;
  double v = std::strtod(s.c_str(), &end);
  std::string unit = end;
  double mul = unit == "" || unit == "B" ? 1 : unit == "KB" ? 1e3 : unit == "MB" ? 1e6 : unit == "GB" ? 1e9 : unit == "TB" ? 1e12 : -1;
  // At least one byte, and representable (a shard can never be larger than 1 PB anyway).
  if (end == s.c_str() || mul < 0 || !(v * mul >= 1) || !(v * mul <= 1e15))
    fail("--max-shard-size \"{}\": expected a size from 1B to 1000TB, such as 5GB, 500MB or 300KB", s);
  return size_t(v * mul);
}

int cmd_merge(int argc, char** argv) {
  cxxopts::Options o(argv[0], "Write base model + ESFT adapter as one Hugging Face checkpoint.");
  // clang-format off
  o.add_options()
    ("model", "base HF checkpoint directory", cxxopts::value<std::string>())
    ("adapter", "adapter directory (model.safetensors + expert_config.json from esft train)", cxxopts::value<std::string>())
    ("output", "directory for the merged checkpoint", cxxopts::value<std::string>())
    ("max-shard-size", "largest weight file, e.g. 5GB, 500MB, 300KB; bigger checkpoints are split into shards with model.safetensors.index.json", cxxopts::value<std::string>()->default_value("5GB"))
    ("h,help", "show this help");
  // clang-format on
  auto a = cli::parse_flags(o, argc, argv);
  if (a.count("help")) {
    std::printf("%s\n", o.help().c_str());
    return 0;
  }
  cli::require_flags(a, {"model", "adapter", "output"});
  fs::path model_dir = a["model"].as<std::string>(), adapter = a["adapter"].as<std::string>(),
           output = a["output"].as<std::string>();
  const size_t shard_bytes = parse_size(a["max-shard-size"].as<std::string>());
  if (!fs::exists(model_dir / "config.json")) fail("--model {}: no config.json (not a Hugging Face checkpoint directory)", model_dir.string());
  if (!fs::exists(adapter / "model.safetensors")) fail("--adapter {}: no model.safetensors (not an esft adapter?)", adapter.string());
  // The output directory is replaced as a whole: it must not be (or hold) an input.
  for (auto& [flag, in] : {std::pair{"--model", model_dir}, {"--adapter", adapter}})
    if (path_within(in, output))
      fail("--output {} {} {} {}: merging would replace its own input; choose another output directory", output.string(),
           path_within(output, in) ? "is" : "holds", flag, in.string());
  const fs::path cfg_file = adapter / "expert_config.json";
  if (!fs::exists(cfg_file))
    fail("--adapter {}: no expert_config.json beside model.safetensors: without it the adapter's tensors cannot be "
         "checked against the experts it trained (esft train writes both)", adapter.string());
  auto tensors = load_safetensors(adapter / "model.safetensors");
  for (auto& [name, t] : tensors)
    if (t.is_floating_point() && !at::isfinite(t).all().item<bool>())
      fail("{}: tensor {} holds NaN or Inf: the adapter is broken (its training diverged); refusing to merge it",
           (adapter / "model.safetensors").string(), name);
  // fp32 on CPU: exports are cast back to each tensor's checkpoint dtype, so nothing is lost.
  auto model = load_model(model_dir, LoadOptions{"cpu", at::kFloat});
  auto sel = ExpertSelection::from_json_file(cfg_file);
  sel.check_against(model->moe_layers(), model->n_routed_experts(), model->architecture(), cfg_file.string());
  model->configure_training(sel);
  // The adapter must hold exactly the tensors its expert config trains.
  std::set<std::string> expected, missing;
  for (auto& t : model->adapter_tensors()) expected.insert(t.name);
  for (auto& name : expected)
    if (!tensors.count(name)) missing.insert(name);
  for (auto& [name, t] : tensors)
    if (!expected.count(name))
      fail("{}: holds {}, which {} does not train: the adapter and its expert config do not belong together",
           (adapter / "model.safetensors").string(), name, cfg_file.string());
  if (!missing.empty())
    fail("{}: lacks {} tensor(s) that {} trains, e.g. {}: the adapter and its expert config do not belong together",
         (adapter / "model.safetensors").string(), missing.size(), cfg_file.string(), *missing.begin());
  model->load_adapter_tensors(tensors);
  write_full_checkpoint(*model, model_dir, output, shard_bytes);
  log_info("wrote " + a["output"].as<std::string>());
  return 0;
}

}  // namespace
ESFT_SUBCOMMAND("merge", "merge an ESFT adapter into its base checkpoint", cmd_merge);
}  // namespace esft
