// LoRA training throughput and peak memory: fedge's trainer beside the same
// step written in PyTorch-Python (bench/training/lora_step.py, Debian's
// python3-torch), same shapes and thread counts, measured in the same run.
// Workload: batch 4 x seq 256 random tokens, LoRA r=8 alpha=16 on q_proj and
// v_proj, AdamW, gradient-norm clipping; the tiny preset and a randomly
// initialised SmolLM-135M-shaped model (30 layers, hidden 576, vocab 49152).
//
//   build/bin/bench_train                 # every case, fedge and Python
//   build/bin/bench_train --one smollm135m 2 5 [ckpt]   # one fedge case (used internally;
//                                                     # ckpt: gradient checkpointing on)
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "fedge/common/machine.h"
#include "fedge/common/rng.h"
#include "fedge/inference/lora.h"
#include "fedge/inference/model.h"
#include "fedge/inference/torch_setup.h"
#include "fedge/training/trainer.h"

using namespace fedge;

namespace {

constexpr int kBatch = 4, kSeq = 256;

inference::ModelConfig config_named(const std::string& name) {
  return name == "tiny" ? inference::ModelConfig::tiny() : inference::ModelConfig::smollm_135m();
}

// One case in this process: prints "tokens_per_s=... peak_rss_mb=...".
int run_one(const std::string& name, int threads, int steps, bool checkpointing) {
  inference::setup_torch(threads);
  auto config = config_named(name);
  auto model = inference::Model::random(config, 0);
  inference::LoraConfig lora;
  lora.r = 8;
  lora.alpha = 16;
  lora.target_modules = {"q_proj", "v_proj"};
  model.add_adapter("bench", inference::LoraAdapter::create(config, lora, 1));
  Rng rng(5);
  std::vector<training::Sequence> sequences(kBatch);
  for (auto& s : sequences) {
    for (int t = 0; t < kSeq; ++t) {
      s.tokens.push_back(static_cast<inference::TokenId>(rng.below(config.vocab_size)));
      s.target.push_back(t > 0);
    }
  }
  auto data = training::TokenDataset::from_sequences(std::move(sequences));
  training::TrainOptions options;
  options.steps = steps + 1;
  options.batch_size = kBatch;
  options.log_every = 0;
  options.gradient_checkpointing = checkpointing;
  auto trainer = training::Trainer::for_adapter(model, "bench", data, options);
  trainer.step();  // warm-up
  auto start = std::chrono::steady_clock::now();
  while (!trainer.done()) trainer.step();
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("tokens_per_s=%.1f peak_rss_mb=%.0f\n", kBatch * kSeq * steps / seconds, peak_rss_megabytes());
  return 0;
}

struct Figures {
  double tokens_per_s = 0, rss_mb = 0;
};

Figures run_child(const std::string& command) {
  Figures f;
  std::unique_ptr<FILE, int (*)(FILE*)> pipe(popen(command.c_str(), "r"), pclose);
  char line[256];
  while (pipe && std::fgets(line, sizeof(line), pipe.get())) {
    std::sscanf(line, "tokens_per_s=%lf peak_rss_mb=%lf", &f.tokens_per_s, &f.rss_mb);
  }
  return f;
}

}  // namespace

int main(int argc, char** argv) {
  if ((argc == 5 || argc == 6) && std::string(argv[1]) == "--one") {
    return run_one(argv[2], std::atoi(argv[3]), std::atoi(argv[4]), argc == 6 && std::string(argv[5]) == "ckpt");
  }
  std::string self = argv[0];
  std::string script = std::string(FEDGE_SOURCE_DIR) + "/bench/training/lora_step.py";
  std::printf("bench_train: LoRA r=8 on q,v, batch %d x seq %d, AdamW; fedge vs PyTorch-Python (same run)\n", kBatch,
              kSeq);
  std::printf("machine: %s\n", machine_summary().c_str());
  std::printf("%-12s %-8s %14s %12s %14s %12s %8s\n", "model", "threads", "fedge tok/s", "fedge MB", "python tok/s",
              "python MB", "ratio");
  for (std::string name : {"tiny", "smollm135m"}) {
    int steps = name == "tiny" ? 20 : 4;
    for (int threads : {1, 2}) {
      if (threads > online_cores()) continue;
      std::string args = name + " " + std::to_string(threads) + " " + std::to_string(steps);
      Figures ours = run_child(self + " --one " + args);
      Figures python = run_child("OMP_NUM_THREADS=" + std::to_string(threads) + " /usr/bin/python3 " + script + " " +
                                 args + " 2>/dev/null");
      double ratio = python.tokens_per_s > 0 ? ours.tokens_per_s / python.tokens_per_s : 0.0;
      std::printf("%-12s %-8d %14.1f %12.0f %14.1f %12.0f %7.2fx\n", name.c_str(), threads, ours.tokens_per_s,
                  ours.rss_mb, python.tokens_per_s, python.rss_mb, ratio);
      std::fflush(stdout);
    }
  }
  for (int threads : {1, 2}) {
    if (threads > online_cores()) continue;
    Figures ckpt = run_child(self + " --one smollm135m " + std::to_string(threads) + " 4 ckpt");
    std::printf("%-12s %-8d %14.1f %12.0f   (fedge with gradient checkpointing)\n", "smollm135m", threads,
                ckpt.tokens_per_s, ckpt.rss_mb);
  }
  std::printf("python: 0 tok/s means /usr/bin/python3 has no torch (scripts/install-deps.sh --bench installs it)\n");
  return 0;
}
