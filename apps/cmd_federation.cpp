// `fedge coordinator --config FILE`, `fedge node --config FILE` and
// `fedge adapter init`: thin wrappers around coordinator/runtime.h and
// node/runtime.h. SIGINT/SIGTERM stop either daemon cleanly (state on disk is
// consistent at any point; a later start continues).
#include <atomic>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <thread>

#include <spdlog/spdlog.h>

#include "commands.h"
#include "fedge/common/error.h"
#include "fedge/common/machine.h"
#include "fedge/coordinator/runtime.h"
#include "fedge/inference/lora.h"
#include "fedge/inference/model_config.h"
#include "fedge/inference/model_gguf.h"
#include "fedge/node/runtime.h"
#include "fedge/node/serving.h"

namespace fedge::apps {
namespace {

namespace fs = std::filesystem;

std::atomic<bool>* g_stop_flag = nullptr;
extern "C" void on_stop_signal(int) {
  if (g_stop_flag) g_stop_flag->store(true);
}

// Routes SIGINT/SIGTERM to `stop` while alive.
struct StopOnSignal {
  explicit StopOnSignal(std::atomic<bool>& stop) {
    g_stop_flag = &stop;
    std::signal(SIGINT, on_stop_signal);
    std::signal(SIGTERM, on_stop_signal);
  }
  ~StopOnSignal() {
    std::signal(SIGINT, SIG_DFL);
    std::signal(SIGTERM, SIG_DFL);
    g_stop_flag = nullptr;
  }
};

// Runs `runtime` until it ends or SIGINT/SIGTERM arrives; a watcher thread
// forwards the signal flag to runtime.stop() (signal handlers may only set flags).
template <class Runtime>
int run_until_signal(Runtime& runtime) {
  std::atomic<bool> stop{false};
  StopOnSignal signals(stop);
  std::thread watcher([&] {
    while (!stop.load()) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    runtime.stop();
  });
  struct JoinOnExit {
    std::atomic<bool>& stop;
    std::thread& watcher;
    ~JoinOnExit() {
      stop.store(true);
      watcher.join();
    }
  } join{stop, watcher};
  return runtime.run();
}

inference::ModelConfig model_config(const std::string& model) {
  if (model == "tiny") return inference::ModelConfig::tiny();
  return inference::is_gguf_file(model) ? inference::load_gguf_config(model) : inference::ModelConfig::from_dir(model);
}

// A fresh PEFT adapter (B = 0: the federation starts from the base model).
void write_initial_adapter(const coordinator::AdapterInit& init, const fs::path& out) {
  inference::LoraConfig lora;
  lora.r = init.rank;
  lora.alpha = init.alpha;
  lora.target_modules = init.targets;
  lora.base_model_name_or_path = init.model;
  lora.validate("[adapter]");
  inference::LoraAdapter::create(model_config(init.model), lora, init.seed).save(out);
  spdlog::info("wrote the initial adapter {} (r={}, alpha={}, {} targets)", out.string(), init.rank, init.alpha,
               init.targets.size());
}

int run_coordinator(const std::string& config_file) {
  auto config = coordinator::read_coordinator_config(config_file);
  if (!config.initial_adapter.empty() && !fs::exists(config.initial_adapter / "adapter_model.safetensors")) {
    write_initial_adapter(config.adapter_init, config.initial_adapter);
  }
  coordinator::CoordinatorRuntime runtime(std::move(config));
  return run_until_signal(runtime);
}

int run_node(const std::string& config_file) {
  auto config = node::read_node_config(config_file);
  node::NodeRuntime runtime(config);
  // Serving runs on its own Model over the runtime's base weights (shared,
  // one copy), so answers never wait for training.
  std::unique_ptr<node::NodeServing> serving;
  const auto& serve = config.serve;
  if (!serve.http.empty() || !serve.zmq.empty() || !serve.split_serve.empty()) {
    serving = std::make_unique<node::NodeServing>(config, &runtime.base());
    runtime.on_global_installed(
        [&serving](const ParamVector& global, std::uint64_t version) { serving->install_global(global, version); });
    runtime.on_local_trained(
        [&serving](const ParamVector& local, std::uint64_t round) { serving->install_local(local, round); });
    serving->set_metrics_provider(
        [&runtime](prometheus::TextWriter& out) { node::write_node_metrics(runtime.stats(), out); });
  }
  spdlog::info("node started: resident {:.0f} MB", rss_megabytes());
  return run_until_signal(runtime);
}

}  // namespace

void add_federation_commands(CLI::App& app, const GlobalOptions&, CommandBody& chosen) {
  auto coordinator_file = std::make_shared<std::string>();
  auto* co = app.add_subcommand("coordinator", "Run the federation coordinator (rounds, secure aggregation, state)");
  co->add_option("--config", *coordinator_file, "coordinator TOML file (see configs/coordinator.toml)")
      ->required()
      ->check(CLI::ExistingFile);
  co->callback([&chosen, coordinator_file] { chosen = [coordinator_file] { return run_coordinator(*coordinator_file); }; });

  auto node_file = std::make_shared<std::string>();
  auto* no = app.add_subcommand("node", "Run an edge node: train when selected, serve the model meanwhile");
  no->add_option("--config", *node_file, "node TOML file (see configs/node1.toml)")->required()->check(CLI::ExistingFile);
  no->callback([&chosen, node_file] { chosen = [node_file] { return run_node(*node_file); }; });

  auto init = std::make_shared<coordinator::AdapterInit>();
  auto out = std::make_shared<std::string>();
  auto* adapter = app.add_subcommand("adapter", "Adapter utilities");
  adapter->require_subcommand(1);
  auto* init_cmd = adapter->add_subcommand("init", "Write a fresh PEFT LoRA adapter (B = 0) for a base model");
  init_cmd->add_option("--model", init->model, "base model directory or 'tiny'")->capture_default_str();
  init_cmd->add_option("--rank", init->rank, "LoRA rank")->capture_default_str()->check(CLI::Range(1, 4096));
  init_cmd->add_option("--alpha", init->alpha, "LoRA alpha")->capture_default_str();
  init_cmd->add_option("--targets", init->targets, "projections, e.g. q_proj v_proj")->capture_default_str();
  init_cmd->add_option("--seed", init->seed, "seed of the A matrices")->capture_default_str();
  init_cmd->add_option("--out", *out, "adapter directory to write")->required();
  init_cmd->callback([&chosen, init, out] {
    chosen = [init, out] {
      write_initial_adapter(*init, *out);
      std::printf("adapter: %s\n", out->c_str());
      return 0;
    };
  });
}

}  // namespace fedge::apps
