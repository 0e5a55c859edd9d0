// The local trainer: AdamW on a set of parameters (a LoRA adapter's A and B
// matrices, or every base weight for pretraining) with warm-up plus cosine or
// linear decay, gradient accumulation, gradient-norm clipping and an optional
// FedProx proximal term. Deterministic from a seed; checkpoints hold the
// parameters, the optimizer state and the step, so a resumed run continues the
// same loss curve.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "fedge/common/param_vector.h"
#include "fedge/inference/model.h"
#include "fedge/training/dataset.h"

namespace fedge::training {

struct TrainOptions {
  std::int64_t steps = 100;  // optimizer steps in all (the schedule's length)
  int batch_size = 4;        // sequences per micro-batch
  int grad_accum = 1;        // micro-batches per optimizer step
  double lr = 1e-3;
  double weight_decay = 0.0;  // decoupled (AdamW)
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  std::string schedule = "cosine";  // "cosine", "linear" or "constant" after warm-up
  std::int64_t warmup_steps = 0;
  double min_lr_ratio = 0.0;   // the decay ends at lr * min_lr_ratio
  double max_grad_norm = 1.0;  // 0: no clipping
  double fedprox_mu = 0.0;     // mu/2 * ||w - w_global||^2 when a proximal centre is set
  std::uint64_t seed = 0;
  int log_every = 10;          // steps between progress lines (0: none)
  // Recompute each layer in backward instead of keeping its activations:
  // much less memory, about a third more compute.
  bool gradient_checkpointing = false;
  // Checkpoint only the first N layers (0: as gradient_checkpointing says):
  // memory and extra compute between none and all, e.g. half the layers.
  int checkpoint_layers = 0;
  // LM head + cross-entropy fused and chunked over the rows with a target
  // (no [batch, steps, vocab] logits); false: the plain autograd graph.
  bool fused_head_loss = true;
  // LoRA training: the frozen base's matrix products (forward X W^T and
  // backward dY W) in bf16 with f32 accumulation, about twice as fast; taken
  // only where the CPU has AVX512-BF16 (f32 otherwise) and never for
  // full-parameter training. Loss and LoRA gradients stay close to the f32
  // path (docs/perf/training.md gives the tolerance; tests/training/test_frozen_bf16.cpp
  // checks it); false gives the exact f32 path.
  bool frozen_base_bf16 = true;
  void validate() const;       // Error(kInvalidInput) naming the option
};

struct StepStats {
  std::int64_t step = 0;      // 1-based index of the step just taken
  double loss = 0.0;          // mean token cross-entropy of the step's batches
  double lr = 0.0;
  double grad_norm = 0.0;     // before clipping
  std::int64_t tokens = 0;    // tokens processed (padding excluded)
  double seconds = 0.0;
};

// Learning rate at step `step` (0-based) under `options`.
double learning_rate(const TrainOptions& options, std::int64_t step);

// While any RetainFreedMemory lives (every Trainer holds one), glibc keeps
// freed memory instead of handing it back to the kernel. A training step
// frees and reallocates the same large activation buffers every step; with
// glibc's defaults the top of the heap is trimmed and regrown and buffers
// above the (dynamic) mmap threshold are unmapped, so each step pays page
// faults and page clearing again (~5-10% of a tiny-model step, ~2% at 135M).
// Costs up to 64 MB of extra RSS. When the last one goes, the defaults return
// and malloc_trim releases free memory. A program that makes many short-lived
// trainers (the simulator: one per node and round) holds one for its whole
// run, or every trainer's end trims the heap and the next one faults it back.
class RetainFreedMemory {
 public:
  RetainFreedMemory();
  ~RetainFreedMemory();
  RetainFreedMemory(const RetainFreedMemory&) = delete;
  RetainFreedMemory& operator=(const RetainFreedMemory&) = delete;
};

class Trainer {
 public:
  // Trains the adapter `adapter_name` of `model` (made active); the base stays
  // frozen.
  static Trainer for_adapter(inference::Model& model, const std::string& adapter_name, const TokenDataset& data,
                             TrainOptions options);
  // Trains every base weight (pretraining); the model must have no adapter active.
  static Trainer full(inference::Model& model, const TokenDataset& data, TrainOptions options);

  Trainer(Trainer&&) noexcept;
  Trainer& operator=(Trainer&&) noexcept;
  ~Trainer();

  // FedProx: penalise distance from `center` (same layout as the trained parameters).
  void set_proximal_center(const ParamVector& center);
  // SCAFFOLD (Karimireddy et al. 2020): from now on every step adds `offset`
  // (same layout as the trained parameters; a node passes c - c_i, the
  // server's minus its own control variate) to the raw gradient, before the
  // proximal term, clipping and the AdamW update, and keeps the sum of the
  // raw gradients for mean_raw_gradient(). Throws Error(kInvalidInput) for a
  // size other than the trained parameters'.
  void set_gradient_offset(const ParamVector& offset);
  // The mean, over the steps taken since set_gradient_offset, of each step's
  // raw gradient (of the step's mean token loss: no offset, no proximal term,
  // not clipped), flattened in the trained parameters' order (as
  // set_gradient_offset reads them). A SCAFFOLD node's new control variate.
  // Throws Error(kInvalidInput) without an offset set or before any step.
  std::vector<float> mean_raw_gradient() const;
  StepStats step();
  // Runs until options.steps; `on_step` sees each step (progress lines are logged too).
  std::vector<StepStats> run(const std::function<void(const StepStats&)>& on_step = {});
  std::int64_t current_step() const;
  bool done() const;

  // Writes DIR/params.safetensors (the trained parameters), DIR/optimizer.safetensors
  // and DIR/trainer_state.json; load_checkpoint restores all three.
  void save_checkpoint(const std::filesystem::path& dir) const;
  void load_checkpoint(const std::filesystem::path& dir);

 private:
  struct Impl;
  explicit Trainer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

struct EvalResult {
  double loss = 0.0;        // mean token cross-entropy over target tokens
  double perplexity = 0.0;  // exp(loss)
  std::int64_t tokens = 0;  // target tokens scored
  std::optional<double> accuracy;  // exact match of greedy completions, for instruction data
};

// Loss and perplexity of the model (with whatever adapter is active).
EvalResult evaluate_loss(inference::Model& model, const TokenDataset& data, int batch_size = 8);
// Share of instruction records whose greedy completion equals the reference
// (both trimmed of surrounding white space).
double exact_match_accuracy(inference::Model& model, const inference::Tokenizer& tokenizer,
                            const std::vector<Record>& records, int max_new_tokens = 16);

}  // namespace fedge::training
