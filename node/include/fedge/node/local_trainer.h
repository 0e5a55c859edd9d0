// The node's local step of a federated round: load the global adapter, train it
// on this site's private data for the round's steps (optionally with FedProx),
// and return the update (local minus global) in the federation's layout. Also
// evaluates the global adapter on the site's held-out split.
//
// The model is borrowed, so many LocalTrainers (the simulator's virtual nodes)
// can share one read-only base: each round writes the global parameters into
// the model's adapter slot, trains, and reads the result back out. Only one
// LocalTrainer may use a given model at a time.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "fedge/common/param_vector.h"
#include "fedge/inference/lora.h"
#include "fedge/inference/model.h"
#include "fedge/training/dataset.h"
#include "fedge/training/trainer.h"

namespace fedge::node {

// What the coordinator's round plan asks for.
struct LocalTrainRequest {
  std::uint64_t round = 0;
  std::uint32_t local_steps = 10;
  double learning_rate = 1e-3;
  std::uint32_t batch_size = 4;
  double fedprox_mu = 0.0;
};

struct LocalTrainResult {
  std::vector<float> update;  // local - global, in the request's layout order
  double train_loss = 0.0;    // mean over the round's steps
  std::uint64_t num_examples = 0;
  std::int64_t tokens = 0;
  double seconds = 0.0;
};

struct LocalTrainerOptions {
  double lora_alpha = 16.0;  // not in the wire layout; every node must agree
  training::TrainOptions train;  // schedule, clipping, weight decay, seed; steps/lr/batch come per round
  std::string adapter_slot = "federated";  // adapter name used inside the model
};

// The LoRA configuration a federated layout implies: rank from the A shapes,
// targets from the tensor names. Throws Error(kInvalidInput) naming the tensor
// when the layout is not a PEFT LoRA layout for `model`.
inference::LoraConfig lora_config_from_layout(const ParamLayout& layout, double alpha);
// The adapter holding `params` (tensors matched by name, any order) for `model`.
// Throws Error(kInvalidInput) naming the tensor that is missing or mis-shaped.
inference::LoraAdapter adapter_from_params(const ParamVector& params, const inference::ModelConfig& model,
                                           double alpha);

class LocalTrainer {
 public:
  // Throws Error(kInvalidInput) for an empty training set.
  LocalTrainer(inference::Model& model, training::TokenDataset train, std::optional<training::TokenDataset> eval,
               LocalTrainerOptions options = {});

  std::uint64_t num_examples() const { return train_.size(); }
  bool has_eval() const { return eval_.has_value(); }

  // Trains from `global` (laid out as `layout`). `should_stop` is polled between
  // steps; when it returns true the round is abandoned (Error(kRuntime)).
  LocalTrainResult train(const ParamVector& global, const LocalTrainRequest& request,
                         const std::function<bool()>& should_stop = {});
  // Held-out loss of the model with `global` as its adapter. Requires has_eval().
  training::EvalResult evaluate(const ParamVector& global);

 private:
  // Puts `global` into the model's adapter slot and makes it active; returns
  // the adapter's own layout (the order the trainer uses).
  ParamLayout install(const ParamVector& global);

  inference::Model& model_;
  training::TokenDataset train_;
  std::optional<training::TokenDataset> eval_;
  LocalTrainerOptions options_;
};

}  // namespace fedge::node
