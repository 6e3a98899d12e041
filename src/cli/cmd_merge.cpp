// esft merge: base checkpoint + ESFT adapter -> a complete HF checkpoint.
#include <cxxopts.hpp>

#include "esft/cli.h"
#include "esft/error.h"
#include "esft/log.h"
#include "esft/model.h"
#include "esft/tensor_io.h"
#include "esft/train.h"

namespace esft {
namespace {

// "5GB" -> 5e9 bytes (decimal units, as HF's max_shard_size).
size_t parse_size(const std::string& s) {
  char* end;
  double v = std::strtod(s.c_str(), &end);
  std::string unit = end;
  double mul = unit == "" || unit == "B" ? 1 : unit == "KB" ? 1e3 : unit == "MB" ? 1e6 : unit == "GB" ? 1e9 : -1;
  if (end == s.c_str() || mul < 0 || v <= 0) fail("--max-shard-size \"{}\": expected a size such as 5GB, 500MB or 300KB", s);
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
  auto a = o.parse(argc, argv);
  if (a.count("help")) {
    std::printf("%s\n", o.help().c_str());
    return 0;
  }
  for (auto req : {"model", "adapter", "output"})
    if (!a.count(req)) fail("--{} is required (see --help)", req);
  fs::path model_dir = a["model"].as<std::string>(), adapter = a["adapter"].as<std::string>();
  if (!fs::exists(model_dir / "config.json")) fail("--model {}: no config.json (not a Hugging Face checkpoint directory)", model_dir.string());
  if (!fs::exists(adapter / "model.safetensors")) fail("--adapter {}: no model.safetensors (not an esft adapter?)", adapter.string());
  // fp32 on CPU: exports are cast back to each tensor's checkpoint dtype, so nothing is lost.
  auto model = load_model(model_dir, LoadOptions{"cpu", at::kFloat});
  if (fs::exists(adapter / "expert_config.json")) {
    auto sel = ExpertSelection::from_json_file(adapter / "expert_config.json");
    sel.check_against(model->moe_layers(), model->n_routed_experts(), model->architecture(), (adapter / "expert_config.json").string());
    model->configure_training(sel);
  }
  model->load_adapter_tensors(load_safetensors(adapter / "model.safetensors"));
  write_full_checkpoint(*model, model_dir, a["output"].as<std::string>(), parse_size(a["max-shard-size"].as<std::string>()));
  log_info("wrote " + a["output"].as<std::string>());
  return 0;
}

}  // namespace
ESFT_SUBCOMMAND("merge", "merge an ESFT adapter into its base checkpoint", cmd_merge);
}  // namespace esft
