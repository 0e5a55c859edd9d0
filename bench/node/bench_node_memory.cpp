// Resident memory of a node (NodeRuntime + NodeServing, as `fedge node` builds
// them) over a random model of a given shape, against the size of its weight
// file. Prints RSS at each stage:
//   start     after libtorch's set-up, before any model
//   node      NodeRuntime (training model, data) + NodeServing (HTTP) up
//   touched   after one forward pass over every weight (as the first request)
// and, for comparison, the old layout: two independent copies of the base
// (training and serving each loading the file into memory of its own).
//
// Usage: bench_node_memory [--shape smollm-135m|tiny] [--dtype f32|bf16]
//                          [--dir DIR] [--old]
// Writes the model to DIR (default: a temp folder) unless it is already there.
// Run it alone on the machine: RSS is this process's, but page-cache pressure
// from others can evict mapped pages.
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>

#include "fedge/common/machine.h"
#include "fedge/inference/generate.h"
#include "fedge/inference/model.h"
#include "fedge/inference/tokenizer.h"
#include "fedge/inference/torch_setup.h"
#include "fedge/node/runtime.h"
#include "fedge/node/serving.h"

using namespace fedge;
namespace fs = std::filesystem;

namespace {

void touch_every_weight(const inference::Model& base) {
  inference::Model m = base.share();
  auto cache = m.make_cache(1, 4);
  const std::vector<inference::TokenId> tokens = {1, 2, 3, 4};
  m.forward(tokens, {}, 1, 4, cache);
}

void row(const char* stage, double rss, double file_mb) {
  std::printf("%-8s  RSS %7.1f MB  (%.2fx the weight file)\n", stage, rss, rss / file_mb);
}

}  // namespace

int main(int argc, char** argv) {
  std::string shape = "smollm-135m", dtype = "bf16";
  fs::path dir;
  bool old_layout = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--shape" && i + 1 < argc) shape = argv[++i];
    else if (a == "--dtype" && i + 1 < argc) dtype = argv[++i];
    else if (a == "--dir" && i + 1 < argc) dir = argv[++i];
    else if (a == "--old") old_layout = true;
    else {
      std::fprintf(stderr, "usage: bench_node_memory [--shape smollm-135m|tiny] [--dtype f32|bf16] [--dir DIR] [--old]\n");
      return 2;
    }
  }
  inference::setup_torch(1);
  const double start_rss = rss_megabytes();
  const auto config = shape == "tiny" ? inference::ModelConfig::tiny() : inference::ModelConfig::smollm_135m();
  const auto weights = inference::parse_weight_type(dtype);
  if (dir.empty()) dir = fs::temp_directory_path() / ("fedge_bench_node_" + shape + "_" + dtype);
  if (!fs::exists(dir / "model.safetensors")) {
    inference::LoadOptions o;
    o.weights = weights;
    auto tok = inference::Tokenizer::byte_level_tiny();
    inference::save_model_dir(inference::Model::random(config, 7, o), dir, &tok);
    // Measure in a fresh process, without the memory writing it took.
    std::fflush(stdout);
    ::execv("/proc/self/exe", argv);
    std::perror("execv");
    return 1;
  }
  const double file_mb = double(fs::file_size(dir / "model.safetensors")) / (1024.0 * 1024.0);
  {
    std::ofstream(dir / "train.jsonl") << "{\"text\": \"a short line of training text\"}\n";
    std::ofstream(dir / "node.toml") << "[node]\nid = 1\ninsecure = true\nstate_dir = \"state\"\n"
                                     << "[coordinator]\nendpoint = \"tcp://127.0.0.1:1\"\n"
                                     << "[model]\npath = \".\"\nweights = \"" << dtype << "\"\n"
                                     << "[data]\ntrain = \"train.jsonl\"\nseq_len = 64\n"
                                     << "[serve]\nhttp = \"127.0.0.1:0\"\n";
  }
  std::printf("model %s (%s), weight file %.1f MB, %s\n", shape.c_str(), dtype.c_str(), file_mb,
              machine_summary().c_str());
  row("start", start_rss, file_mb);
  const auto node_config = node::read_node_config(dir / "node.toml");
  if (old_layout) {
    // Before issue 14: training and serving each held a copy of their own.
    inference::LoadOptions copy;
    copy.weights = weights;
    copy.map = false;
    auto training = inference::load_model_spec(node_config.model, copy);
    auto serving = inference::load_model_spec(node_config.model, copy);
    row("old", rss_megabytes(), file_mb);
    touch_every_weight(training.model);
    touch_every_weight(serving.model);
    row("touched", rss_megabytes(), file_mb);
    return 0;
  }
  node::NodeRuntime runtime(node_config);
  node::NodeServing serving(node_config, &runtime.base());
  row("node", rss_megabytes(), file_mb);
  touch_every_weight(runtime.base().model);
  row("touched", rss_megabytes(), file_mb);
  std::printf("peak RSS %.1f MB (%.2fx)\n", peak_rss_megabytes(), peak_rss_megabytes() / file_mb);
  return 0;
}
