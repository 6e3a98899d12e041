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

int cmd_merge(int argc, char** argv) {
  cxxopts::Options o(argv[0], "Write base model + ESFT adapter as one Hugging Face checkpoint.");
  // clang-format off
  o.add_options()
    ("model", "base HF checkpoint directory", cxxopts::value<std::string>())
    ("adapter", "adapter directory (model.safetensors + expert_config.json from esft train)", cxxopts::value<std::string>())
    ("output", "directory for the merged checkpoint", cxxopts::value<std::string>())
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
  if (!fs::exists(adapter / "model.safetensors")) fail("{}: no model.safetensors (not an esft adapter?)", adapter.string());
  // fp32 on CPU: exports are cast back to each tensor's checkpoint dtype, so nothing is lost.
  auto model = load_model(model_dir, LoadOptions{"cpu", at::kFloat});
  if (fs::exists(adapter / "expert_config.json"))
    model->configure_training(ExpertSelection::from_json_file(adapter / "expert_config.json"));
  model->load_adapter_tensors(load_safetensors(adapter / "model.safetensors"));
  write_full_checkpoint(*model, model_dir, a["output"].as<std::string>());
  log_info("wrote " + a["output"].as<std::string>());
  return 0;
}

}  // namespace
ESFT_SUBCOMMAND("merge", "merge an ESFT adapter into its base checkpoint", cmd_merge);
}  // namespace esft
