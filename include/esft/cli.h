// Subcommand registry: each src/cli/cmd_*.cpp registers itself with ESFT_SUBCOMMAND, and
// main() dispatches on argv[1].
#pragma once
#include <functional>
#include <string>
#include <vector>

namespace esft::cli {

using SubcommandFn = std::function<int(int argc, char** argv)>;  // argv[0] is "esft <name>"

struct Subcommand {
  std::string name;
  std::string summary;
  SubcommandFn fn;
};

std::vector<Subcommand>& subcommands();

struct Registrar {
  Registrar(std::string name, std::string summary, SubcommandFn fn) {
    subcommands().push_back({std::move(name), std::move(summary), std::move(fn)});
  }
};

// SageMaker: `esft train` with no flags inside a training container (hyperparameters.json
// present) takes its flags from SageMaker's files and channels; see src/cli/sagemaker.cpp.
bool sagemaker_mode();
int sagemaker_train();

#define ESFT_SUBCOMMAND(name, summary, fn) \
  static ::esft::cli::Registrar esft_subcommand_registrar_##fn(name, summary, fn)

}  // namespace esft::cli
