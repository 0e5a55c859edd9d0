// `fedge info FILE|DIR`: what a safetensors file (or a model/adapter folder)
// holds: tensors, dtypes, shapes, parameter count and metadata.
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>

#include <fmt/format.h>

#include "commands.h"
#include "fedge/common/error.h"
#include "fedge/common/safetensors.h"

namespace fedge::apps {
namespace {

std::filesystem::path resolve_tensor_file(const std::filesystem::path& path) {
  if (!std::filesystem::is_directory(path)) return path;
  for (const char* name : {"model.safetensors", "adapter_model.safetensors"}) {
    if (std::filesystem::exists(path / name)) return path / name;
  }
  throw Error(ErrorKind::kNotFound, path.string() +
                                        ": no model.safetensors or adapter_model.safetensors in this folder");
}

int run_info(const std::string& target, bool list_tensors) {
  if (!std::filesystem::exists(target)) {
    throw Error(ErrorKind::kNotFound, target + ": no such file or folder");
  }
  auto file = SafetensorsFile::open(resolve_tensor_file(target));
  std::int64_t params = 0;
  std::uint64_t bytes = 0;
  for (const auto& tensor : file.tensors()) {
    params += tensor.numel();
    bytes += tensor.nbytes();
    if (list_tensors) {
      fmt::print("{:<60} {:<5} {}\n", tensor.name, dtype_name(tensor.dtype), format_shape(tensor.shape));
    }
  }
  fmt::print("file: {}\ntensors: {}\nparameters: {}\ndata bytes: {}\n", file.source_name(),
             file.tensors().size(), params, bytes);
  for (const auto& [key, value] : file.metadata()) fmt::print("metadata {}: {}\n", key, value);
  return 0;
}

}  // namespace

void add_info_command(CLI::App& app, const GlobalOptions&, CommandBody& chosen) {
  struct Options {
    std::string target;
    bool list = false;
  };
  auto options = std::make_shared<Options>();
  auto* sub = app.add_subcommand("info", "Show what a safetensors file or model/adapter folder holds");
  sub->add_option("path", options->target, "a .safetensors file, or a folder with one")->required();
  sub->add_flag("--tensors", options->list, "list every tensor with dtype and shape");
  sub->callback([&chosen, options] { chosen = [options] { return run_info(options->target, options->list); }; });
}

}  // namespace fedge::apps
