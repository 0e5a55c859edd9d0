// LoRA training throughput and peak memory: fedge's trainer beside the same
// step written in PyTorch-Python (bench/training/lora_step.py, Debian's
// python3-torch), same shapes and thread counts, measured in the same run.
// Workload: batch 4 x seq 256 random tokens, LoRA r=8 alpha=16 on q_proj and
// v_proj, AdamW, gradient-norm clipping; the tiny preset and a randomly
// initialised SmolLM-135M-shaped model (30 layers, hidden 576, vocab 49152).
//
// fedge runs twice per case: with the default bf16 frozen-base products
// (TrainOptions::frozen_base_bf16; f32 where the CPU lacks AVX512-BF16) and
// with everything in f32. The 1-minute load average is printed beside each
// row: other processes on the cores make every figure (and the 2-thread ones
// most) unreliable. The 135M rows end with QLoRA: the same step over a base
// held in Q4_0, with and without gradient checkpointing.
//
//   build/bin/bench_train                          # every case; prints the ratios
//   build/bin/bench_train --threads 1 --model smollm135m   # a subset
//   build/bin/bench_train --one smollm135m 2 5 [bf16|f32|ckpt|ckpt-half|q4_0|q4_0-ckpt]  # one fedge case
#include <chrono>
#include <ctime>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "fedge/common/machine.h"
#include "fedge/common/rng.h"
#include "fedge/inference/frozen_bf16.h"
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

// CPU time of this process (all threads): at 1 thread, tokens per CPU second
// is what a quiet core would give, give or take cache contention.
double cpu_seconds() {
  timespec t{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + 1e-9 * static_cast<double>(t.tv_nsec);
}

// One case in this process: prints "tokens_per_s=... peak_rss_mb=...".
// mode: "bf16" (the default options), "f32" (frozen base in f32) or "ckpt"
// (default options plus gradient checkpointing); "q4_0" and "q4_0-ckpt" the
// same as "bf16" and "ckpt" over a base held in Q4_0 (QLoRA).
int run_one(const std::string& name, int threads, int steps, const std::string& mode) {
  inference::setup_torch(threads);
  auto config = config_named(name);
  const bool qlora = mode.rfind("q4_0", 0) == 0;
  inference::LoadOptions load;
  load.weights = qlora ? inference::WeightType::kQ4_0 : inference::WeightType::kF32;
  auto model = inference::Model::random(config, 0, load);
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
  options.gradient_checkpointing = mode == "ckpt" || mode == "q4_0-ckpt";
  // "ckpt-half": checkpoint half the layers (memory and speed in between).
  if (mode == "ckpt-half") options.checkpoint_layers = config.num_layers / 2;
  options.frozen_base_bf16 = mode != "f32";
  auto trainer = training::Trainer::for_adapter(model, "bench", data, options);
  trainer.step();  // warm-up
  auto start = std::chrono::steady_clock::now();
  const double cpu_start = cpu_seconds();
  while (!trainer.done()) trainer.step();
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const double tokens = kBatch * kSeq * steps;
  std::printf("tokens_per_s=%.1f peak_rss_mb=%.0f cpu_tokens_per_s=%.1f\n", tokens / seconds, peak_rss_megabytes(),
              tokens / (cpu_seconds() - cpu_start));
  return 0;
}

struct Figures {
  double tokens_per_s = 0, rss_mb = 0, cpu_tokens_per_s = 0;
};

Figures run_child(const std::string& command) {
  Figures f;
  std::unique_ptr<FILE, int (*)(FILE*)> pipe(popen(command.c_str(), "r"), pclose);
  char line[256];
  while (pipe && std::fgets(line, sizeof(line), pipe.get())) {
    std::sscanf(line, "tokens_per_s=%lf peak_rss_mb=%lf cpu_tokens_per_s=%lf", &f.tokens_per_s, &f.rss_mb,
                &f.cpu_tokens_per_s);
  }
  return f;
}

double load_average() {
  double load = -1;
  if (FILE* f = std::fopen("/proc/loadavg", "r")) {
    if (std::fscanf(f, "%lf", &load) != 1) load = -1;
    std::fclose(f);
  }
  return load;
}

}  // namespace

int main(int argc, char** argv) {
  if ((argc == 5 || argc == 6) && std::string(argv[1]) == "--one") {
    return run_one(argv[2], std::atoi(argv[3]), std::atoi(argv[4]), argc == 6 ? argv[5] : "bf16");
  }
  int only_threads = 0;
  std::string only_model;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::string(argv[i]) == "--threads") only_threads = std::atoi(argv[i + 1]);
    if (std::string(argv[i]) == "--model") only_model = argv[i + 1];
  }
  std::string self = argv[0];
  std::string script = std::string(FEDGE_SOURCE_DIR) + "/bench/training/lora_step.py";
  std::printf("bench_train: LoRA r=8 on q,v, batch %d x seq %d, AdamW; fedge vs PyTorch-Python (same run)\n", kBatch,
              kSeq);
  std::printf("machine: %s; frozen base bf16 products: %s\n", machine_summary().c_str(),
              inference::bf16_matmul_fast() ? "yes (AVX512-BF16)" : "no (CPU lacks AVX512-BF16: f32)");
  std::printf("%-11s %-7s %11s %9s %11s %9s %12s %9s %7s %9s %9s %5s\n", "model", "threads", "fedge tok/s", "fedge MB",
              "f32 tok/s", "f32 MB", "python tok/s", "python MB", "ratio", "f32 ratio", "cpu ratio", "load");
  Figures python_135m[3];  // by thread count, for the checkpointing rows
  for (std::string name : {"tiny", "smollm135m"}) {
    if (!only_model.empty() && name != only_model) continue;
    int steps = name == "tiny" ? 20 : 4;
    for (int threads : {1, 2}) {
      if (threads > online_cores() || (only_threads > 0 && threads != only_threads)) continue;
      std::string args = name + " " + std::to_string(threads) + " " + std::to_string(steps);
      const double load = load_average();
      Figures ours = run_child(self + " --one " + args + " bf16");
      Figures f32 = run_child(self + " --one " + args + " f32");
      Figures python = run_child("OMP_NUM_THREADS=" + std::to_string(threads) + " /usr/bin/python3 " + script + " " +
                                 args + " 2>/dev/null");
      if (python.tokens_per_s <= 0)
        std::fprintf(stderr,
                     "bench_train: the PyTorch-Python reference (%s) gave no figure: is python3-torch installed? "
                     "(bash scripts/install-deps.sh --bench); its ratios below read 0.00x\n",
                     script.c_str());
      if (name == "smollm135m") python_135m[threads] = python;
      auto ratio = [&](const Figures& f) { return python.tokens_per_s > 0 ? f.tokens_per_s / python.tokens_per_s : 0.0; };
      const double cpu_ratio =
          python.cpu_tokens_per_s > 0 ? ours.cpu_tokens_per_s / python.cpu_tokens_per_s : 0.0;
      std::printf("%-11s %-7d %11.1f %9.0f %11.1f %9.0f %12.1f %9.0f %6.2fx %8.2fx %8.2fx %5.2f\n", name.c_str(), threads,
                  ours.tokens_per_s, ours.rss_mb, f32.tokens_per_s, f32.rss_mb, python.tokens_per_s, python.rss_mb,
                  ratio(ours), ratio(f32), cpu_ratio, load);
      std::fflush(stdout);
    }
  }
  if (only_model.empty() || only_model == "smollm135m") {
    for (int threads : {1, 2}) {
      if (threads > online_cores() || (only_threads > 0 && threads != only_threads)) continue;
      const double load = load_average();
      Figures ckpt = run_child(self + " --one smollm135m " + std::to_string(threads) + " 4 ckpt");
      const Figures& py = python_135m[threads];
      std::printf("%-11s %-7d %11.1f %9.0f   fedge with gradient checkpointing: %.2fx python (cpu %.2fx); load %.2f\n",
                  "smollm135m", threads, ckpt.tokens_per_s, ckpt.rss_mb,
                  py.tokens_per_s > 0 ? ckpt.tokens_per_s / py.tokens_per_s : 0.0,
                  py.cpu_tokens_per_s > 0 ? ckpt.cpu_tokens_per_s / py.cpu_tokens_per_s : 0.0, load);
      for (const char* mode : {"q4_0", "q4_0-ckpt"}) {
        const double q_load = load_average();
        Figures q = run_child(self + " --one smollm135m " + std::to_string(threads) + " 4 " + mode);
        std::printf("%-11s %-7d %11.1f %9.0f   QLoRA, base in Q4_0%s: %.2fx python f32 (cpu %.2fx); load %.2f\n",
                    "smollm135m", threads, q.tokens_per_s, q.rss_mb,
                    std::string(mode) == "q4_0" ? "" : ", gradient checkpointing",
                    py.tokens_per_s > 0 ? q.tokens_per_s / py.tokens_per_s : 0.0,
                    py.cpu_tokens_per_s > 0 ? q.cpu_tokens_per_s / py.cpu_tokens_per_s : 0.0, q_load);
        std::fflush(stdout);
      }
      const double half_load = load_average();
      Figures half = run_child(self + " --one smollm135m " + std::to_string(threads) + " 4 ckpt-half");
      std::printf("%-11s %-7d %11.1f %9.0f   fedge checkpointing half the layers: %.2fx python (cpu %.2fx); load %.2f\n",
                  "smollm135m", threads, half.tokens_per_s, half.rss_mb,
                  py.tokens_per_s > 0 ? half.tokens_per_s / py.tokens_per_s : 0.0,
                  py.cpu_tokens_per_s > 0 ? half.cpu_tokens_per_s / py.cpu_tokens_per_s : 0.0, half_load);
    }
  }
  std::printf("ratio: fedge (default options) / python, wall clock; f32 ratio: the same with frozen_base_bf16 off;\n"
              "cpu ratio: fedge / python in tokens per CPU second (less disturbed by other load at 1 thread;\n"
              "at 2 threads OpenMP spinning counts too); load: 1-minute load average before the row\n");
  std::printf("python: 0 tok/s means /usr/bin/python3 has no torch (scripts/install-deps.sh --bench installs it)\n");
  return 0;
}
