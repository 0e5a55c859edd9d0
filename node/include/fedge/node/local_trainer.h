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
#include "fedge/node/round_client.h"
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
  // The batch order's seed. Unset: derived from the trainer's seed and the
  // round (a fresh order every round, the same on a rerun of the round). The
  // simulator sets it from its scenario seed and the virtual node.
  std::optional<std::uint64_t> seed;
};

// What a round's TrainCommand asks of the local step: its round and the plan's
// hyper-parameters, as the node runtime and the simulator both pass them.
LocalTrainRequest local_train_request(const TrainCommand& command);

struct LocalTrainResult {
  std::vector<float> update;  // local - global, in the request's layout order
  // SCAFFOLD (a gradient offset given): the mean raw gradient over the
  // round's steps, in the request's layout order (the node's new control variate).
  std::vector<float> mean_gradient;
  double train_loss = 0.0;    // mean over the round's steps
  std::uint64_t num_examples = 0;
  std::int64_t tokens = 0;
  double seconds = 0.0;
};

struct LocalTrainerOptions {
  double lora_alpha = 16.0;  // not in the wire layout; every node must agree
  training::TrainOptions train;  // schedule, clipping, weight decay, seed; steps/lr/batch come per round
  std::string adapter_slot = "federated";  // adapter name used inside the model
  // The most sequences trained in one pass (0: no limit). A round asking for
  // a larger batch is trained in micro-batches of at most this many, with
  // gradient accumulation: the same loss (token-weighted over all the
  // step's sequences) in less activation memory; the sequences are drawn per
  // micro-batch, so the step is not bit-identical to one large batch.
  int max_batch_size = 0;
};

// The LoRA configuration a federated layout implies: rank from the A shapes,
// targets from the tensor names. Throws Error(kInvalidInput) naming the tensor
// when the layout is not a PEFT LoRA layout for `model`.
inference::LoraConfig lora_config_from_layout(const ParamLayout& layout, double alpha);
// The adapter holding `params` (tensors matched by name, any order) for `model`.
// Throws Error(kInvalidInput) naming the tensor that is missing or mis-shaped.
inference::LoraAdapter adapter_from_params(const ParamVector& params, const inference::ModelConfig& model,
                                           double alpha);

// The local step of a round on borrowed data: puts `global` into the model's
// adapter slot options.adapter_slot, trains it on `data` as `request` asks
// (FedProx towards `proximal_center`, default `global`, when
// request.fedprox_mu > 0), and returns the update in global's layout.
// LocalTrainer::train runs exactly this; the simulator's virtual nodes call it
// on their own data. `should_stop` is polled between steps (Error(kRuntime)
// when it says stop). With `gradient_offset` (SCAFFOLD's c - c_i, in
// global's layout) every step's gradient is corrected by it
// (training::Trainer::set_gradient_offset) and the result carries the mean
// raw gradient.
LocalTrainResult train_local_round(inference::Model& model, const training::TokenDataset& data,
                                   const ParamVector& global, const LocalTrainRequest& request,
                                   const LocalTrainerOptions& options, const std::function<bool()>& should_stop = {},
                                   const ParamVector* proximal_center = nullptr,
                                   const ParamVector* gradient_offset = nullptr);

// Personalization on top of the federation (docs/FEDERATION.md,
// "Personalization"): after each new global the node trains an adapter of its
// own, which it serves in the `local` slot; the global and what the node sends
// in rounds do not change.
//   finetune: `steps` steps from the global on the node's own data.
//   ditto (Li et al. 2021): the node's personal adapter v (the global the
//     first time) takes `steps` steps with the pull
//     ditto_lambda/2 * ||v - w_global||^2 towards the new global.
//   shared-a (FedSA-LoRA; shared_a.h): no training of its own; the rounds
//     federate only A, the node keeps the B it trains in them, and its
//     adapter is the latest global A with that B. What it sends changes (A
//     only), so the coordinator must federate A only too.
struct PersonalizationOptions {
  std::string kind = "none";  // "none", "finetune", "ditto" or "shared-a"
  std::uint32_t steps = 10;   // finetune and ditto: the steps per new global
  double learning_rate = 1e-3;
  std::uint32_t batch_size = 4;
  double ditto_lambda = 0.1;
  bool enabled() const { return kind != "none"; }
  // Whether the node trains a personal adapter after each new global.
  bool trains_personal() const { return kind == "finetune" || kind == "ditto"; }
  bool shares_a_only() const { return kind == "shared-a"; }
};

class LocalTrainer {
 public:
  // Throws Error(kInvalidInput) for an empty training set.
  LocalTrainer(inference::Model& model, training::TokenDataset train, std::optional<training::TokenDataset> eval,
               LocalTrainerOptions options = {});

  std::uint64_t num_examples() const { return train_.size(); }
  bool has_eval() const { return eval_.has_value(); }

  // Trains from `global` (laid out as `layout`). `should_stop` is polled between
  // steps; when it returns true the round is abandoned (Error(kRuntime)).
  // `gradient_offset`: SCAFFOLD's c - c_i (train_local_round).
  LocalTrainResult train(const ParamVector& global, const LocalTrainRequest& request,
                         const std::function<bool()>& should_stop = {}, const ParamVector* gradient_offset = nullptr);
  // The personal adapter for global `version` (its seed derives from it):
  // finetune starts from `global`; ditto from `previous` (the node's personal
  // adapter so far, in any layout order; null: the global) pulled towards
  // `global`. Returns it in global's layout, and its mean training loss.
  ParamVector personalize(const ParamVector& global, const ParamVector* previous, std::uint64_t version,
                          const PersonalizationOptions& options, double& train_loss,
                          const std::function<bool()>& should_stop = {});
  // Held-out loss of the model with `global` as its adapter. Requires has_eval().
  training::EvalResult evaluate(const ParamVector& global);

 private:
  inference::Model& model_;
  training::TokenDataset train_;
  std::optional<training::TokenDataset> eval_;
  LocalTrainerOptions options_;
};

}  // namespace fedge::node
